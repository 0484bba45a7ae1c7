r"""Where the train step's milliseconds go, and what a change did to them. Three views:

    python benchmarks/step_breakdown.py layers --batch=32 --repeats=5
    python benchmarks/step_breakdown.py profile --config=paper --batch=32
    python benchmarks/step_breakdown.py revisions --base=bdac8f3 --batch=32 --repeats=7

layers     Each layer of the paper net (both towers, at the step's shapes) jitted alone,
           forward and forward+backward, in two versions timed alternately: "before", the
           plain formulation (per-tower kernel slices, autodiff LRN, reduce_window pooling)
           with XLA's default options; "after", the package's layers with
           `alexnet_jax.CPU_COMPILER_OPTIONS`. Backward = (fwd+bwd) - fwd. The rows add up to
           less than a step (no fusion across layers, no dropout/loss); the optimizer's update
           is its own row.
profile    A `jax.profiler` trace of the compiled step; every executed HLO instruction is
           mapped back to its layer through the op_name metadata of the same executable's
           optimized HLO. Ops running side by side both count, so the sum can exceed the
           wall time printed alongside; asynchronous (Eigen) convs count from launch to end,
           so read milliseconds off `layers` and which ops run off `profile`. On a GPU the
           kernels of the device's planes are summed per layer the same way.
revisions  The whole step of `alexnet_jax/` at git revision `--base` (exported as package
           `alexnet_jax_base`) against the working tree's, repeats alternating in this one
           process. The base gets XLA's default options, the tree the package's
           (`--tree_options='{}'` compares code alone).

XLA_FLAGS are read once per process, so `layers` and `revisions` switch off the package's
default flags and compile with the equivalent per-executable options instead, and `profile`
adds --xla_cpu_enable_xprof_traceme=true so that each CPU thunk shows up in the trace.
"""

from __future__ import annotations

import argparse
import collections
import glob
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
_MODE = sys.argv[1] if __name__ == "__main__" and len(sys.argv) > 1 else None
if _MODE in ("layers", "revisions"):
  os.environ["ALEXNET_JAX_DEFAULT_XLA_FLAGS"] = "0"  # Options are set per executable.
import alexnet_jax  # noqa: E402  (sets the package's default XLA_FLAGS unless switched off)

if _MODE == "profile" and "--xla_cpu_enable_xprof_traceme" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_cpu_enable_xprof_traceme=true").strip()

from benchmarks import timing  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

# ---------------------------------------------------------------------------------------------
# layers


