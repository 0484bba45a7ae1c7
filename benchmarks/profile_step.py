"""Where the train step's time goes: per-layer, forward/backward CPU milliseconds.

Profiles the compiled train step with `jax.profiler`, maps every executed HLO
instruction back to the layer that produced it (through the `op_name` metadata of the
optimized HLO of the *same* executable) and prints a table. Each op counts from its start
to its end, summed over ops: ops that run side by side (the two towers on a 2-core
machine) both count, so the total can exceed the wall-clock step time printed alongside.

    python benchmarks/profile_step.py --config=paper --batch=32
    --xla_cpu_enable_xprof_traceme=true is added to XLA_FLAGS (after the package's
    defaults), so that each thunk shows up in the trace.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import alexnet_jax  # noqa: E402,F401  (sets the package's default XLA_FLAGS first)

if "--xla_cpu_enable_xprof_traceme" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_cpu_enable_xprof_traceme=true").strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import train_step as tsb  # noqa: E402

_LAYER = re.compile(r"\b(conv\d|fc\d|lrn|max_pool|_dropout|top_k|take_along_axis|_take)\b")


def categorize(op_name: str) -> tuple[str, str]:
  """(layer, phase) for one instruction's op_name metadata."""
  if op_name.startswith("(no metadata)"):
    return op_name, "-"
  if "transpose(" in op_name:
    phase = "bwd"
  elif "jvp(" in op_name:
    phase = "fwd"
  else:
    phase = "update"
  hits = _LAYER.findall(op_name)
  layer = hits[-1] if hits else ("optimizer" if phase == "update" else "other")
  if layer in ("top_k", "take_along_axis", "_take"):
    layer = "loss/metrics"
  if layer == "_dropout":
    layer = "dropout"
  if "relu" in op_name and not hits:
    layer = "relu"
  return layer, phase


def op_names(hlo_text: str, kernel_layers=None) -> dict[str, str]:
  """Instruction name -> op_name metadata; fusions without their own take their body's."""
  comps: dict[str, list[str]] = {}
  own: dict[str, str] = {}
  calls: dict[str, str] = {}
  shapes: dict[str, tuple] = {}
  bodies: dict[str, str] = collections.defaultdict(str)
  current = None
  for line in hlo_text.splitlines():
    head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) ", line)
    if head and line.rstrip().endswith("{"):
      current = head.group(1)
      comps[current] = []
      continue
    m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = ", line)
    if not m:
      continue
    if current is not None:
      bodies[current] += line + "\n"
    sm = re.match(r"\s*(?:ROOT )?%?[\w.\-]+ = \w+\[([\d,]*)\]", line)
    if sm:
      shapes[m.group(1)] = tuple(int(d) for d in sm.group(1).split(",") if d)
    om = re.search(r'op_name="([^"]*)"', line)
    own[m.group(1)] = om.group(1) if om else ""
    if om and current is not None:
      comps[current].append(om.group(1))
    cm = re.search(r"calls=%?([\w.\-]+)", line)
    if cm:
      calls[m.group(1)] = cm.group(1)
  names = {}
  for inst, op in own.items():
    if not op and inst in calls:
      body = comps.get(calls[inst], [])
      heavy = [o for o in body if "conv_general_dilated" in o or "dot_general" in o]
      op = (heavy or body or [""])[-1]
    if not op:
      # XLA drops the metadata of the weight-gradient convolutions it builds; name them
      # by their output, which is the kernel's shape in another order.
      shape = shapes.get(inst)
      body = bodies.get(calls.get(inst), "")
      if shape and "convolution(" in body and kernel_layers:
        layer = kernel_layers.get(tuple(sorted(shape)))
        if layer:
          op = f"transpose(jvp(AlexNet))/{layer}/wgrad"
    names[inst] = op or "(no metadata) " + re.sub(r"\.\d+$", "", inst)
  return names


def profile(compiled, args, steps: int):
  from jax._src.lib import _profile_data
  d = tempfile.mkdtemp(prefix="alexnet_prof_")
  out = compiled(*args)
  jax.block_until_ready(out)
  args = (out[0],) + tuple(args[1:])
  jax.profiler.start_trace(d)
  t0 = time.perf_counter()
  for _ in range(steps):
    out = compiled(*args)
    jax.block_until_ready(out)
    args = (out[0],) + tuple(args[1:])
  wall = (time.perf_counter() - t0) / steps
  jax.profiler.stop_trace()
  f = glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True)[0]
  data = _profile_data.ProfileData.from_file(f)
  per_op = collections.Counter()
  starts, ends = {}, {}
  for plane in data.planes:
    for line in plane.lines:
      if "XLAEigen" not in line.name and "XLAPjRt" not in line.name:
        continue
      for ev in line.events:
        if ev.name.startswith(("ThunkExecutor", "ThreadpoolListener", "SlinkyThreadPool")):
          continue
        if ev.name.startswith("end: "):
          ends.setdefault(ev.name[5:], []).append(ev.start_ns + ev.duration_ns)
        else:
          starts.setdefault(ev.name, []).append((ev.start_ns, ev.duration_ns))
  for name, evs in starts.items():
    done = sorted(ends.get(name, []))
    for start, duration in sorted(evs):
      # Ops that run asynchronously (Eigen convolutions) log a launch event and a
      # separate "end: <op>" event on the worker that finished them; time the span.
      later = [e for e in done if e >= start]
      if later and later[0] > start + duration:
        duration = later[0] - start
        done.remove(later[0])
      per_op[name] += duration / 1e6 / steps
  return per_op, wall


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="paper", choices=("paper", "small"))
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--top", type=int, default=25, help="also list the N most costly ops")
  a = p.parse_args(argv)
  step, state, batch, lr = tsb.build_jax_step(a.config, a.batch)
  compiled = step.lower(state, batch, lr).compile()
  kernels = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(state.params):
    if path[-1].key == "kernel" and leaf.ndim >= 4:
      kernels[tuple(sorted(leaf.shape[1:]))] = path[0].key
  names = op_names(compiled.as_text(), kernels)
  per_op, wall = profile(compiled, (state, batch, lr), a.steps)
  table = collections.defaultdict(float)
  for op, ms in per_op.items():
    table[categorize(names.get(op, ""))] += ms
  total = sum(table.values())
  print(f"{a.config} config, batch {a.batch}: wall {wall * 1e3:.0f} ms/step, "
        f"summed op time {total:.0f} ms/step ({jax.device_count()} device, "
        f"{os.cpu_count()} cores)")
  print(f"{'layer':22s} {'fwd':>8s} {'bwd':>8s} {'update':>8s} {'other':>8s}")
  layers = sorted({k[0] for k in table}, key=lambda l: -sum(v for k, v in table.items() if k[0] == l))
  for layer in layers:
    row = [table.get((layer, ph), 0.0) for ph in ("fwd", "bwd", "update", "-")]
    print(f"{layer:22s} " + " ".join(f"{v:8.1f}" for v in row))
  print(f"\ntop {a.top} ops (ms/step):")
  for op, ms in per_op.most_common(a.top):
    print(f"  {ms:8.1f}  {op:32s} {names.get(op, '?')[:90]}")


if __name__ == "__main__":
  main()
