"""What every benchmark here shares: the train step as train.py builds it, how to time it,
the matmul ceiling, chip peaks, and a JSON-lines sink that keeps each figure the moment it
exists.

Method (all scripts): warm up (compilation included), then each repeat times `steps`
consecutive calls with one device sync at the end, and the figure is the median of the
repeats. Where two things are compared, their repeats alternate (`interleave`), so load
from other processes on a shared machine hits both alike.
"""

from __future__ import annotations

import importlib
import json
import os
import statistics
import sys
import time
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

# Dense (no sparsity) peak FLOP/s per device kind, from the vendors' datasheets; float32
# runs as TF32 on the matrix units. First matching substring of `device_kind` wins, so the
# specific names come first.
PEAKS = (
    ("H100 PCIe", {"bfloat16": 756e12, "float32": 378e12}),
    ("H100 NVL", {"bfloat16": 835e12, "float32": 418e12}),
    ("H100", {"bfloat16": 989e12, "float32": 494e12}),  # SXM (80GB HBM3).
    ("H200", {"bfloat16": 989e12, "float32": 494e12}),
    ("A100", {"bfloat16": 312e12, "float32": 156e12}),
)


def peak_flops(device_kind: str, dtype: str) -> float | None:
  """The chip's dense peak in `dtype`, or None where unknown (CPUs, other GPUs)."""
  for name, peaks in PEAKS:
    if name in device_kind:
      return peaks.get(dtype)
  return None


def use_platform(platform: str) -> None:
  """Pins JAX to `platform` ('cpu' or 'gpu'); fails fast if the GPU is not there."""
  if platform == "cpu":
    jax.config.update("jax_platforms", "cpu")
  elif jax.default_backend() != "gpu":
    sys.exit(f"--platform=gpu but JAX's backend is {jax.default_backend()!r}")


def model_config(name: str, dtype: str = "float32", pkg: str = "alexnet_jax"):
  """The paper net ('paper'), the Fashion-MNIST net ('small'), or a few-channel 'tiny' one."""
  C = importlib.import_module(f"{pkg}.config")
  c = C.base_config()
  if name in ("small", "tiny"):
    C.small_model(c)
  elif name != "paper":
    raise ValueError(f"unknown config {name!r}: paper, small or tiny")
  if name == "tiny":  # The paper's layers and towers, a few channels wide: seconds to compile.
    c.model.conv_features = (8, 16, 24, 24, 16)
    c.model.fc_features = (32, 32)
  c.model.dtype = dtype
  return c


def build_jax_step(name: str, batch: int, dtype: str = "float32", seed: int = 0,
                   pkg: str = "alexnet_jax", compiler_options: dict | None = None):
  """(compiled step, state, batch, lr): the step exactly as train.py builds it (state donated).

  `pkg` names the package to build from (compare two revisions of it in one process).
  """
  S = importlib.import_module(f"{pkg}.step")
  O = importlib.import_module(f"{pkg}.optim")
  M = importlib.import_module(f"{pkg}.models")
  c = model_config(name, dtype, pkg)
  model = M.AlexNet(M.ModelSpec.from_config(c.model))
  size = c.model.input_size
  params_shape = jax.eval_shape(
      lambda: model.init({"params": jax.random.key(0)}, jnp.zeros((1, size, size, 3)),
                         train=False))["params"]
  tx = O.make_optimizer(c.optim, params_shape)
  state = jax.jit(lambda r: S.init_state(model, tx, r, (size, size, 3)))(jax.random.key(seed))
  rng = np.random.default_rng(seed)
  data = {"image": jnp.asarray(rng.standard_normal((batch, size, size, 3), np.float32)),
          "label": jnp.asarray(rng.integers(0, c.model.num_classes, batch, np.int32))}
  lr = jnp.float32(c.optim.lr)
  step = jax.jit(S.make_train_step(model, tx), donate_argnums=(0,))
  step = step.lower(state, data, lr).compile(compiler_options or {})
  return step, state, data, lr