def _layers(b: int):
  """name -> (before fn, after fn, args, differentiated arg indices)."""
  from alexnet_jax.models import alexnet as A
  from alexnet_jax.models import lrn as L
  from alexnet_jax.models import pooling as P

  def conv_plain(xs, kernel, bias, stride, padding):
    return [jax.lax.conv_general_dilated(
        x, kernel[i], (stride, stride), [(padding, padding)] * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias[i] for i, x in enumerate(xs)]

  def dense_plain(x, kernel, bias):
    return [x @ kernel[i] + bias[i] for i in range(kernel.shape[0])]

  r = np.random.default_rng(0)

  def arr(*shape, scale=1.0, relu=False):
    a = r.standard_normal(shape).astype(np.float32) * scale
    return jnp.asarray(np.maximum(a, 0) if relu else a)

  out = {}
  image = arr(b, 227, 227, 3)
  for name, (hw, cin, cout, k, s, p, shared) in {
      "conv1": (227, 3, 48, 11, 4, 0, True), "conv2": (27, 48, 128, 5, 1, 2, False),
      "conv3": (13, 256, 192, 3, 1, 1, True), "conv4": (13, 192, 192, 3, 1, 1, False),
      "conv5": (13, 192, 128, 3, 1, 1, False)}.items():
    x0 = image if name == "conv1" else arr(b, hw, hw, cin, relu=True)
    xs = [x0, x0] if shared else [x0, arr(b, hw, hw, cin, relu=True)]
    kern, bias = arr(2, k, k, cin, cout, scale=0.01), arr(2, cout)
    diff = (1, 2) if name == "conv1" else (0, 1, 2)  # Images need no gradient.
    out[name] = (lambda xs, kk, bb, s=s, p=p: conv_plain(xs, kk, bb, s, p),
                 lambda xs, kk, bb, s=s, p=p: A.tower_convs(xs, kk, bb, s, p),
                 (xs, kern, bias), diff)
  for name, shape in {"lrn1": (b, 55, 55, 48), "lrn2": (b, 27, 27, 128)}.items():
    xs = [arr(*shape, scale=30, relu=True) for _ in range(2)]
    out[name] = (lambda xs: [L.local_response_norm_reference(x) for x in xs],
                 lambda xs: [L.local_response_norm(x) for x in xs], (xs,), (0,))
  for name, shape in {"pool1": (b, 55, 55, 48), "pool2": (b, 27, 27, 128),
                      "pool5": (b, 13, 13, 128)}.items():
    xs = [arr(*shape) for _ in range(2)]
    out[name] = (lambda xs: [P.max_pool_reference(x, 3, 2) for x in xs],
                 lambda xs: [P.max_pool(x, 3, 2) for x in xs], (xs,), (0,))
  for name, (d, f) in {"fc6": (9216, 2048), "fc7": (4096, 2048)}.items():
    out[name] = (dense_plain, A.tower_dense,
                 (arr(b, d, relu=True), arr(2, d, f, scale=0.01), arr(2, f)), (0, 1, 2))
  return out


def _fwd_and_fwd_bwd(f, args, diff, options):
  def fwd(*a):
    return f(*a)

  def fwd_bwd(*a):
    ys, vjp = jax.vjp(lambda *d: f(*[d[diff.index(i)] if i in diff else a[i]
                                     for i in range(len(a))]), *[a[i] for i in diff])
    return ys, vjp(jax.tree.map(jnp.ones_like, ys))

  return [jax.jit(g).lower(*args).compile(options) for g in (fwd, fwd_bwd)]


def _call(fn, args):
  return lambda steps: _timed_calls(fn, args, steps)


def _timed_calls(fn, args, n):
  t = time.perf_counter()
  for _ in range(n):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t) / n


def run_layers(a) -> None:
  after_opts = alexnet_jax.CPU_COMPILER_OPTIONS
  rows = []
  for name, (before, after, args, diff) in _layers(a.batch).items():
    cb = _fwd_and_fwd_bwd(before, args, diff, {})
    ca = _fwd_and_fwd_bwd(after, args, diff, after_opts)
    runs = {"bf": _call(cb[0], args), "bfb": _call(cb[1], args),
            "af": _call(ca[0], args), "afb": _call(ca[1], args)}
    for run in runs.values():
      run(1)  # Warm-up.
    t = timing.interleave(runs, a.repeats, 1)
    m = {k: statistics.median(v) * 1e3 for k, v in t.items()}
    rows.append((name, m["bf"], m["bfb"] - m["bf"], m["af"], m["afb"] - m["af"]))
    print(f"{name:6s} before fwd {rows[-1][1]:7.1f} bwd {rows[-1][2]:7.1f} | "
          f"after fwd {rows[-1][3]:7.1f} bwd {rows[-1][4]:7.1f}", flush=True)

  # The optimizer: paper SGD over the full parameter set (61M floats).
  from alexnet_jax import optim
  from alexnet_jax.models import alexnet as A
  c = timing.model_config("paper")
  model = A.AlexNet(A.ModelSpec.from_config(c.model))
  params = model.init({"params": jax.random.key(0)}, jnp.zeros((1, 227, 227, 3)),
                      train=False)["params"]
  tx = optim.make_optimizer(c.optim, params)
  state, grads = tx.init(params), jax.tree.map(jnp.ones_like, params)

  def update(params, state, grads):
    u, state = tx.update(grads, state, params)
    return jax.tree.map(jnp.add, params, u), state

  up = jax.jit(update, donate_argnums=(0, 1)).lower(params, state, grads).compile(after_opts)
  ts = []
  for _ in range(a.repeats):
    t0 = time.perf_counter()
    params, state = up(params, state, grads)
    jax.block_until_ready(params)
    ts.append(time.perf_counter() - t0)
  opt_ms = statistics.median(ts) * 1e3

  print(f"\nbatch {a.batch}, {os.cpu_count()} cores, median of {a.repeats}, ms (both towers):\n")
  print("| layer | before fwd | before bwd | after fwd | after bwd |")
  print("|---|---:|---:|---:|---:|")
  for r in rows:
    print(f"| {r[0]} | {r[1]:.0f} | {r[2]:.0f} | {r[3]:.0f} | {r[4]:.0f} |")
  tb = sum(r[1] + r[2] for r in rows)
  ta = sum(r[3] + r[4] for r in rows)
  print(f"| paper SGD update | {opt_ms:.0f} | | {opt_ms:.0f} | |")
  print(f"| **sum** | {tb + opt_ms:.0f} | | {ta + opt_ms:.0f} | |")


