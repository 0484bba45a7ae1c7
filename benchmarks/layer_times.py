r"""Where the train step's milliseconds go, layer by layer, before and after the fast paths.

Each layer of the paper net (both towers, at the step's shapes) is jitted alone, forward
and forward+backward, in two versions timed alternately in this one process:
  before: the plain formulation (per-tower kernel slices, autodiff LRN, reduce_window
          pooling) compiled with XLA's default options,
  after:  the package's layers compiled with `alexnet_jax.CPU_COMPILER_OPTIONS`.
Backward = (forward+backward) - forward. The rows add up to less than a whole step
(no fusion across layers, no dropout/loss/optimizer); the optimizer's update is its
own row.

    python benchmarks/layer_times.py --batch=32 --repeats=5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ["ALEXNET_JAX_DEFAULT_XLA_FLAGS"] = "0"  # Options are set per executable below.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import alexnet_jax  # noqa: E402
from alexnet_jax import config as config_lib  # noqa: E402
from alexnet_jax import optim  # noqa: E402
from alexnet_jax.models import alexnet as A  # noqa: E402
from alexnet_jax.models import lrn as L  # noqa: E402
from alexnet_jax.models import pooling as P  # noqa: E402


def conv_plain(xs, kernel, bias, stride, padding):
  return [jax.lax.conv_general_dilated(
      x, kernel[i], (stride, stride), [(padding, padding)] * 2,
      dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias[i] for i, x in enumerate(xs)]


def dense_plain(x, kernel, bias):
  return [x @ kernel[i] + bias[i] for i in range(kernel.shape[0])]


def layers(b: int):
  """name -> (before fn, after fn, args); fns map args to a pytree of outputs."""
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
    # conv1 needs no input gradient; the others do.
    diff = (1, 2) if name == "conv1" else (0, 1, 2)
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


def timed(fn, args, reps):
  jax.block_until_ready(fn(*args))
  ts = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    ts.append(time.perf_counter() - t)
  return ts


def compile_pair(f, args, diff, options):
  def fwd(*a):
    return f(*a)

  def fwd_bwd(*a):
    ys, vjp = jax.vjp(lambda *d: f(*[d[diff.index(i)] if i in diff else a[i]
                                     for i in range(len(a))]), *[a[i] for i in diff])
    return ys, vjp(jax.tree.map(jnp.ones_like, ys))

  return (jax.jit(fwd).lower(*args).compile(options),
          jax.jit(fwd_bwd).lower(*args).compile(options))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--repeats", type=int, default=5)
  a = p.parse_args(argv)
  after_opts = alexnet_jax.CPU_COMPILER_OPTIONS
  rows = []
  for name, (before, after, args, diff) in layers(a.batch).items():
    cb, ca = compile_pair(before, args, diff, {}), compile_pair(after, args, diff, after_opts)
    t = {k: [] for k in ("bf", "bfb", "af", "afb")}
    for _ in range(a.repeats):
      for key, fn in (("bf", cb[0]), ("bfb", cb[1]), ("af", ca[0]), ("afb", ca[1])):
        t[key] += timed(fn, args, 1)
    m = {k: statistics.median(v) * 1e3 for k, v in t.items()}
    rows.append((name, m["bf"], m["bfb"] - m["bf"], m["af"], m["afb"] - m["af"]))
    print(f"{name:6s} before fwd {m['bf']:7.1f} bwd {m['bfb'] - m['bf']:7.1f} | "
          f"after fwd {m['af']:7.1f} bwd {m['afb'] - m['af']:7.1f}", flush=True)

  # The optimizer: paper SGD over the full parameter set (61M floats).
  c = config_lib.base_config()
  model = A.AlexNet(A.ModelSpec.from_config(c.model))
  params = model.init({"params": jax.random.key(0)}, jnp.zeros((1, 227, 227, 3)),
                      train=False)["params"]
  tx = optim.make_optimizer(c.optim, params)
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)

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

  print(f"\nbatch {a.batch}, {os.cpu_count()} cores, median of {a.repeats}, ms "
        "(both towers):\n")
  print("| layer | before fwd | before bwd | after fwd | after bwd |")
  print("|---|---:|---:|---:|---:|")
  for r in rows:
    print(f"| {r[0]} | {r[1]:.0f} | {r[2]:.0f} | {r[3]:.0f} | {r[4]:.0f} |")
  tb = sum(r[1] + r[2] for r in rows)
  ta = sum(r[3] + r[4] for r in rows)
  print(f"| paper SGD update | {opt_ms:.0f} | | {opt_ms:.0f} | |")
  print(f"| **sum** | {tb + opt_ms:.0f} | | {ta + opt_ms:.0f} | |")


if __name__ == "__main__":
  main()
