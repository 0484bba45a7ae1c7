r"""Train-step throughput of the JAX AlexNet, next to PyTorch, on synthetic data.

Times the real step (forward, backward, paper-SGD update; jitted with the state donated, as
train.py does) and, in the same process with the same batch, dtype and thread count, the
independent PyTorch implementation of the same net and optimizer (benchmarks/torch_alexnet.py),
eager and, with `--frameworks=...,torch_compile`, through `torch.compile`.

    python benchmarks/train_step.py                         # CPU: paper (batch 32) + small (128)
    python benchmarks/train_step.py --config=paper --batch=64 --repeats=7
    python benchmarks/train_step.py --platform=gpu          # batches 128..1024, bf16 and f32, MFU
    python benchmarks/train_step.py --platform=gpu --input_pipeline   # + CPU input pipeline img/s

Method: benchmarks/timing.py (median of repeats, frameworks alternating). GFLOP/s use the
analytic count of `alexnet_jax.flops` (3x forward MACs x 2: 4.35 GFLOP/img for the paper
net). The ceiling is the best square matmul of the run in the same dtype (2048^2 on CPU,
8192^2 on GPU); MFU is against the chip's dense datasheet peak (timing.PEAKS). float32 on a
GPU means TF32 matrix units in both frameworks (XLA's default; set for PyTorch here).
`--jsonl` appends every figure to a file the moment it is measured.
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

from benchmarks import timing  # noqa: E402  (puts the repository on sys.path)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from alexnet_jax import flops as flops_lib  # noqa: E402
from alexnet_jax.models import ModelSpec  # noqa: E402


class JaxRun:
  def __init__(self, config: str, batch: int, dtype: str):
    t = time.perf_counter()
    self.loop = timing.StepLoop(*timing.build_jax_step(config, batch, dtype))
    self.compile_s = time.perf_counter() - t + timing.first_call_s(self.loop)

  def __call__(self, steps: int) -> float:
    return self.loop(steps)


class TorchRun:
  def __init__(self, config: str, batch: int, dtype: str, device: str, compile_: bool = False):
    import torch

    from benchmarks import torch_alexnet as ta
    self.torch, self.device = torch, device
    c = timing.model_config(config)
    m = ModelSpec.from_config(c.model)
    torch.manual_seed(0)
    model = ta.TorchAlexNet(m).to(device).train()
    opt = ta.PaperSGD(model, c.optim.lr, c.optim.momentum, c.optim.weight_decay,
                      c.optim.decay_biases)
    # The optimizer stays eager (foreach ops); the network is what torch.compile fuses.
    step = ta.make_train_step(torch.compile(model) if compile_ else model, opt)
    if dtype == "bfloat16":
      # Mixed precision the PyTorch way: float32 weights, bf16 compute under autocast.
      def amp_step(x, y, step=step):
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16):
          return step(x, y)
      step = amp_step
    self.step = step
    g = torch.Generator().manual_seed(0)
    self.x = torch.randn(batch, 3, m.input_size, m.input_size, generator=g).to(device)
    self.y = torch.randint(0, m.num_classes, (batch,), generator=g).to(device)
    # torch.compile compiles on the first call and may recompile on the second.
    self.compile_s = timing.first_call_s(self) + (timing.first_call_s(self) if compile_ else 0)

  def __call__(self, steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
      out = self.step(self.x, self.y)
    if self.device != "cpu":
      self.torch.cuda.synchronize()
    loss = float(out[0])
    if not np.isfinite(loss):
      raise FloatingPointError(f"torch loss is {loss}")
    return (time.perf_counter() - t) / steps


def torch_unavailable(platform: str) -> str | None:
  """None if PyTorch can run here, else why not."""
  try:
    import torch
  except ImportError:
    return "PyTorch is not installed (pip install 'alexnet-jax[torch]'); JAX only"
  if platform == "gpu" and not torch.cuda.is_available():
    return f"PyTorch {torch.__version__} has no CUDA here; JAX only"
  return None


def bench(config: str, batch: int, dtype: str, platform: str, frameworks: list[str],
          steps: int, repeats: int, ceiling: float, peak: float | None, sink) -> dict:
  """Times each framework's step, alternating; emits one record per framework and a ratio."""
  device = "cpu" if platform == "cpu" else "cuda"
  make = {"jax": lambda: JaxRun(config, batch, dtype),
          "torch": lambda: TorchRun(config, batch, dtype, device),
          "torch_compile": lambda: TorchRun(config, batch, dtype, device, compile_=True)}
  runs = {f: make[f]() for f in frameworks}
  times = timing.interleave(runs, repeats, steps, pause=0.2 if platform == "cpu" else 0.0)
  per_img = flops_lib.train_step_flops(timing.model_config(config).model)
  out = {"config": config, "batch": batch, "dtype": dtype, "gflop_per_img": per_img / 1e9}
  for f, ts in times.items():
    ips = batch / statistics.median(ts)
    out[f] = sink.emit({
        "what": "train_step", "framework": f, "config": config, "batch": batch, "dtype": dtype,
        "ms_per_step": statistics.median(ts) * 1e3, "img_per_s": ips,
        "gflop_per_s": ips * per_img / 1e9, "of_matmul": ips * per_img / ceiling,
        "mfu": ips * per_img / peak if peak else None, "first_step_s": runs[f].compile_s,
        "ms_all": [round(t * 1e3, 2) for t in ts]})
  for f in frameworks[1:]:
    if frameworks[0] == "jax":
      out[f"jax_over_{f}"] = sink.emit({
          "what": "ratio", "of": f"jax/{f}", "config": config, "batch": batch, "dtype": dtype,
          "of_medians": out["jax"]["img_per_s"] / out[f]["img_per_s"],
          "paired": timing.paired_ratio(times[f], times["jax"])})
  return out