# ---------------------------------------------------------------------------------------------
# profile

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


def _trace_op_ms(path: str, steps: int) -> collections.Counter:
  """Milliseconds per step of each op in an xplane trace (CPU thunks or GPU kernels)."""
  from jax._src.lib import _profile_data
  data = _profile_data.ProfileData.from_file(path)
  per_op = collections.Counter()
  starts, ends = {}, {}
  for plane in data.planes:
    gpu = plane.name.startswith("/device:GPU")
    lines = list(plane.lines)
    if gpu:  # Kernels run on the stream lines; other lines summarise them (modules, steps).
      lines = [l for l in lines if l.name.startswith("Stream")] or lines
    for line in lines:
      if not gpu and "XLAEigen" not in line.name and "XLAPjRt" not in line.name:
        continue
      for ev in line.events:
        if ev.name.startswith(("ThunkExecutor", "ThreadpoolListener", "SlinkyThreadPool")):
          continue
        name = ev.name
        if gpu:  # Kernels carry the HLO instruction that launched them.
          stats = dict(ev.stats)
          name = str(stats.get("hlo_op", name))
        if ev.name.startswith("end: "):
          ends.setdefault(name[5:], []).append(ev.start_ns + ev.duration_ns)
        else:
          starts.setdefault(name, []).append((ev.start_ns, ev.duration_ns))
  for name, evs in starts.items():
    done = sorted(ends.get(name, []))
    for start, duration in sorted(evs):
      # Asynchronous ops (Eigen convolutions) log a launch event and a separate
      # "end: <op>" event on the worker that finished them; time the span.
      later = [e for e in done if e >= start]
      if later and later[0] > start + duration:
        duration = later[0] - start
        done.remove(later[0])
      per_op[name] += duration / 1e6 / steps
  return per_op


def run_profile(a) -> dict:
  step, state, batch, lr = timing.build_jax_step(a.config, a.batch, a.dtype)
  kernels = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(state.params):
    if path[-1].key == "kernel" and leaf.ndim >= 4:
      kernels[tuple(sorted(leaf.shape[1:]))] = path[0].key
  names = op_names(step.as_text(), kernels)
  loop = timing.StepLoop(step, state, batch, lr)
  loop(1)
  trace_dir = a.trace_dir or tempfile.mkdtemp(prefix="alexnet_prof_")
  jax.profiler.start_trace(trace_dir)
  wall = loop(a.steps)
  jax.profiler.stop_trace()
  trace = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)[0]
  per_op = _trace_op_ms(trace, a.steps)
  table = collections.defaultdict(float)
  for op, ms in per_op.items():
    table[categorize(names.get(op, f"(no metadata) {op[:40]}"))] += ms
  total = sum(table.values())
  print(f"{a.config} config, batch {a.batch}, {a.dtype}: wall {wall * 1e3:.1f} ms/step, summed "
        f"op time {total:.1f} ms/step ({jax.devices()[0].device_kind}, {os.cpu_count()} cores)")
  print(f"{'layer':22s} {'fwd':>8s} {'bwd':>8s} {'update':>8s} {'other':>8s}")
  layers = sorted({k[0] for k in table},
                  key=lambda l: -sum(v for k, v in table.items() if k[0] == l))
  by_layer = {}
  for layer in layers:
    row = [table.get((layer, ph), 0.0) for ph in ("fwd", "bwd", "update", "-")]
    by_layer[layer] = dict(zip(("fwd", "bwd", "update", "other"), row))
    print(f"{layer:22s} " + " ".join(f"{v:8.1f}" for v in row))
  print(f"\ntop {a.top} ops (ms/step):")
  for op, ms in per_op.most_common(a.top):
    print(f"  {ms:8.1f}  {op:32s} {names.get(op, '?')[:90]}")
  return {"what": "profile", "config": a.config, "batch": a.batch, "dtype": a.dtype,
          "wall_ms": wall * 1e3, "summed_op_ms": total, "layers_ms": by_layer,
          "top_ops_ms": [[op, ms, names.get(op, "?")[:120]] for op, ms in
                         per_op.most_common(a.top)], "trace_dir": trace_dir}


