"""Image decoding and the shorter-side resize, against formulas and independent code paths."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from alexnet_jax.data import decode as dec


def encode(array: np.ndarray, fmt: str, **kwargs) -> bytes:
  buf = io.BytesIO()
  mode = "L" if array.ndim == 2 else None
  Image.fromarray(array, mode=mode).save(buf, fmt, **kwargs)
  return buf.getvalue()


def photo_like(h: int, w: int, seed: int) -> np.ndarray:
  """Smooth structure plus mild noise: what a photograph looks like to a resampler."""
  rng = np.random.default_rng(seed)
  img = np.zeros((h, w, 3), np.float32)
  for cell, amp in ((48, 80.0), (8, 30.0)):
    coarse = rng.normal(size=(h // cell + 2, w // cell + 2, 3)).astype(np.float32)
    for c in range(3):
      img[:, :, c] += amp * np.asarray(
          Image.fromarray(coarse[:, :, c], mode="F").resize((w, h), Image.Resampling.BICUBIC))
  img += rng.normal(scale=4.0, size=img.shape)
  return np.clip(img + 128, 0, 255).astype(np.uint8)


@pytest.fixture(params=["simplejpeg", "pillow"])
def backend(request, monkeypatch):
  """Runs a test with simplejpeg's JPEG path and again with Pillow alone (machines without it)."""
  if request.param == "pillow":
    monkeypatch.setattr(dec, "simplejpeg", None)
  elif dec.simplejpeg is None:
    pytest.fail("simplejpeg is not installed; the fast JPEG path goes untested")
  return request.param


def luma601(rgb: np.ndarray) -> np.ndarray:
  return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


# --- decode -----------------------------------------------------------------------------------

@pytest.mark.parametrize("colour", [(200, 30, 90), (0, 0, 0), (255, 255, 255), (17, 140, 251)])
@pytest.mark.parametrize("subsampling", [0, 2])  # 4:4:4 and 4:2:0
def test_solid_jpeg_decodes_to_its_colour(backend, colour, subsampling):
  data = encode(np.full((40, 56, 3), colour, np.uint8), "JPEG", quality=95, subsampling=subsampling)
  rgb = dec.decode(data, 3)
  assert rgb.shape == (40, 56, 3) and rgb.dtype == np.uint8
  assert np.abs(rgb.astype(int) - colour).max() <= 3
  gray = dec.decode(data, 1)
  assert gray.shape == (40, 56, 1)
  assert np.abs(gray[..., 0] - luma601(np.array(colour, float))).max() <= 3.5


def test_png_bmp_webp_decode_exactly():
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
  for fmt, kwargs in (("PNG", {}), ("BMP", {}), ("WEBP", {"lossless": True})):
    np.testing.assert_array_equal(dec.decode(encode(rgb, fmt, **kwargs), 3), rgb, err_msg=fmt)


def test_gray_to_rgb_repeats_and_rgb_to_gray_is_601_luma():
  rng = np.random.default_rng(1)
  gray = rng.integers(0, 256, (9, 11), dtype=np.uint8)
  np.testing.assert_array_equal(dec.decode(encode(gray, "PNG"), 3), np.repeat(gray[..., None], 3, 2))
  np.testing.assert_array_equal(dec.decode(encode(gray, "PNG"), 1)[..., 0], gray)
  rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
  out = dec.decode(encode(rgb, "PNG"), 1)[..., 0].astype(float)
  assert np.abs(out - luma601(rgb.astype(float))).max() <= 0.5 + 1e-6  # rounded luma


def test_gif_uses_first_frame():
  frames = [Image.fromarray(np.full((8, 8, 3), c, np.uint8)) for c in ((255, 0, 0), (0, 0, 255))]
  buf = io.BytesIO()
  frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
  np.testing.assert_array_equal(dec.decode(buf.getvalue(), 3), np.full((8, 8, 3), (255, 0, 0)))


def test_alpha_is_dropped_keeping_stored_colour():
  rng = np.random.default_rng(2)
  rgba = rng.integers(0, 256, (7, 5, 4), dtype=np.uint8)
  np.testing.assert_array_equal(dec.decode(encode(rgba, "PNG"), 3), rgba[..., :3])
  la = Image.fromarray(rgba[..., :2].copy(), mode="LA")
  buf = io.BytesIO()
  la.save(buf, "PNG")
  np.testing.assert_array_equal(dec.decode(buf.getvalue(), 1)[..., 0], rgba[..., 0])


def test_palette_with_transparency_maps_through_the_palette():
  palette = np.array([[10, 20, 30], [200, 100, 0], [5, 250, 128]], np.uint8)
  index = np.random.default_rng(3).integers(0, 3, (6, 9), dtype=np.uint8)
  im = Image.fromarray(index, mode="P")
  im.putpalette(palette.ravel().tolist())
  buf = io.BytesIO()
  im.save(buf, "PNG", transparency=1)
  np.testing.assert_array_equal(dec.decode(buf.getvalue(), 3), palette[index])


