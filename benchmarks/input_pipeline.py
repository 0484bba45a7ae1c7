r"""Throughput of the training input pipeline, in images/s in total and per CPU core.

    python benchmarks/input_pipeline.py                      # all cores this process may use
    taskset -c 0 python benchmarks/input_pipeline.py         # one core
    python benchmarks/input_pipeline.py --seconds=60 --jsonl=figures.jsonl

`benchmark(out_json, seconds)` is what benchmarks/gpu_check.py calls (its `input` part).

Cases:
  jpeg256   generated JPEGs with a 256px shorter side (what the paper trained from), read from
            an image folder: read -> JPEG decode -> resize/center 256 -> random 227 crop ->
            flip -> PCA noise -> mean-image subtraction -> batch of 128.
  jpegfull  the same from ImageNet-sized JPEGs (500x375, the most common ImageNet shape).
  fmnist    the Fashion-MNIST config (configs/small_fashion_mnist.py): cached 32px images,
            28px crops, flips, PCA noise, mean image, batch 128.
Times exclude the first batches (graph building, caching, statistics); each case stops after
its share of `--seconds`. "Per CPU-second" is
images over the CPU time the process used: the per-core rate even when other jobs share the
cores (then wall/cores understates it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from alexnet_jax import config as config_lib  # noqa: E402
from alexnet_jax import data  # noqa: E402


def write_jpegs(root: str, n: int, shape: tuple[int, int], classes: int = 10) -> None:
  """Photo-like JPEGs (smooth colour fields plus grain), so they compress and decode like photos."""
  import tensorflow as tf
  rng = np.random.default_rng(0)
  h, w = shape
  for i in range(n):
    d = os.path.join(root, "train", f"c{i % classes}")
    os.makedirs(d, exist_ok=True)
    coarse = rng.uniform(0, 255, (1, h // 32 + 1, w // 32 + 1, 3)).astype(np.float32)
    image = tf.image.resize(coarse, (h, w), method="bicubic")[0]
    image += rng.normal(0, 12, (h, w, 3)).astype(np.float32)
    image = tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)
    tf.io.write_file(os.path.join(d, f"{i}.jpg"), tf.io.encode_jpeg(image, quality=90))


def measure(config, seconds: float, warmup: int = 3) -> tuple[float, float, int]:
  """(images per wall second, images per CPU second of this process, batches timed).

  The second is the per-core rate even on a machine shared with other jobs.
  """
  it = data.train_batches(config)
  for _ in range(warmup):
    next(it)
  wall, cpu, n = time.perf_counter(), time.process_time(), 0
  while n < 2 or time.perf_counter() - wall < seconds:
    b = next(it)
    n += 1
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  assert np.isfinite(b["image"]).all()
  images = n * b["image"].shape[0]
  return images / wall, images / cpu, n


def jpeg_config(root: str, tmp: str):
  c = config_lib.base_config()
  c.data.dataset = "folder:" + root
  c.data.data_dir = os.path.join(tmp, "tfds")
  c.data.val_split = None
  c.data.shuffle_buffer = 1000
  c.data.cache = False
  return c


def benchmark(out_json: str | None, seconds: float, cases=("jpeg256",),
              images: int | None = None) -> list[dict]:
  """Runs `cases` in about `seconds` together; appends one JSON record per case to out_json.

  `images`: generated JPEGs per case (default 1280, 256 for runs under a minute).
  """
  images = images or (1280 if seconds >= 60 else 256)
  cores = len(os.sched_getaffinity(0))
  print(f"CPU cores available to this process: {cores}")
  out = []
  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    for i, case in enumerate(cases):
      share = (seconds - (time.perf_counter() - start)) / (len(cases) - i)
      if case in ("jpeg256", "jpegfull"):
        root = os.path.join(tmp, case)
        t = time.perf_counter()
        write_jpegs(root, images, (256, 320) if case == "jpeg256" else (375, 500))
        c = jpeg_config(root, tmp)
        total, per_cpu_second, n = measure(c, share / 2 - (time.perf_counter() - t))
      elif case == "fmnist":
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
        import small_fashion_mnist
        total, per_cpu_second, n = measure(small_fashion_mnist.get_config(), share / 2, warmup=5)
      else:
        raise SystemExit(f"unknown case {case!r}: jpeg256, jpegfull or fmnist")
      rec = {"what": "input_pipeline", "case": case, "img_per_s": total,
             "img_per_s_per_core": total / cores, "img_per_cpu_second": per_cpu_second,
             "cores": cores, "batches": n}
      out.append(rec)
      if out_json:
        with open(out_json, "a") as f:
          f.write(json.dumps(rec) + "\n")
      print(f"{case:9s} {total:7.0f} images/s total, {total / cores:6.0f} per core (wall / cores), "
            f"{per_cpu_second:6.0f} per CPU-second used", flush=True)
  return out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--cases", default="jpeg256,jpegfull,fmnist")
  p.add_argument("--images", type=int, default=None, help="generated JPEGs per case (1280)")
  p.add_argument("--seconds", type=float, default=90, help="for all cases together")
  p.add_argument("--jsonl", default=None, help="append one record per case to this file")
  args = p.parse_args()
  benchmark(args.jsonl, args.seconds, args.cases.split(","), args.images)


if __name__ == "__main__":
  main()