# ---------------------------------------------------------------------------------------------
# revisions


def export_revision(rev: str, name: str) -> str:
  """Writes `alexnet_jax` at `rev` into a temp dir as package `name`; returns the dir."""
  out = tempfile.mkdtemp(prefix="alexnet_rev_")
  tar = subprocess.run(["git", "-C", ROOT, "archive", rev, "alexnet_jax"], check=True,
                       capture_output=True).stdout
  with tarfile.open(fileobj=io.BytesIO(tar)) as t:
    for m in t.getmembers():
      if not m.isfile() or not m.name.endswith(".py"):
        continue
      src = re.sub(r"\balexnet_jax\b", name, t.extractfile(m).read().decode())
      path = os.path.join(out, name, m.name[len("alexnet_jax/"):])
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "w") as f:
        f.write(src)
  return out


def run_revisions(a) -> None:
  tree_options = (alexnet_jax.CPU_COMPILER_OPTIONS if a.tree_options is None
                  else json.loads(a.tree_options))
  sys.path.insert(0, export_revision(a.base, "alexnet_jax_base"))
  runs = {}
  for label, pkg, opts in ((a.base, "alexnet_jax_base", {}),
                           ("working tree", "alexnet_jax", tree_options)):
    runs[label] = timing.StepLoop(*timing.build_jax_step(a.config, a.batch, pkg=pkg,
                                                         compiler_options=opts))
    runs[label](1)
  times = timing.interleave(runs, a.repeats, a.steps, pause=0.2)
  print(f"{a.config} config, batch {a.batch}, {os.cpu_count()} cores; ms/step, median of "
        f"{a.repeats} repeats of {a.steps} steps, interleaved")
  med = {k: statistics.median(v) for k, v in times.items()}
  for k, v in times.items():
    print(f"  {k:14s} {med[k] * 1e3:8.1f} ms  {a.batch / med[k]:6.1f} img/s   "
          f"{[round(t * 1e3) for t in v]}")
  paired = timing.paired_ratio(times[a.base], times["working tree"])
  print(f"  speed-up: {med[a.base] / med['working tree']:.2f}x (median of paired ratios "
        f"{paired:.2f}x); working-tree compiler options: {tree_options}")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="mode", required=True)
  lay = sub.add_parser("layers", help="per-layer fwd/bwd ms, plain vs the package's layers")
  lay.add_argument("--batch", type=int, default=32)
  lay.add_argument("--repeats", type=int, default=5)
  pro = sub.add_parser("profile", help="per-layer op time from a jax.profiler trace")
  pro.add_argument("--config", default="paper", choices=("paper", "small", "tiny"))
  pro.add_argument("--batch", type=int, default=32)
  pro.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  pro.add_argument("--steps", type=int, default=3)
  pro.add_argument("--top", type=int, default=25, help="also list the N most costly ops")
  pro.add_argument("--trace_dir", default=None, help="keep the trace here (TensorBoard)")
  pro.add_argument("--jsonl", default=None, help="append the table as one JSON record")
  rev = sub.add_parser("revisions", help="whole step, git revision --base vs the working tree")
  rev.add_argument("--base", required=True, help="git revision to compare against")
  rev.add_argument("--config", default="paper", choices=("paper", "small", "tiny"))
  rev.add_argument("--batch", type=int, default=32)
  rev.add_argument("--steps", type=int, default=2)
  rev.add_argument("--repeats", type=int, default=7)
  rev.add_argument("--tree_options", default=None,
                   help="JSON compiler options for the working tree (default: the package's)")
  a = p.parse_args(argv)
  if a.mode == "layers":
    run_layers(a)
  elif a.mode == "profile":
    timing.JsonLines(a.jsonl, device=jax.devices()[0].device_kind).emit(run_profile(a))
  else:
    run_revisions(a)


if __name__ == "__main__":
  main()
