r"""Throughput of the training input pipeline, in images/s in total and per CPU core.

    python benchmarks/input_pipeline.py                      # all cores this process may use
    taskset -c 0 python benchmarks/input_pipeline.py         # one core

Cases:
  jpeg256   generated JPEGs with a 256px shorter side (what the paper trained from), read from
            an image folder: read -> JPEG decode -> resize/center 256 -> random 227 crop ->
            flip -> PCA noise -> mean-image subtraction -> batch of 128.
  jpegfull  the same from ImageNet-sized JPEGs (500x375, the most common ImageNet shape).
  fmnist    the Fashion-MNIST config (configs/small_fashion_mnist.py): cached 32px images,
            28px crops, flips, PCA noise, mean image, batch 128.
Times exclude the first batches (graph building, caching, statistics). "Per CPU-second" is
images over the CPU time the process used: the per-core rate even when other jobs share the
cores (then wall/cores understates it).
"""

from __future__ import annotations

import argparse
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


def measure(config, batches: int, warmup: int = 3) -> tuple[float, float]:
  """(images per wall second, images per CPU second of this process).

  The second is the per-core rate even on a machine shared with other jobs.
  """
  it = data.train_batches(config)
  for _ in range(warmup):
    next(it)
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(batches):
    b = next(it)
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  assert np.isfinite(b["image"]).all()
  n = batches * b["image"].shape[0]
  return n / wall, n / cpu


def jpeg_config(root: str, tmp: str):
  c = config_lib.base_config()
  c.data.dataset = "folder:" + root
  c.data.data_dir = os.path.join(tmp, "tfds")
  c.data.val_split = None
  c.data.shuffle_buffer = 1000
  c.data.cache = False
  return c


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--cases", default="jpeg256,jpegfull,fmnist")
  p.add_argument("--images", type=int, default=1280, help="generated JPEGs per case")
  p.add_argument("--batches", type=int, default=20, help="timed batches of 128 per JPEG case")
  args = p.parse_args()
  cores = len(os.sched_getaffinity(0))
  print(f"CPU cores available to this process: {cores}")
  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    for case in args.cases.split(","):
      if case in ("jpeg256", "jpegfull"):
        root = os.path.join(tmp, case)
        write_jpegs(root, args.images, (256, 320) if case == "jpeg256" else (375, 500))
        c = jpeg_config(root, tmp)
        results[case] = measure(c, args.batches)
      elif case == "fmnist":
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
        import small_fashion_mnist
        c = small_fashion_mnist.get_config()
        results[case] = measure(c, 400, warmup=5)
      else:
        raise SystemExit(f"unknown case {case!r}")
      total, per_cpu_second = results[case]
      print(f"{case:9s} {total:7.0f} images/s total, {total / cores:6.0f} per core (wall / cores), "
            f"{per_cpu_second:6.0f} per CPU-second used", flush=True)


if __name__ == "__main__":
  main()
