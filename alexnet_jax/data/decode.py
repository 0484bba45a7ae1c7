"""Image bytes -> uint8 arrays without TensorFlow (placeholder; the decoder study replaces it)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps


class ImageError(ValueError):
  """An image that cannot be decoded; the message names the file."""


def decode(data: bytes, channels: int, *, path: str | None = None) -> np.ndarray:
  where = f" {path}" if path else ""
  try:
    with Image.open(io.BytesIO(data)) as im:
      im = ImageOps.exif_transpose(im)
      im = im.convert("L" if channels == 1 else "RGB")
      x = np.asarray(im)
  except Exception as e:  # PIL raises many types for bad bytes; all mean the same here.
    raise ImageError(f"cannot decode image{where}: {e}") from None
  return x[..., None] if x.ndim == 2 else x


def resize_small(image: np.ndarray, size: int) -> np.ndarray:
  h, w = image.shape[:2]
  s = size / min(h, w)
  nh, nw = max(size, round(h * s)), max(size, round(w * s))
  if (nh, nw) != (h, w):
    chans = [np.asarray(Image.fromarray(image[..., c].astype(np.float32), "F").resize(
        (nw, nh), Image.BILINEAR)) for c in range(image.shape[-1])]
    image = np.clip(np.round(np.stack(chans, -1)), 0, 255).astype(np.uint8)
  top, left = (nh - size) // 2, (nw - size) // 2
  return image[top:top + size, left:left + size]


def decode_square(data: bytes, channels: int, size: int, *, path: str | None = None) -> np.ndarray:
  return resize_small(decode(data, channels, path=path), size)
