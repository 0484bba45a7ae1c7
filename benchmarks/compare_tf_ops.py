"""One-off check: alexnet_jax.data.decode against the TensorFlow ops it replaces.

    python benchmarks/compare_tf_ops.py     # needs tensorflow; prints max/mean |difference|

Not a test: TensorFlow is absent where the suite runs. Compares on the same bytes:
decode vs tf.io.decode_image (and tf.io.decode_jpeg with the accurate IDCT), resize_small vs
tf.image.resize(bilinear, antialias=True) + round + centre crop, decode_square vs both. Images are photo-like
(smooth fields plus noise) and uniform noise, in several sizes and formats.
"""

from __future__ import annotations

import io
import os
import sys

import numpy as np
import tensorflow as tf
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from alexnet_jax.data import decode as dec  # noqa: E402


def photo_like(h: int, w: int, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  img = np.zeros((h, w, 3), np.float32)
  for cell, amp in ((48, 80.0), (8, 30.0)):
    coarse = rng.normal(size=(h // cell + 2, w // cell + 2, 3)).astype(np.float32)
    for c in range(3):
      img[:, :, c] += amp * np.asarray(
          Image.fromarray(coarse[:, :, c], mode="F").resize((w, h), Image.Resampling.BICUBIC))
  img += rng.normal(scale=6.0, size=img.shape)
  return np.clip(img + 128, 0, 255).astype(np.uint8)


def encode(array, fmt, **kw) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, fmt, **kw)
  return buf.getvalue()


def tf_resize_small(image: np.ndarray, size: int) -> np.ndarray:
  # the old alexnet_jax.data.ops.resize_small, restated so this script outlives that module
  h, w = image.shape[:2]
  nh, nw = dec._shorter_side_shape(h, w, size)
  if (nh, nw) != (h, w):
    r = tf.image.resize(image, [nh, nw], method="bilinear", antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(r), 0, 255), tf.uint8).numpy()
  return dec.center_square(image, size)


def tf_decode_square(data: bytes, size: int) -> np.ndarray:
  shape = tf.io.extract_jpeg_shape(data).numpy()
  side = min(shape[0], shape[1])
  window = [(shape[0] - side) // 2, (shape[1] - side) // 2, side, side]
  return tf_resize_small(tf.io.decode_and_crop_jpeg(data, window, channels=3).numpy(), size)


def stats(a: np.ndarray, b: np.ndarray) -> str:
  if a.shape != b.shape:
    return f"SHAPES DIFFER {a.shape} vs {b.shape}"
  d = np.abs(a.astype(int) - b.astype(int))
  return f"max {d.max():3d}  mean {d.mean():.4f}  differing {100 * (d > 0).mean():6.2f}%"


def main() -> None:
  photos = {f"{h}x{w}": photo_like(h, w, h + w) for h, w in
            ((375, 500), (500, 333), (256, 341), (1500, 2000), (120, 90))}
  noise = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)

  print("decode vs tf.io.decode_image")
  for name, img in photos.items():
    for label, data in (("jpeg 4:2:0 q90", encode(img, "JPEG", quality=90)),
                        ("jpeg 4:4:4 q95", encode(img, "JPEG", quality=95, subsampling=0)),
                        ("jpeg progressive", encode(img, "JPEG", quality=90, progressive=True)),
                        ("png", encode(img, "PNG"))):
      for ch in (3, 1):
        ref = tf.io.decode_image(data, channels=ch, expand_animations=False).numpy()
        print(f"  {name:10s} {label:17s} ch={ch}: {stats(dec.decode(data, ch), ref)}")
        if label.startswith("jpeg"):  # decode_image uses libjpeg's fast integer IDCT
          accurate = tf.io.decode_jpeg(data, channels=ch, dct_method="INTEGER_ACCURATE").numpy()
          print(f"  {'':10s} {'  INTEGER_ACCURATE':17s} ch={ch}: {stats(dec.decode(data, ch), accurate)}")
  gray = photos["375x500"][..., 0]
  for label, data in (("gray jpeg", encode(gray, "JPEG", quality=90)), ("gray png", encode(gray, "PNG")),
                      ("rgba png", encode(np.dstack([noise, noise[..., :1]]), "PNG")),
                      ("bmp", encode(noise, "BMP")), ("gif", encode(noise[..., 0], "GIF"))):
    for ch in (3, 1):
      try:
        ref = tf.io.decode_image(data, channels=ch, expand_animations=False).numpy()
      except tf.errors.InvalidArgumentError as e:
        print(f"  {label:28s} ch={ch}: TensorFlow refuses ({e.message.split(']')[0][-60:]})")
        continue
      print(f"  {label:28s} ch={ch}: {stats(dec.decode(data, ch), ref)}")
  buf = io.BytesIO()
  Image.fromarray(np.random.default_rng(1).integers(0, 65536, (50, 60), dtype=np.uint16)).save(buf, "PNG")
  ref = tf.io.decode_image(buf.getvalue(), channels=1, expand_animations=False).numpy()
  print(f"  {'16-bit gray png':28s} ch=1: {stats(dec.decode(buf.getvalue(), 1), ref)}")

  print("\nresize_small vs tf.image.resize(bilinear, antialias=True) + round + centre crop")
  for size in (256, 224, 64):
    for name, img in [*photos.items(), ("noise 200x300", noise)]:
      print(f"  {name:14s} -> {size}: {stats(dec.resize_small(img, size), tf_resize_small(img, size))}")

  print("\ndecode_square vs TF's exact path, resize_small(decode_jpeg(INTEGER_ACCURATE)), and vs the"
        "\nold TF decode_square (crops the square before resizing: a sub-pixel shift of its own)")
  for name, img in photos.items():
    data = encode(img, "JPEG", quality=90)
    ours = dec.decode_square(data, 3, 256)
    exact = tf_resize_small(tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE").numpy(), 256)
    print(f"  {name:10s} -> 256 vs exact:   {stats(ours, exact)}")
    print(f"  {name:10s} -> 256 vs old TF:  {stats(ours, tf_decode_square(data, 256))}")
    print(f"  {'':10s}    old TF vs exact: {stats(tf_decode_square(data, 256), exact)}")


if __name__ == "__main__":
  main()
