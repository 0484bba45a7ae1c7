"""Image bytes -> uint8 pixels, TensorFlow-free: decode, shorter side to `size`, centre square.

`decode` turns JPEG/PNG/BMP/GIF/WebP bytes (anything Pillow opens) into uint8 (H, W, channels):
- grayscale becomes RGB by repeating it; colour becomes grayscale by ITU-R 601 luma
  (L = 0.299 R + 0.587 G + 0.114 B, rounded as Pillow's mode 'L' does);
- CMYK/YCCK, palette, bilevel and YCbCr images go through Pillow's conversion to RGB;
- an alpha channel is dropped, not composited: the stored colour of every pixel is kept, as
  tf.io.decode_png(channels=3) did, so a PNG gives the same pixels as under the old pipeline;
- 16-bit images keep their high byte (v >> 8), which is what Pillow itself does to 16-bit RGB PNGs,
  so 16-bit grayscale and colour agree;
- EXIF orientation is applied (the image comes out the way viewers show it). TensorFlow ignored
  it; a few photos in ImageNet carry it, and `prepare` writes the turned pixels without EXIF;
- the first frame of an animated GIF/WebP is used;
- empty, truncated, corrupt and non-image data raise `ImageError` naming the file.

`resize_small` is the reference resize: exactly tf.image.resize(method='bilinear',
antialias=True) (a triangle kernel widened by the downscale factor, half-pixel centres, weights
renormalised at the borders) in float32, rounded half-to-even and clipped to uint8, then the
centre square. It runs Pillow's float ('F') resampler per channel, which computes that kernel.

`decode_square` gives the same result faster, by decoding no more of a JPEG than it needs: when
the shorter side is at least 4x `size`, libjpeg's DCT scaling decodes at 1/2, 1/4 or 1/8 scale
(the smallest one that leaves the shorter side >= 2x `size`) and the antialiased resize finishes
from there, in Pillow's 8-bit resampler. Against the exact path it differs by at most
`SQUARE_TOLERANCE` on any pixel and `SQUARE_MEAN_TOLERANCE` on average, which the tests hold it to
(measured on noisy photo-like images: max 6, mean 0.62 at 2000x1500 -> 256; max 1, mean 0.16
without DCT scaling, from the 8-bit resampler alone); the training pipeline's crops and colour
noise move pixels far more than that.

Decoders, measured with `python benchmarks/decoders.py --n=40 --repeats=5`: images per
CPU-second of one process (= img/s per core; CPU time, since this 2-core VM is shared), best of
5, photo-like JPEGs at quality 90 (~3.5 bits/pixel), Pillow 13.0, OpenCV 5.0, simplejpeg 1.9:

  ===================  ======  ======  ==========  ======  =================  =============
  image                Pillow  OpenCV  simplejpeg  decode  decode+resize_small decode_square
  ===================  ======  ======  ==========  ======  =================  =============
  prepared 341x256       1425    2397        2560    2374               2332           2291
  full-size 500x375       731    1108        1175    1098                282            365
  full-size 2000x1500      32      70          76      76                 20             64
  ===================  ======  ======  ==========  ======  =================  =============

(Pillow: Image.open(...).convert('RGB') to numpy; on 500x375, decode_square's time is mostly
Pillow's resampler, 1.4 ms.) All three wrap libjpeg-turbo with the accurate integer IDCT and
fancy upsampling, so their pixels are identical (a test checks simplejpeg against Pillow); they
differ in per-call overhead. simplejpeg is used for plain (YCbCr or grayscale) JPEGs when
installed; everything else, and every JPEG where simplejpeg is absent, goes through Pillow.
OpenCV's reduced decode + INTER_AREA was as fast as decode_square but off by max 25, mean 3.2.

Against TensorFlow (a one-off comparison script, run by hand while TF was still installed): PNG/BMP/GIF and
16-bit PNGs decode identically; JPEGs are identical to tf.io.decode_jpeg(dct_method=
'INTEGER_ACCURATE') and differ from tf.io.decode_image (TF's fast IDCT) by max 4-8, mean ~1;
channels=1 differs by <= 1 on PNGs (TF rounds its luma otherwise) and max ~7, mean 0.08 on colour
JPEGs (TF returns libjpeg's own Y). resize_small equals TF's resize+round (max 1, on < 0.05% of
pixels). The old TF decode_square cropped the square before resizing, which shifts the sampling
grid by a fraction of a pixel: it differed from its own resize_small path by mean 1.4-8.7.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

try:  # Optional: a small wheel that decodes small JPEGs faster than Pillow (see the table).
  import simplejpeg
except ImportError:  # pragma: no cover - depends on the environment
  simplejpeg = None

# decode_square vs resize_small(decode(...)): largest |difference| of any pixel, and of the mean.
SQUARE_TOLERANCE = 8
SQUARE_MEAN_TOLERANCE = 1.0

_JPEG_MAGIC = b"\xff\xd8\xff"
_ORIENTATION = 0x0112
# EXIF orientation -> the numpy ops that undo it, applied in order (rot90 turns anticlockwise).
_ORIENT_OPS = {
    2: ("fliplr",), 3: ("rot180",), 4: ("flipud",), 5: ("transpose",),
    6: ("rot270",), 7: ("transverse",), 8: ("rot90",),
}


class ImageError(ValueError):
  """Image bytes that cannot be decoded; the message names the file and what is wrong."""


def decode(data: bytes, channels: int, *, path: str | None = None) -> np.ndarray:
  """Encoded image bytes -> uint8 (H, W, channels); see the module docstring for conversions."""
  return _decode(data, channels, path, min_side=0)


def resize_shorter(image: np.ndarray, size: int) -> np.ndarray:
  """Shorter side to `size`, aspect kept (the longer side rounded, at least `size`), exact.

  Antialiased bilinear in float32, rounded half-to-even and clipped back to uint8: the numbers
  of tf.image.resize(method='bilinear', antialias=True) followed by round and clip.
  The input comes back unchanged when it already has that size.
  """
  nh, nw = _shorter_side_shape(image.shape[0], image.shape[1], size)
  if (nh, nw) == image.shape[:2]:
    return image
  out = np.empty((nh, nw, image.shape[2]), np.uint8)
  for c in range(image.shape[2]):
    plane = Image.fromarray(np.ascontiguousarray(image[:, :, c], np.float32), mode="F")
    resized = np.asarray(plane.resize((nw, nh), Image.Resampling.BILINEAR))
    out[:, :, c] = np.clip(np.round(resized), 0, 255)
  return out


def center_square(image: np.ndarray, size: int) -> np.ndarray:
  """The central size x size window (top = (H - size) // 2, likewise left)."""
  top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
  return image[top:top + size, left:left + size]


def resize_small(image: np.ndarray, size: int) -> np.ndarray:
  """Shorter side to `size` (exact antialiased bilinear, see `resize_shorter`), then the centre square."""
  _check_image(image)
  return center_square(resize_shorter(image, size), size)


def decode_square(data: bytes, channels: int, size: int, *, path: str | None = None) -> np.ndarray:
  """`resize_small(decode(data), size)` within `SQUARE_TOLERANCE`, decoding JPEGs at reduced scale."""
  image = _decode(data, channels, path, min_side=2 * size)
  nh, nw = _shorter_side_shape(image.shape[0], image.shape[1], size)
  if (nh, nw) != image.shape[:2]:
    if channels == 1:
      pil = Image.fromarray(image[:, :, 0], mode="L")
    else:
      pil = Image.fromarray(image, mode="RGB")
    image = np.asarray(pil.resize((nw, nh), Image.Resampling.BILINEAR))
    if channels == 1:
      image = image[:, :, None]
  return np.ascontiguousarray(center_square(image, size))


def _shorter_side_shape(h: int, w: int, size: int) -> tuple[int, int]:
  if h < 1 or w < 1:
    raise ValueError(f"image of shape {h}x{w} has no pixels")
  scale = size / min(h, w)
  return max(size, round(h * scale)), max(size, round(w * scale))


def _check_image(image: np.ndarray) -> None:
  if image.ndim != 3 or image.dtype != np.uint8:
    raise ValueError(f"expected a uint8 (H, W, C) image, got {image.dtype} of shape {image.shape}")


def _where(path: str | None) -> str:
  return f"{path}: " if path else ""


def _decode(data: bytes, channels: int, path: str | None, min_side: int) -> np.ndarray:
  if channels not in (1, 3):
    raise ValueError(f"channels must be 1 or 3, got {channels}")
  if not data:
    raise ImageError(f"{_where(path)}empty file (0 bytes)")
  data = bytes(data) if not isinstance(data, bytes) else data
  if simplejpeg is not None and data.startswith(_JPEG_MAGIC):
    image = _decode_jpeg_turbo(data, channels, path, min_side)
    if image is not None:
      return image
  return _decode_pillow(data, channels, path, min_side)


def _decode_jpeg_turbo(data: bytes, channels: int, path: str | None,
                       min_side: int) -> np.ndarray | None:
  """A plain JPEG through simplejpeg, or None to leave it to Pillow (CMYK, odd headers)."""
  try:
    h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
  except ValueError:
    return None  # Pillow decides whether it is a JPEG it can read, and says why not.
  if colorspace not in ("YCbCr", "Gray"):
    return None
  factor = _dct_factor(min(h, w), min_side)
  try:
    if channels == 3 or colorspace == "Gray":
      image = simplejpeg.decode_jpeg(
          data, "RGB" if channels == 3 else "GRAY",
          min_height=-(-h // factor), min_width=-(-w // factor))
    else:  # 601 luma of the decoded RGB, as Pillow's 'L' (libjpeg's Y channel rounds differently).
      rgb = simplejpeg.decode_jpeg(data, "RGB", min_height=-(-h // factor),
                                   min_width=-(-w // factor))
      image = np.asarray(Image.fromarray(rgb, mode="RGB").convert("L"))
  except ValueError:
    # strict mode also refuses files libjpeg only warns about (extraneous bytes before a
    # marker), which Pillow and TensorFlow decode; Pillow decides, and words the error.
    return None
  if image.ndim == 2:
    image = image[:, :, None]
  orientation = _exif_orientation(data)
  if orientation in _ORIENT_OPS:
    image = _orient(image, orientation)
  return np.ascontiguousarray(image)


def _dct_factor(shorter: int, min_side: int) -> int:
  """Largest of 8, 4, 2 that keeps the shorter side >= min_side; 1 when none does (or no limit)."""
  if min_side <= 0:
    return 1
  for factor in (8, 4, 2):
    if -(-shorter // factor) >= min_side:
      return factor
  return 1


def _exif_orientation(data: bytes) -> int:
  # Most JPEGs have no EXIF block at all; only those pay for Pillow's header parse.
  if b"Exif" not in data[:65536]:
    return 1
  try:
    with Image.open(io.BytesIO(data)) as im:
      return int(im.getexif().get(_ORIENTATION, 1))
  except Exception:  # a broken EXIF block does not make the pixels unusable
    return 1


def _orient(image: np.ndarray, orientation: int) -> np.ndarray:
  for op in _ORIENT_OPS[orientation]:
    if op == "fliplr":
      image = image[:, ::-1]
    elif op == "flipud":
      image = image[::-1]
    elif op == "rot180":
      image = image[::-1, ::-1]
    elif op == "rot90":
      image = np.rot90(image, 1)
    elif op == "rot270":
      image = np.rot90(image, -1)
    elif op == "transpose":
      image = image.transpose(1, 0, 2)
    elif op == "transverse":
      image = np.rot90(image, 2).transpose(1, 0, 2)
  return image


def _decode_pillow(data: bytes, channels: int, path: str | None, min_side: int) -> np.ndarray:
  try:
    with Image.open(io.BytesIO(data)) as im:
      if min_side and im.format == "JPEG":
        factor = _dct_factor(min(im.size), min_side)
        if factor > 1:
          # draft picks the largest scale whose size is >= the request; floor keeps it `factor`.
          im.draft(im.mode, (im.size[0] // factor, im.size[1] // factor))
      im.load()
      im = ImageOps.exif_transpose(im)
      return _to_channels(im, channels, path)
  except ImageError:
    raise
  except Image.UnidentifiedImageError:
    raise ImageError(f"{_where(path)}not an image Pillow can read (JPEG/PNG/BMP/GIF/WebP)") from None
  except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
    raise ImageError(f"{_where(path)}corrupt or truncated image ({e})") from None


def _to_channels(im: Image.Image, channels: int, path: str | None) -> np.ndarray:
  mode = im.mode
  if mode.startswith("I;16") or mode == "I":
    # 16-bit (or 32-bit integer) gray: keep the high byte of the 16-bit range.
    wide = np.asarray(im).astype(np.int64)
    im = Image.fromarray((np.clip(wide, 0, 65535) >> 8).astype(np.uint8), mode="L")
  elif mode == "F":
    raise ImageError(f"{_where(path)}floating-point image; convert it to 8 bits first")
  elif mode == "PA" or (mode == "P" and "transparency" in im.info):
    im = im.convert("RGBA")  # Pillow converts palettes with transparency only through RGBA
  if channels == 1:
    if im.mode not in ("L", "1", "LA", "RGB", "RGBA", "RGBX"):
      im = im.convert("RGB")  # CMYK, YCbCr, palettes: to RGB first, then the 601 luma
    out = np.asarray(im if im.mode == "L" else im.convert("L"))[:, :, None]
  else:
    rgb = im if im.mode == "RGB" else im.convert("RGB")
    out = np.asarray(rgb)
  if out.size == 0:
    raise ImageError(f"{_where(path)}image has no pixels ({im.size[0]}x{im.size[1]})")
  return np.ascontiguousarray(out, np.uint8)
