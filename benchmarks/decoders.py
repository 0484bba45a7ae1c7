"""JPEG decoders on one core: Pillow, OpenCV, simplejpeg, and this project's decode paths.

    python benchmarks/decoders.py [--n=40] [--repeats=3] [--size=256]

Images are photo-like (smooth random fields plus sensor-like noise, ~ImageNet's bits per pixel),
encoded at quality 90: (a) prepared 341x256 (shorter side 256, as `prepare` writes them),
(b) full-size 500x375 (ImageNet's typical size) and 2000x1500 (a camera photo).
For each decoder: images per CPU-second of one process (= img/s per core) of a full decode to
an RGB uint8 array, the best of `--repeats` passes,
and for the full-size images also decode+resize to the 256 centre square (reduced-scale decode
where the library offers it). Prints a table and how each fast path differs from the exact one.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from alexnet_jax.data import decode as dec  # noqa: E402

try:
  import cv2
  cv2.setNumThreads(1)
except ImportError:
  cv2 = None
try:
  import simplejpeg
except ImportError:
  simplejpeg = None


def photo_like(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
  """Smooth structure at a few scales plus noise: JPEG sizes like real photos (~3-5 bpp)."""
  img = np.zeros((h, w, 3), np.float32)
  for cell, amp in ((64, 90.0), (16, 40.0), (4, 30.0)):
    coarse = rng.normal(size=(h // cell + 2, w // cell + 2, 3)).astype(np.float32)
    for c in range(3):
      plane = Image.fromarray(coarse[:, :, c], mode="F").resize((w, h), Image.Resampling.BICUBIC)
      img[:, :, c] += amp * np.asarray(plane)
  img += rng.normal(scale=8.0, size=img.shape)
  return np.clip(img + 128, 0, 255).astype(np.uint8)


def jpegs(h: int, w: int, n: int, seed: int, quality: int = 90) -> list[bytes]:
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    buf = io.BytesIO()
    Image.fromarray(photo_like(h, w, rng)).save(buf, "JPEG", quality=quality)
    out.append(buf.getvalue())
  return out


def rate(fn, data: list[bytes], repeats: int) -> float:
  # CPU seconds of this process, not wall time: every path here is single-threaded, and on a
  # shared machine the wall clock also counts the time other jobs held the core.
  best = float("inf")
  for _ in range(repeats):
    start = time.process_time()
    for d in data:
      fn(d)
    best = min(best, time.process_time() - start)
  return len(data) / best


def decoders(size: int) -> dict:
  full = {"pillow": lambda d: np.asarray(Image.open(io.BytesIO(d)).convert("RGB"))}
  square = {}
  if cv2 is not None:
    full["opencv"] = lambda d: cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR_RGB)
  if simplejpeg is not None:
    full["simplejpeg"] = lambda d: simplejpeg.decode_jpeg(d, "RGB")
  full["decode"] = lambda d: dec.decode(d, 3)
  square["decode+resize_small"] = lambda d: dec.resize_small(dec.decode(d, 3), size)
  square["decode_square"] = lambda d: dec.decode_square(d, 3, size)

  def pillow_draft(d):
    im = Image.open(io.BytesIO(d))
    im.draft("RGB", (2 * size, 2 * size))
    return dec.center_square(np.asarray(
        im.convert("RGB").resize(_target(im.size, size), Image.Resampling.BILINEAR)), size)
  square["pillow draft+resize"] = pillow_draft
  if cv2 is not None:
    def opencv_reduced(d):
      arr = np.frombuffer(d, np.uint8)
      h, w = simplejpeg.decode_jpeg_header(d)[:2] if simplejpeg else (0, 0)
      flag = {1: cv2.IMREAD_COLOR_RGB, 2: cv2.IMREAD_REDUCED_COLOR_2,
              4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}[
                  dec._dct_factor(min(h, w), 2 * size)]
      img = cv2.imdecode(arr, flag)
      if flag != cv2.IMREAD_COLOR_RGB:
        img = img[:, :, ::-1]
      nw, nh = _target((img.shape[1], img.shape[0]), size)
      return dec.center_square(cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA), size)
    square["opencv reduced+INTER_AREA"] = opencv_reduced
  return full, square


def _target(wh, size):
  w, h = wh
  nh, nw = dec._shorter_side_shape(h, w, size)
  return nw, nh


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=40, help="images per set (full-size: n // 4)")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--size", type=int, default=256)
  args = parser.parse_args(argv)
  sets = {
      "prepared 341x256": jpegs(256, 341, args.n, 0),
      "full 500x375": jpegs(375, 500, args.n, 1),
      "full 2000x1500": jpegs(1500, 2000, max(2, args.n // 4), 2),
  }
  full, square = decoders(args.size)
  print(f"img per CPU-second of one process (best of {args.repeats}); "
        f"simplejpeg {'on' if simplejpeg else 'absent'}, opencv {cv2.__version__ if cv2 else 'absent'}, "
        f"Pillow {Image.__version__}")
  for name, data in sets.items():
    bpp = 8 * np.mean([len(d) for d in data]) / np.prod([int(v) for v in name.split()[-1].split("x")])
    print(f"\n{name}  ({len(data)} images, {bpp:.2f} bits/pixel)")
    for label, fn in full.items():
      print(f"  {label:28s} {rate(fn, data, args.repeats):8.0f}")
    for label, fn in square.items():
      print(f"  {label:28s} {rate(fn, data, args.repeats):8.0f}")
    exact = [dec.resize_small(dec.decode(d, 3), args.size).astype(np.int16) for d in data]
    for label in ("decode_square", "pillow draft+resize", "opencv reduced+INTER_AREA"):
      if label in square:
        diffs = [np.abs(square[label](d).astype(np.int16) - e) for d, e in zip(data, exact)]
        print(f"    {label} vs exact: max |diff| {max(int(x.max()) for x in diffs)}, "
              f"mean {np.mean([x.mean() for x in diffs]):.3f}")


if __name__ == "__main__":
  main()
