r"""Throughput of the grain training input pipeline: images/s per worker and its scaling.

    python benchmarks/input_pipeline.py                       # every case, 0..all-core workers
    python benchmarks/input_pipeline.py --cases=prepared --workers=0,1,2,4,8,15 --step_rate=20000

Cases (each with the full training augmentation: random 227 crop of the 256 square, flip,
PCA colour noise, mean-image subtraction, batches of 128):
  prepared  ImageNet as `python -m alexnet_jax.data.prepare` writes it: JPEGs already resized to
            a 256px shorter side, in ArrayRecord shards (generated photo-like images).
  jpegfull  the same from an image folder of full-size JPEGs (500x375, ImageNet's commonest
            shape): read -> decode -> resize to 256 -> the rest.
  fmnist    the README's Fashion-MNIST config: cached 32px images, 28px crops, batch 128.
"workers=0" decodes in the training process with one reading thread: the per-core rate.
workers=N > 0 runs N grain worker processes. Times exclude the first batches (start-up,
caching, statistics). The last line says how many cores a given step rate needs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from alexnet_jax import config as config_lib  # noqa: E402
from alexnet_jax import data  # noqa: E402


def photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
  """A photo-like image (smooth colour fields plus grain): compresses and decodes like a photo."""
  coarse = rng.uniform(0, 255, (h // 32 + 2, w // 32 + 2, 3)).astype(np.uint8)
  image = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.float32)
  image += rng.normal(0, 12, (h, w, 3)).astype(np.float32)
  return np.clip(image, 0, 255).astype(np.uint8)


def write_jpegs(root: str, n: int, shape: tuple[int, int], classes: int = 10) -> None:
  rng = np.random.default_rng(0)
  for i in range(n):
    d = os.path.join(root, "train", f"c{i % classes}")
    os.makedirs(d, exist_ok=True)
    Image.fromarray(photo(rng, *shape)).save(os.path.join(d, f"{i}.jpg"), quality=90)


def measure(config, seconds: float, warmup: int = 2) -> tuple[float, float]:
  """(images per wall second, per CPU second of this process) over about `seconds`.

  The second is the one-core rate even on a shared machine, when the work stays in this
  process (workers=0); with worker processes only the first means anything.
  """
  it = data.train_iterator(config)
  for _ in range(warmup):
    next(it)
  n, t0, c0 = 0, time.perf_counter(), time.process_time()
  while time.perf_counter() - t0 < seconds:
    b = next(it)
    n += b["image"].shape[0]
  rate, cpu_rate = n / (time.perf_counter() - t0), n / max(time.process_time() - c0, 1e-9)
  assert np.isfinite(b["image"]).all()
  return rate, cpu_rate


def folder_config(root: str, tmp: str):
  c = config_lib.base_config()
  c.data.dataset = "folder:" + root
  c.data.data_dir = os.path.join(tmp, "data")
  c.data.val_split = None
  c.data.cache = False
  c.num_epochs = 1000  # long enough for any measurement
  return c


def prepared_config(images: int, tmp: str):
  """Photo-like 340x256 JPEGs through the real `prepare` command into ArrayRecord shards."""
  from alexnet_jax.data import prepare  # noqa: PLC0415
  src = os.path.join(tmp, "prepared_src")
  write_jpegs(src, images, (256, 340))
  out = os.path.join(tmp, "prepared")
  prepare.prepare(os.path.join(src, "train"), out, "train", progress=False)
  c = config_lib.base_config()
  c.data.dataset = "prepared:" + out
  c.data.data_dir = os.path.join(tmp, "data")
  c.data.val_split = None
  c.data.cache = False
  c.num_epochs = 1000
  return c


def fmnist_config(tmp: str):
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
  import small_fashion_mnist  # noqa: PLC0415
  c = small_fashion_mnist.get_config()
  c.data.data_dir = os.path.join(tmp, "data")
  return c


def run_input_benchmark(out_jsonl: str | None = None, seconds: float = 60.0,
                        cases=("prepared", "jpegfull", "fmnist"), workers=None,
                        images: int = 1024, step_rate: float | None = None) -> dict:
  """Measures every case at each worker count within about `seconds` of timing in all.

  Each figure is appended to `out_jsonl` (one JSON record a line, as gpu_check collects them)
  the moment it exists; the return value holds them all.
  """
  cores = len(os.sched_getaffinity(0))
  workers = workers or sorted({0, 1, 2, max(1, cores // 2), max(1, cores - 1)})
  per_point = max(2.0, seconds / (len(cases) * len(workers)))
  results = {"cores": cores, "seconds_per_point": per_point, "cases": {}}

  def emit(record):
    if out_jsonl:
      with open(out_jsonl, "a") as f:
        f.write(json.dumps({"what": "input_pipeline", "cores": cores, **record}) + "\n")

  with tempfile.TemporaryDirectory() as tmp:
    for case in cases:
      if case == "prepared":
        c = prepared_config(images, tmp)
      elif case == "jpegfull":
        root = os.path.join(tmp, case)
        write_jpegs(root, images, (375, 500))
        c = folder_config(root, tmp)
      elif case == "fmnist":
        c = fmnist_config(tmp)
      else:
        raise SystemExit(f"unknown case {case!r}: use prepared, jpegfull or fmnist")
      rates = {}
      for w in workers:
        c.data.workers, c.data.threads = w, (1 if w == 0 else 4)
        rates[w], cpu_rate = measure(c, per_point)
        base = rates.get(0) or rates[w]
        emit({"case": case, "workers": w, "images_per_sec": rates[w]}
             | ({"images_per_cpu_sec": cpu_rate} if w == 0 else {}))
        print(f"{case:9s} workers={w:2d} {rates[w]:8.0f} img/s"
              + (f"  ({rates[w] / base:4.1f}x one core)" if w else
                 f"  (one core; {cpu_rate:.0f} per CPU-second)"), flush=True)
      results["cases"][case] = {str(w): r for w, r in rates.items()}
      if step_rate and 0 in rates:
        need = step_rate / rates[0]
        results["cases"][case]["cores_for_step_rate"] = need
        emit({"case": case, "step_rate": step_rate, "cores_needed_at_one_core_rate": need})
        print(f"{case:9s} a step rate of {step_rate:.0f} img/s needs ~{need:.1f} cores at the "
              "one-core rate (more if scaling is below linear)", flush=True)
  return results


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--cases", default="prepared,jpegfull,fmnist")
  p.add_argument("--workers", default=None, help="comma-separated worker counts (0 = in-process)")
  p.add_argument("--images", type=int, default=1024, help="generated JPEGs per case")
  p.add_argument("--seconds", type=float, default=60.0, help="timed seconds in all")
  p.add_argument("--step_rate", type=float, default=None,
                 help="a train step's img/s, to print how many cores would feed it")
  p.add_argument("--out", default=None, help="also append the figures as JSON lines here")
  args = p.parse_args()
  workers = [int(w) for w in args.workers.split(",")] if args.workers else None
  print(f"CPU cores available to this process: {len(os.sched_getaffinity(0))}")
  run_input_benchmark(args.out, args.seconds, args.cases.split(","), workers, args.images,
                      args.step_rate)


if __name__ == "__main__":
  main()
