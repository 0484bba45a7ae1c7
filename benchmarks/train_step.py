r"""Train-step throughput of the JAX AlexNet, next to PyTorch, on synthetic data.

Times the real step (`alexnet_jax.step.make_train_step` + `optim.make_optimizer`: forward,
backward, paper-SGD update; jitted with the state donated, as train.py does) and, in the
same process with the same batch, dtype and thread count, an independent PyTorch
implementation of the same network and optimizer (benchmarks/torch_alexnet.py).

    python benchmarks/train_step.py                         # CPU: paper (batch 32) + small (128)
    python benchmarks/train_step.py --config=paper --batch=64 --repeats=7
    python benchmarks/train_step.py --platform=gpu          # batch 128 + sweep, bf16 and f32, MFU
    python benchmarks/train_step.py --platform=gpu --input-pipeline   # + CPU input pipeline img/s

Method: after `--warmup` steps (compilation included), each repeat times `--steps`
consecutive steps with one device sync at the end (no host sync inside the step); the
figure is the median over `--repeats`. JAX and PyTorch repeats alternate, so load from
other processes on a shared machine hits both alike. GFLOP/s use the analytic count of
`alexnet_jax.flops` (3x forward MACs x 2: 4.35 GFLOP/img for the paper net). The
ceiling is the best of a 2048^2 float32 matmul in JAX and PyTorch, timed in this run
(8192^2 in the compute dtype on GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from alexnet_jax import config as config_lib  # noqa: E402
from alexnet_jax import flops as flops_lib  # noqa: E402
from alexnet_jax import optim  # noqa: E402
from alexnet_jax import step as step_lib  # noqa: E402
from alexnet_jax.models import AlexNet, ModelSpec  # noqa: E402

# Dense peak FLOP/s per device kind, for model FLOP utilisation (vendor datasheets).
GPU_PEAKS = {  # kind substring -> {dtype: peak}
    "H100": {"bfloat16": 989e12, "float32": 494e12},  # SXM; float32 runs as TF32.
    "H200": {"bfloat16": 989e12, "float32": 494e12},
    "A100": {"bfloat16": 312e12, "float32": 156e12},
}


def model_config(name: str, dtype: str = "float32"):
  c = config_lib.base_config()
  if name == "small":
    config_lib.small_model(c)
  elif name != "paper":
    raise ValueError(f"unknown config {name!r}")
  c.model.dtype = dtype
  return c


def build_jax_step(name: str, batch: int, dtype: str = "float32", seed: int = 0):
  """(jitted step, state, batch, lr): the step exactly as train.py builds it."""
  c = model_config(name, dtype)
  model = AlexNet(ModelSpec.from_config(c.model))
  size = c.model.input_size
  params_shape = jax.eval_shape(
      lambda: model.init({"params": jax.random.key(0)}, jnp.zeros((1, size, size, 3)),
                         train=False))["params"]
  tx = optim.make_optimizer(c.optim, params_shape)
  state = jax.jit(lambda r: step_lib.init_state(model, tx, r, (size, size, 3)))(
      jax.random.key(seed))
  step = jax.jit(step_lib.make_train_step(model, tx), donate_argnums=(0,))
  rng = np.random.default_rng(seed)
  data = {"image": jnp.asarray(rng.standard_normal((batch, size, size, 3), np.float32)),
          "label": jnp.asarray(rng.integers(0, c.model.num_classes, batch, np.int32))}
  return step, state, data, jnp.float32(c.optim.lr)


class JaxRunner:
  name = "jax"

  def __init__(self, config: str, batch: int, dtype: str):
    self.step, self.state, self.batch, self.lr = build_jax_step(config, batch, dtype)
    t = time.perf_counter()
    self.run(1)
    self.compile_s = time.perf_counter() - t

  def run(self, steps: int) -> float:
    t = time.perf_counter()
    state = self.state
    for _ in range(steps):
      state, metrics = self.step(state, self.batch, self.lr)
    jax.block_until_ready((state, metrics))
    self.state = state
    loss = float(metrics["loss"])
    if not np.isfinite(loss):
      raise FloatingPointError(f"JAX loss is {loss}")
    return (time.perf_counter() - t) / steps


class TorchRunner:
  name = "torch"

  def __init__(self, config: str, batch: int, dtype: str, device: str = "cpu"):
    import torch

    from benchmarks import torch_alexnet as ta
    self.torch = torch
    c = model_config(config)
    m = ModelSpec.from_config(c.model)
    torch.manual_seed(0)
    self.device = device
    tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    self.model = ta.TorchAlexNet(m).to(device).train()
    opt = ta.PaperSGD(self.model, c.optim.lr, c.optim.momentum, c.optim.weight_decay,
                      c.optim.decay_biases)
    step = ta.make_train_step(self.model, opt)
    if dtype == "float32":
      self.step = step
    else:
      # Mixed precision the PyTorch way: float32 weights, bf16 compute under autocast.
      def step_amp(x, y):
        with torch.autocast(device_type=device.split(":")[0], dtype=tdtype):
          return step(x, y)
      self.step = step_amp
    g = torch.Generator().manual_seed(0)
    size = m.input_size
    self.x = torch.randn(batch, 3, size, size, generator=g).to(device)
    self.y = torch.randint(0, m.num_classes, (batch,), generator=g).to(device)
    t = time.perf_counter()
    self.run(1)
    self.compile_s = time.perf_counter() - t

  def run(self, steps: int) -> float:
    torch = self.torch
    t = time.perf_counter()
    for _ in range(steps):
      out = self.step(self.x, self.y)
    if self.device != "cpu":
      torch.cuda.synchronize()
    loss = float(out[0])
    if not np.isfinite(loss):
      raise FloatingPointError(f"torch loss is {loss}")
    return (time.perf_counter() - t) / steps


def matmul_ceiling(platform: str, dtype: str, torch_too: bool) -> dict[str, float]:
  """FLOP/s of a square matmul, median of repeats, in each framework."""
  n = 2048 if platform == "cpu" else 8192
  jd = jnp.float32 if dtype == "float32" else jnp.bfloat16
  a = jax.random.normal(jax.random.key(1), (n, n), jd)
  b = jax.random.normal(jax.random.key(2), (n, n), jd)
  mm = jax.jit(lambda a, b: a @ b)
  jax.block_until_ready(mm(a, b))
  reps = 3 if platform == "cpu" else 20

  def timed(f, sync):
    ts = []
    for _ in range(7):
      t = time.perf_counter()
      for _ in range(reps):
        r = f()
      sync(r)
      ts.append((time.perf_counter() - t) / reps)
    return 2 * n**3 / statistics.median(ts)

  out = {"jax": timed(lambda: mm(a, b), jax.block_until_ready), "n": n}
  if torch_too:
    import torch
    dev = "cpu" if platform == "cpu" else "cuda"
    td = torch.float32 if dtype == "float32" else torch.bfloat16
    ta_, tb = torch.randn(n, n, dtype=td, device=dev), torch.randn(n, n, dtype=td, device=dev)
    sync = (lambda r: None) if dev == "cpu" else (lambda r: torch.cuda.synchronize())
    out["torch"] = timed(lambda: ta_ @ tb, sync)
  return out


def torch_available(platform: str) -> str | None:
  """None if usable, else why not."""
  try:
    import torch
  except ImportError:
    return "PyTorch is not installed (pip install 'alexnet-jax[torch]'); JAX only"
  if platform == "gpu" and not torch.cuda.is_available():
    return f"PyTorch {torch.__version__} has no CUDA here; JAX only"
  return None


def bench(config: str, batch: int, dtype: str, platform: str, use_torch: bool,
          steps: int, repeats: int, ceiling: float, torch_threads: int | None):
  runners = [JaxRunner(config, batch, dtype)]
  if use_torch:
    import torch
    if torch_threads:
      torch.set_num_threads(torch_threads)
    runners.append(TorchRunner(config, batch, dtype, "cpu" if platform == "cpu" else "cuda"))
  times = {r.name: [] for r in runners}
  for _ in range(repeats):
    for r in runners:
      times[r.name].append(r.run(steps))
      time.sleep(0.2)  # Let the other framework's spinning worker threads go idle.
  c = model_config(config)
  per_img = flops_lib.train_step_flops(c.model)
  result = {"config": config, "batch": batch, "dtype": dtype, "flop_per_img": per_img}
  for r in runners:
    med = statistics.median(times[r.name])
    ips = batch / med
    result[r.name] = {
        "ms_per_step": med * 1e3,
        "ms_all": [round(t * 1e3, 1) for t in times[r.name]],
        "img_per_s": ips,
        "gflop_per_s": ips * per_img / 1e9,
        "fraction_of_ceiling": ips * per_img / ceiling,
        "first_step_s": r.compile_s,
    }
  if "torch" in result:
    result["jax_over_torch"] = result["jax"]["img_per_s"] / result["torch"]["img_per_s"]
    # Repeats run back to back, so each pair saw about the same load from other processes.
    result["jax_over_torch_paired"] = statistics.median(
        t / j for j, t in zip(times["jax"], times["torch"]))
  return result


def print_result(res, peak=None):
  print(f"\n{res['config']} config, batch {res['batch']}, {res['dtype']}, "
        f"{res['flop_per_img'] / 1e9:.3f} GFLOP/img (train step, 3x forward)")
  print(f"  {'':6s} {'ms/step':>9s} {'img/s':>8s} {'GFLOP/s':>9s} {'of ceiling':>10s}"
        + (f"  {'MFU':>6s}" if peak else "") + "   first step   all repeats (ms)")
  for name in ("jax", "torch"):
    if name not in res:
      continue
    r = res[name]
    mfu = f"  {r['gflop_per_s'] * 1e9 / peak:6.1%}" if peak else ""
    print(f"  {name:6s} {r['ms_per_step']:9.1f} {r['img_per_s']:8.1f} {r['gflop_per_s']:9.1f} "
          f"{r['fraction_of_ceiling']:10.1%}{mfu}   {r['first_step_s']:8.1f} s   {r['ms_all']}")
  if "jax_over_torch" in res:
    print(f"  JAX/PyTorch throughput ratio: {res['jax_over_torch']:.2f} (of medians), "
          f"{res['jax_over_torch_paired']:.2f} (median of paired repeats)")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--platform", default="cpu", choices=("cpu", "gpu"))
  p.add_argument("--config", default="both", choices=("paper", "small", "both"))
  p.add_argument("--batch", type=int, default=None,
                 help="paper-config batch (default 32 on CPU, 128 on GPU)")
  p.add_argument("--small-batch", type=int, default=128)
  p.add_argument("--dtype", default=None, choices=("float32", "bfloat16"),
                 help="compute dtype (default float32 on CPU; both on GPU)")
  p.add_argument("--steps", type=int, default=None, help="steps per timed repeat")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--sweep", default="128,256,512,1024",
                 help="GPU: paper-config batches to sweep (empty to skip)")
  p.add_argument("--no-torch", action="store_true")
  p.add_argument("--torch-threads", type=int, default=os.cpu_count(),
                 help="torch.set_num_threads (XLA:CPU uses every core)")
  p.add_argument("--input-pipeline", action="store_true",
                 help="also run benchmarks/input_pipeline.py (CPU images/s feeding the step)")
  p.add_argument("--json", default=None, help="write all results to this file")
  a = p.parse_args(argv)

  if a.platform == "gpu":
    if jax.default_backend() != "gpu":
      sys.exit(f"--platform=gpu but JAX's backend is {jax.default_backend()!r}")
  else:
    jax.config.update("jax_platforms", "cpu")
  device = jax.devices()[0]
  cpu = a.platform == "cpu"
  batch = a.batch or (32 if cpu else 128)
  steps = a.steps or (3 if cpu else 20)
  dtypes = [a.dtype] if a.dtype else (["float32"] if cpu else ["bfloat16", "float32"])
  why_no_torch = "disabled by --no-torch" if a.no_torch else torch_available(a.platform)
  use_torch = why_no_torch is None
  import alexnet_jax
  print(f"device: {device.device_kind} ({a.platform}), {os.cpu_count()} CPU cores, "
        f"jax {jax.__version__}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
        + (" (set by alexnet_jax)" if alexnet_jax.DEFAULT_XLA_FLAGS_SET else ""))
  if use_torch:
    import torch
    torch.set_num_threads(a.torch_threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
  else:
    print(f"PyTorch comparison skipped: {why_no_torch}")

  peak_table = next((v for k, v in GPU_PEAKS.items() if k in device.device_kind), None)
  results = {"device": device.device_kind, "platform": a.platform, "cores": os.cpu_count(),
             "jax": jax.__version__, "runs": []}
  for dtype in dtypes:
    ceil = matmul_ceiling(a.platform, dtype, use_torch)
    ceiling = max(v for k, v in ceil.items() if k != "n")
    print(f"\nmatmul ceiling ({ceil['n']}^2 {dtype}): "
          + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in ceil.items() if k != "n"))
    results["runs"].append({"matmul": ceil, "dtype": dtype})
    peak = peak_table.get(dtype) if peak_table else None
    configs = ["paper", "small"] if a.config == "both" else [a.config]
    plan = [(c, batch if c == "paper" else a.small_batch) for c in configs]
    if not cpu and a.sweep and "paper" in configs:
      plan += [("paper", int(b)) for b in a.sweep.split(",") if int(b) != batch]
    for config, b in plan:
      res = bench(config, b, dtype, a.platform, use_torch, steps, a.repeats, ceiling,
                  a.torch_threads)
      res["matmul_ceiling"] = ceiling
      if peak:
        res["mfu"] = res["jax"]["gflop_per_s"] * 1e9 / peak
      print_result(res, peak)
      results["runs"].append(res)

  if a.input_pipeline:
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "input_pipeline.py")
    print(f"\ninput pipeline ({script}):", flush=True)
    subprocess.run([sys.executable, script], check=False)
  if a.json:
    with open(a.json, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
