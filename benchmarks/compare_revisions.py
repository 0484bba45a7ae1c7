r"""Before/after train-step timing of two git revisions of the package, in one process.

On a shared machine, timings taken minutes apart are not comparable; this exports
`alexnet_jax/` of `--base` (renamed `alexnet_jax_base`) next to the working tree's and
alternates their repeats, so both see the same load.

    python benchmarks/compare_revisions.py --base=bdac8f3 --batch=32 --repeats=7

XLA_FLAGS are per process, so the package's default flags (alexnet_jax/__init__.py) are
switched off here and the working tree's step is compiled with the equivalent
per-executable options instead; the base revision gets XLA's defaults (pass
--tree-options='{}' to compare code alone).
"""

from __future__ import annotations

import argparse
import importlib
import json
import io
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
os.environ["ALEXNET_JAX_DEFAULT_XLA_FLAGS"] = "0"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def export(rev: str, name: str) -> str:
  """Writes `alexnet_jax` at `rev` into a temp dir as package `name`; returns the dir."""
  out = tempfile.mkdtemp(prefix="alexnet_rev_")
  tar = subprocess.run(["git", "-C", ROOT, "archive", rev, "alexnet_jax"], check=True,
                       capture_output=True).stdout
  with tarfile.open(fileobj=io.BytesIO(tar)) as t:
    for m in t.getmembers():
      if not m.isfile() or not m.name.endswith(".py"):
        continue
      src = t.extractfile(m).read().decode()
      src = re.sub(r"\balexnet_jax\b", name, src)
      path = os.path.join(out, name, m.name[len("alexnet_jax/"):])
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "w") as f:
        f.write(src)
  return out


def build(pkg: str, config: str, batch: int, options: dict):
  C = importlib.import_module(f"{pkg}.config")
  S = importlib.import_module(f"{pkg}.step")
  O = importlib.import_module(f"{pkg}.optim")
  M = importlib.import_module(f"{pkg}.models")
  c = C.base_config()
  if config == "small":
    C.small_model(c)
  model = M.AlexNet(M.ModelSpec.from_config(c.model))
  s = c.model.input_size
  shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)},
                                             jnp.zeros((1, s, s, 3)), train=False))["params"]
  tx = O.make_optimizer(c.optim, shapes)
  state = jax.jit(lambda r: S.init_state(model, tx, r, (s, s, 3)))(jax.random.key(0))
  step = jax.jit(S.make_train_step(model, tx), donate_argnums=(0,))
  rng = np.random.default_rng(0)
  batch_ = {"image": jnp.asarray(rng.standard_normal((batch, s, s, 3), np.float32)),
            "label": jnp.asarray(rng.integers(0, c.model.num_classes, batch, np.int32))}
  lr = jnp.float32(c.optim.lr)
  step = step.lower(state, batch_, lr).compile(options)
  box = {"state": state}

  def run(steps):
    t = time.perf_counter()
    st = box["state"]
    for _ in range(steps):
      st, m = step(st, batch_, lr)
    jax.block_until_ready((st, m))
    box["state"] = st
    return (time.perf_counter() - t) / steps

  run(1)
  return run


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--base", required=True, help="git revision to compare against")
  p.add_argument("--config", default="paper", choices=("paper", "small"))
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--steps", type=int, default=2)
  p.add_argument("--repeats", type=int, default=7)
  p.add_argument("--tree-options", default=None,
                 help="JSON compiler options for the working tree (default: the package's)")
  a = p.parse_args(argv)
  import alexnet_jax
  tree_options = (alexnet_jax.CPU_COMPILER_OPTIONS if a.tree_options is None
                  else json.loads(a.tree_options))
  sys.path.insert(0, export(a.base, "alexnet_jax_base"))
  runs = {a.base: build("alexnet_jax_base", a.config, a.batch, {}),
          "working tree": build("alexnet_jax", a.config, a.batch, tree_options)}
  times = {k: [] for k in runs}
  for _ in range(a.repeats):
    for k, run in runs.items():
      times[k].append(run(a.steps))
      time.sleep(0.2)
  print(f"{a.config} config, batch {a.batch}, {os.cpu_count()} cores; ms/step, median of "
        f"{a.repeats} repeats of {a.steps} steps, interleaved")
  med = {k: statistics.median(v) for k, v in times.items()}
  for k, v in times.items():
    print(f"  {k:14s} {med[k] * 1e3:8.1f} ms  {a.batch / med[k]:6.1f} img/s   "
          f"{[round(t * 1e3) for t in v]}")
  paired = statistics.median(b / t for b, t in zip(times[a.base], times["working tree"]))
  print(f"  speed-up: {med[a.base] / med['working tree']:.2f}x (median of paired ratios "
        f"{paired:.2f}x); working-tree compiler options: {tree_options}")


if __name__ == "__main__":
  main()