def print_result(res: dict) -> None:
  print(f"\n{res['config']} config, batch {res['batch']}, {res['dtype']}, "
        f"{res['gflop_per_img']:.3f} GFLOP/img (train step, 3x forward)")
  print(f"  {'':14s} {'ms/step':>9s} {'img/s':>9s} {'GFLOP/s':>9s} {'of matmul':>9s} {'MFU':>6s}"
        "   first step   all repeats (ms)")
  for f in ("jax", "torch", "torch_compile"):
    if f in res:
      r = res[f]
      mfu = f"{r['mfu']:6.1%}" if r["mfu"] else "     -"
      print(f"  {f:14s} {r['ms_per_step']:9.1f} {r['img_per_s']:9.1f} {r['gflop_per_s']:9.1f} "
            f"{r['of_matmul']:9.1%} {mfu}   {r['first_step_s']:8.1f} s   {r['ms_all']}")
  for k, r in res.items():
    if k.startswith("jax_over_"):
      print(f"  JAX/{k[9:]} throughput: {r['of_medians']:.2f} (of medians), "
            f"{r['paired']:.2f} (median of paired repeats)")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--platform", default="cpu", choices=("cpu", "gpu"))
  p.add_argument("--config", default="both", choices=("paper", "small", "tiny", "both"))
  p.add_argument("--batch", default=None,
                 help="batches of the paper/tiny config, comma-separated "
                      "(default 32 on CPU, 128,256,512,1024 on GPU)")
  p.add_argument("--small_batch", type=int, default=128)
  p.add_argument("--dtype", default=None,
                 help="compute dtypes, comma-separated: float32, bfloat16 (bf16 compute, float32 "
                      "master weights). Default float32 on CPU, both on GPU")
  p.add_argument("--frameworks", default="jax,torch",
                 help="any of jax, torch, torch_compile (torch ones are skipped without PyTorch)")
  p.add_argument("--steps", type=int, default=None, help="steps per timed repeat")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--matmul_n", type=int, default=None,
                 help="side of the square matmul ceiling (default 2048 on CPU, 8192 on GPU)")
  p.add_argument("--torch_threads", type=int, default=os.cpu_count(),
                 help="torch.set_num_threads (XLA:CPU uses every core)")
  p.add_argument("--input_pipeline", action="store_true",
                 help="also run benchmarks/input_pipeline.py (CPU images/s feeding the step)")
  p.add_argument("--jsonl", default=None, help="append every figure to this file as it comes")
  p.add_argument("--json", default=None, help="write all results to this file at the end")
  a = p.parse_args(argv)

  cpu = a.platform == "cpu"
  frameworks = [f.strip() for f in a.frameworks.split(",") if f.strip()]
  bad = set(frameworks) - {"jax", "torch", "torch_compile"}
  if bad:
    p.error(f"--frameworks: unknown {sorted(bad)}; use jax, torch, torch_compile")
  why_no_torch = torch_unavailable(a.platform) if any("torch" in f for f in frameworks) else None
  if why_no_torch:
    print(f"PyTorch skipped: {why_no_torch}")
    frameworks = [f for f in frameworks if "torch" not in f]
  if not cpu and "jax" in frameworks and len(frameworks) > 1:
    # JAX would take 75% of the GPU before PyTorch allocates anything.
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")
  elif not cpu and "jax" not in frameworks:
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX only names the device.
  timing.use_platform(a.platform)
  device = jax.devices()[0]
  batches = [int(b) for b in (a.batch or ("32" if cpu else "128,256,512,1024")).split(",")]
  steps = a.steps or (3 if cpu else 20)
  dtypes = (a.dtype or ("float32" if cpu else "bfloat16,float32")).split(",")
  import alexnet_jax
  print(f"device: {device.device_kind} ({a.platform}), {os.cpu_count()} CPU cores, "
        f"jax {jax.__version__}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
        + (" (set by alexnet_jax)" if alexnet_jax.DEFAULT_XLA_FLAGS_SET else ""))
  torch_on = any("torch" in f for f in frameworks)
  if torch_on:
    import torch
    torch.set_num_threads(a.torch_threads)
    # Same arithmetic as XLA's default on the GPU: float32 convs and matmuls on TF32 units.
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
  sink = timing.JsonLines(a.jsonl, device=device.device_kind, platform=a.platform)

  configs = ["paper", "small"] if a.config == "both" else [a.config]
  results = {"device": device.device_kind, "platform": a.platform, "cores": os.cpu_count(),
             "jax": jax.__version__, "runs": []}
  for dtype in dtypes:
    ceil = timing.matmul_flops(a.platform, dtype, [f.split("_")[0] for f in frameworks],
                               n=a.matmul_n)
    ceiling = max(v for k, v in ceil.items() if k != "n")
    sink.emit({"what": "matmul", "dtype": dtype, **ceil})
    print(f"\nmatmul ceiling ({ceil['n']}^2 {dtype}): "
          + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in ceil.items() if k != "n"))
    results["runs"].append({"matmul": ceil, "dtype": dtype})
    peak = timing.peak_flops(device.device_kind, dtype)
    plan = [(c, b) for c in configs for b in (batches if c != "small" else [a.small_batch])]
    for config, b in plan:
      try:
        res = bench(config, b, dtype, a.platform, frameworks, steps, a.repeats, ceiling, peak,
                    sink)
      except Exception as e:  # noqa: BLE001 - out of memory at one batch leaves the others.
        sink.emit({"what": "error", "config": config, "batch": b, "dtype": dtype,
                   "error": f"{type(e).__name__}: {str(e)[:300]}"})
        print(f"\n{config} config, batch {b}, {dtype}: failed: {type(e).__name__}: "
              f"{str(e)[:300]}", flush=True)
        continue
      print_result(res)
      sys.stdout.flush()
      results["runs"].append(res)

  if a.input_pipeline:
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "input_pipeline.py")
    print(f"\ninput pipeline ({script}):", flush=True)
    subprocess.run([sys.executable, script], check=False)
  if a.json:
    with open(a.json, "w") as f:
      json.dump(results, f, indent=2, default=float)


if __name__ == "__main__":
  main()