def test_16_bit_keeps_the_high_byte():
  rng = np.random.default_rng(4)
  gray16 = rng.integers(0, 65536, (5, 6), dtype=np.uint16)
  buf = io.BytesIO()
  Image.fromarray(gray16).save(buf, "PNG")
  np.testing.assert_array_equal(dec.decode(buf.getvalue(), 1)[..., 0], gray16 >> 8)
  np.testing.assert_array_equal(dec.decode(buf.getvalue(), 3),
                                np.repeat((gray16 >> 8)[..., None], 3, 2).astype(np.uint8))
  rgb16 = rng.integers(0, 65536, (5, 6, 3), dtype=np.uint16)
  np.testing.assert_array_equal(dec.decode(_png16_rgb(rgb16), 3), (rgb16 >> 8).astype(np.uint8))


def _png16_rgb(rgb16: np.ndarray) -> bytes:
  """A 16-bit RGB PNG written from the PNG spec (Pillow cannot write one): IHDR with bit
  depth 16 and colour type 2, rows of big-endian samples each behind filter byte 0."""
  h, w, _ = rgb16.shape
  raw = b"".join(b"\0" + rgb16[y].astype(">u2").tobytes() for y in range(h))

  def chunk(kind, body):
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
          + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_cmyk_jpeg_converts_to_rgb(backend):
  colour = (200, 100, 50)
  cmyk = Image.fromarray(np.full((16, 16, 3), colour, np.uint8)).convert("CMYK")
  buf = io.BytesIO()
  cmyk.save(buf, "JPEG", quality=95)
  out = dec.decode(buf.getvalue(), 3)
  assert out.shape == (16, 16, 3)
  assert np.abs(out.astype(int) - colour).max() <= 3


def _with_orientation(array: np.ndarray, fmt: str, orientation: int) -> bytes:
  exif = Image.Exif()
  exif[0x0112] = orientation
  buf = io.BytesIO()
  kwargs = {"quality": 95, "subsampling": 0} if fmt == "JPEG" else {}
  Image.fromarray(array).save(buf, fmt, exif=exif.tobytes(), **kwargs)
  return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_turns_the_image_upright(backend, fmt):
  # A wide image whose stored top rows are red: where the red ends up says how it was turned.
  stored = np.zeros((32, 48, 3), np.uint8)
  stored[:8] = (255, 0, 0)
  red_at = {1: "top", 2: "top", 3: "bottom", 4: "bottom", 5: "left", 6: "right", 7: "right",
            8: "left"}
  for orientation, side in red_at.items():
    out = dec.decode(_with_orientation(stored, fmt, orientation), 3).astype(int)
    assert out.shape == ((32, 48, 3) if orientation <= 4 else (48, 32, 3)), orientation
    red = out[..., 0] > 128
    edge = {"top": red[:8], "bottom": red[-8:], "left": red[:, :8], "right": red[:, -8:]}[side]
    assert edge.all() and red.sum() == edge.size, (orientation, side)


def test_exif_orientation_matches_pillow_on_an_asymmetric_image(backend):
  stored = photo_like(24, 40, 5)
  for orientation in range(1, 9):
    data = _with_orientation(stored, "JPEG", orientation)
    from PIL import ImageOps
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    np.testing.assert_array_equal(dec.decode(data, 3), expected, err_msg=str(orientation))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_tiny_images(backend, fmt):
  pixel = np.array([[[9, 99, 199]]], np.uint8)
  out = dec.decode(encode(pixel, fmt, **({"quality": 100} if fmt == "JPEG" else {})), 3)
  assert out.shape == (1, 1, 3) and np.abs(out.astype(int) - pixel).max() <= 3
  np.testing.assert_array_equal(dec.resize_small(pixel, 5), np.broadcast_to(pixel, (5, 5, 3)))


def test_fast_jpeg_path_equals_pillow(monkeypatch):
  if dec.simplejpeg is None:
    pytest.fail("simplejpeg is not installed")
  image = photo_like(75, 101, 6)
  cases = [encode(image, "JPEG", quality=90),
           encode(image, "JPEG", quality=90, subsampling=0),
           encode(image, "JPEG", quality=90, progressive=True),
           encode(image[..., 0], "JPEG", quality=90)]
  fast = [dec.decode(d, c) for d in cases for c in (1, 3)]
  monkeypatch.setattr(dec, "simplejpeg", None)
  slow = [dec.decode(d, c) for d in cases for c in (1, 3)]
  for i, (a, b) in enumerate(zip(fast, slow)):
    np.testing.assert_array_equal(a, b, err_msg=str(i))


def test_jpeg_with_warnings_only_decodes_like_the_clean_file(backend):
  # Stray bytes before a marker: libjpeg warns and decodes the same pixels (so do Pillow and
  # TensorFlow); simplejpeg's strict mode would call the file corrupt.
  clean = encode(photo_like(40, 48, 12), "JPEG", quality=90)
  at = clean.index(b"\xff\xda")
  noisy = clean[:at] + b"\x12\x34" + clean[at:]
  np.testing.assert_array_equal(dec.decode(noisy, 3), dec.decode(clean, 3))