class StepLoop:
  """Calls a donated-state train step `steps` times; returns seconds per step.

  The loss is read once at the end (a device sync, and a check that the numbers are real).
  """

  def __init__(self, step, state, *args):
    self.step, self.state, self.args = step, state, args

  def __call__(self, steps: int) -> float:
    t = time.perf_counter()
    state = self.state
    for _ in range(steps):
      state, metrics = self.step(state, *self.args)
    jax.block_until_ready((state, metrics))
    self.state = state
    loss = float(metrics["loss"])
    if not np.isfinite(loss):
      raise FloatingPointError(f"loss is {loss}")
    return (time.perf_counter() - t) / steps


def first_call_s(run: Callable[[int], float]) -> float:
  """Wall seconds of one call (compilation, autotuning, allocation included)."""
  t = time.perf_counter()
  run(1)
  return time.perf_counter() - t


def interleave(runs: dict[str, Callable[[int], float]], repeats: int, steps: int,
               pause: float = 0.0) -> dict[str, list[float]]:
  """Seconds per step of each run, repeat by repeat, the runs taking turns."""
  times = {k: [] for k in runs}
  for _ in range(repeats):
    for k, run in runs.items():
      times[k].append(run(steps))
      if pause:
        time.sleep(pause)  # Let the other side's spinning worker threads go idle.
  return times


def paired_ratio(slow: list[float], fast: list[float]) -> float:
  """Median over repeats of slow/fast: each pair ran back to back, under the same load."""
  return statistics.median(s / f for s, f in zip(slow, fast))


def matmul_flops(platform: str, dtype: str, frameworks=("jax",), n: int | None = None,
                 repeats: int = 7) -> dict[str, float]:
  """FLOP/s of an n x n matmul in `dtype` (2048 on CPU, 8192 on GPU) in each of `frameworks`
  ('jax', 'torch'), median of repeats.

  The ceiling the step's rate is read against; random data, since zeros run faster.
  """
  n = n or (2048 if platform == "cpu" else 8192)
  inner = 3 if platform == "cpu" else 20

  def rate(f, sync):
    ts = []
    for _ in range(repeats):
      t = time.perf_counter()
      for _ in range(inner):
        r = f()
      sync(r)
      ts.append((time.perf_counter() - t) / inner)
    return 2 * n**3 / statistics.median(ts)

  out = {"n": n}
  if "jax" in frameworks:
    jd = jnp.float32 if dtype == "float32" else jnp.bfloat16
    a = jax.random.normal(jax.random.key(1), (n, n), jd)
    b = jax.random.normal(jax.random.key(2), (n, n), jd)
    mm = jax.jit(lambda a, b: a @ b)
    jax.block_until_ready(mm(a, b))
    out["jax"] = rate(lambda: mm(a, b), jax.block_until_ready)
  if "torch" in frameworks:
    import torch
    dev = "cpu" if platform == "cpu" else "cuda"
    td = torch.float32 if dtype == "float32" else torch.bfloat16
    ta, tb = torch.randn(n, n, dtype=td, device=dev), torch.randn(n, n, dtype=td, device=dev)
    sync = (lambda r: None) if dev == "cpu" else (lambda r: torch.cuda.synchronize())
    rate(lambda: ta @ tb, sync)  # Warm-up: cuBLAS handle, heuristics.
    out["torch"] = rate(lambda: ta @ tb, sync)
  return out


class JsonLines:
  """Appends one JSON record per line to `path` and flushes: a killed run keeps what it had."""

  def __init__(self, path: str | None, **common):
    self.path, self.common = path, common

  def emit(self, record: dict) -> dict:
    record = {**self.common, **record}
    if self.path:
      with open(self.path, "a") as f:
        f.write(json.dumps(record, default=float) + "\n")
    return record


def read_json_lines(path: str) -> list[dict]:
  """Records of a JsonLines file; a last line cut off by a kill is skipped."""
  out = []
  try:
    with open(path) as f:
      for line in f:
        try:
          out.append(json.loads(line))
        except ValueError:
          pass
  except OSError:
    pass
  return out