@pytest.mark.parametrize("name,data", [
    ("empty", b""),
    ("text", b"label,file\n1,a.jpg\n"),
    ("corrupt_jpeg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4),
    ("truncated_jpeg", None),
    ("truncated_png", None),
])
def test_bad_data_raises_image_error_naming_the_file(backend, name, data):
  if name.startswith("truncated"):
    fmt = name.split("_")[1].upper()
    whole = encode(photo_like(64, 64, 7), fmt)
    data = whole[: len(whole) // 2]
  path = f"/data/{name}.jpg"
  with pytest.raises(dec.ImageError, match=path):
    dec.decode(data, 3, path=path)
  with pytest.raises(dec.ImageError, match=path):
    dec.decode_square(data, 3, 8, path=path)
  with pytest.raises(dec.ImageError):  # and without a path
    dec.decode(data, 3)


# --- resize -----------------------------------------------------------------------------------

def reference_resize(image: np.ndarray, nh: int, nw: int) -> np.ndarray:
  """Antialiased bilinear from its definition: dense weight matrices, float64.

  Output pixel i samples the input at (i + 0.5) * in/out - 0.5 with a triangle kernel whose
  radius is max(in/out, 1) pixels; weights are renormalised to sum to one.
  """
  def weights(n_in: int, n_out: int) -> np.ndarray:
    scale = n_in / n_out
    radius = max(scale, 1.0)
    centre = (np.arange(n_out) + 0.5) * scale
    distance = np.abs(np.arange(n_in)[None, :] + 0.5 - centre[:, None]) / radius
    w = np.maximum(0.0, 1.0 - distance)
    return w / w.sum(1, keepdims=True)
  wh, ww = weights(image.shape[0], nh), weights(image.shape[1], nw)
  rows = np.tensordot(wh, image.astype(np.float64), axes=(1, 0))   # (nh, w, c)
  out = np.tensordot(rows, ww, axes=(1, 1)).transpose(0, 2, 1)     # (nh, nw, c)
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape,size,expected", [
    ((375, 500, 3), 256, (256, 341)),   # 500 * 256 / 375 = 341.33
    ((500, 333, 3), 256, (384, 256)),   # 500 * 256 / 333 = 384.38
    ((100, 150, 3), 256, (256, 384)),   # upscaling
    ((61, 47, 1), 32, (42, 32)),        # one channel; 61 * 32 / 47 = 41.53
    ((300, 300, 3), 227, (227, 227)),
])
def test_resize_shorter_matches_the_formula(shape, size, expected):
  image = np.random.default_rng(8).integers(0, 256, shape, dtype=np.uint8)
  out = dec.resize_shorter(image, size)
  assert out.shape[:2] == expected and out.dtype == np.uint8
  ref = reference_resize(image, *expected)
  diff = np.abs(out.astype(int) - ref)
  # float32 against float64: only a value within rounding of .5 may land on the other side
  assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_resize_small_takes_the_centre_square():
  image = np.random.default_rng(9).integers(0, 256, (375, 500, 3), dtype=np.uint8)
  out = dec.resize_small(image, 256)
  ref = reference_resize(image, 256, 341)
  left = (341 - 256) // 2
  assert out.shape == (256, 256, 3)
  assert np.abs(out.astype(int) - ref[:, left:left + 256]).max() <= 1
  same = image[:256, :300]
  np.testing.assert_array_equal(dec.resize_small(same, 256), same[:, 22:278])  # only cropped


# --- decode_square ----------------------------------------------------------------------------

@pytest.mark.parametrize("hw", [(1500, 2000), (1100, 900), (450, 600), (256, 341)])
@pytest.mark.parametrize("channels", [3, 1])
def test_decode_square_stays_near_the_exact_path(backend, hw, channels):
  data = encode(photo_like(*hw, seed=hw[0]), "JPEG", quality=90)
  fast = dec.decode_square(data, channels, 256, path="x.jpg")
  exact = dec.resize_small(dec.decode(data, channels), 256)
  assert fast.shape == exact.shape == (256, 256, channels)
  diff = np.abs(fast.astype(int) - exact)
  assert diff.max() <= dec.SQUARE_TOLERANCE
  assert diff.mean() <= dec.SQUARE_MEAN_TOLERANCE


def test_decode_square_is_the_same_with_and_without_simplejpeg(monkeypatch):
  data = encode(photo_like(1200, 1700, 10), "JPEG", quality=90)
  fast = dec.decode_square(data, 3, 256)
  monkeypatch.setattr(dec, "simplejpeg", None)
  np.testing.assert_array_equal(dec.decode_square(data, 3, 256), fast)


def test_decode_square_of_non_jpeg_is_exact_up_to_8_bit_resampling():
  image = photo_like(300, 420, 11)
  out = dec.decode_square(encode(image, "PNG"), 3, 128)
  assert np.abs(out.astype(int) - dec.resize_small(image, 128)).max() <= 1
