"""The preprocessing ops against NumPy: crops, flips, PCA noise, ten-crop, resizing."""

import numpy as np
import pytest
import tensorflow as tf

from alexnet_jax.data import ops


def _draw(n, size, crop, channels=3, **kw):
  """n examples' random numbers, each from its own seed as the pipeline does."""
  kw = {"random_crop": True, "flip": True, "pca_noise": 0.1, **kw}
  seeds = tf.stack([tf.fill([n], tf.constant(7, tf.int64)), tf.range(n, dtype=tf.int64)], 1)
  spec = {"offset": tf.TensorSpec([2], tf.int32), "flip": tf.TensorSpec([], tf.bool),
          "alphas": tf.TensorSpec([channels], tf.float32)}
  draw = tf.function(lambda s: tf.map_fn(  # traced: an eager map_fn runs in Python
      lambda x: ops.draw_augmentation(x, size, crop, channels, **kw), s, fn_output_signature=spec))
  r = draw(seeds)
  return {k: v.numpy() for k, v in r.items()}


def test_random_crops_stay_inside_and_reach_every_position():
  size, crop = 8, 5
  offsets = _draw(4000, size, crop)["offset"]
  assert offsets.min() >= 0 and offsets.max() <= size - crop
  positions = {tuple(o) for o in offsets}
  assert positions == {(t, l) for t in range(size - crop + 1) for l in range(size - crop + 1)}


def test_crop_and_flip_match_numpy_slicing():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (10, 12, 3)).astype(np.float32)
  for t in range(4):
    for l in range(6):
      for f in (False, True):
        got = ops.crop(tf.constant(image), tf.constant([t, l]), 7, tf.constant(f)).numpy()
        want = image[t:t + 7, l:l + 7]
        np.testing.assert_array_equal(got, want[:, ::-1] if f else want)
  np.testing.assert_array_equal(ops.crop(tf.constant(image), tf.constant([1, 2]), 7).numpy(),
                                image[1:8, 2:9])


def test_flips_happen_about_half_the_time():
  flips = _draw(10000, 8, 5)["flip"]
  # Binomial(10000, 0.5) has std 50; 5 std either side.
  assert abs(flips.sum() - 5000) < 250
  assert not _draw(100, 8, 5, flip=False)["flip"].any()


def test_no_random_crop_means_center():
  assert (_draw(10, 32, 28, random_crop=False)["offset"] == 2).all()


def test_pca_noise_covariance_is_sigma_squared_times_data_covariance():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(3, 3))
  cov = a @ a.T * 100
  vals, vecs = np.linalg.eigh(cov)
  vals, vecs = tf.constant(vals, tf.float32), tf.constant(vecs, tf.float32)
  sigma = 0.1
  alphas = _draw(40000, 4, 4, pca_noise=sigma)["alphas"]
  shifts = tf.function(lambda a: tf.map_fn(
      lambda al: ops.pca_noise(tf.zeros([1, 1, 3]), al, vecs, vals)[0, 0], a))(alphas).numpy()
  scale = sigma**2 * np.abs(cov).max()
  np.testing.assert_allclose(shifts.mean(0), 0, atol=0.05 * np.sqrt(scale))
  np.testing.assert_allclose(np.cov(shifts.T), sigma**2 * cov, rtol=0.05, atol=0.03 * scale)
  # The same shift on every pixel of an image.
  image = ops.pca_noise(tf.zeros([3, 3, 3]), tf.constant(alphas[0]), vecs, vals).numpy()
  assert np.allclose(image, image[:1, :1])


def test_pca_noise_one_channel_uses_its_std():
  alphas = _draw(20000, 4, 4, channels=1, pca_noise=0.1)["alphas"]
  out = ops.pca_noise(tf.zeros([20000, 1]), tf.constant(alphas), tf.ones([1, 1]),
                      tf.constant([400.0])).numpy().ravel()
  assert abs(out.std() - 0.1 * 20.0) < 0.05


def test_ten_crop_returns_corners_center_and_mirrors():
  x = np.random.default_rng(1).integers(0, 256, (9, 11, 3)).astype(np.float32)
  got = ops.ten_crop(tf.constant(x), 5).numpy()
  want = [x[:5, :5], x[:5, 6:], x[4:, :5], x[4:, 6:], x[2:7, 3:8]]
  want += [v[:, ::-1] for v in want]
  np.testing.assert_array_equal(got, np.stack(want))


def test_center_crop():
  x = np.arange(8 * 8).reshape(8, 8, 1).astype(np.float32)
  np.testing.assert_array_equal(ops.center_crop(tf.constant(x), 4).numpy(), x[2:6, 2:6])


@pytest.mark.parametrize("shape", [(28, 28, 1), (40, 60, 3), (300, 200, 3), (32, 32, 3)])
def test_resize_small_gives_square_uint8(shape):
  image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
  out = ops.resize_small(tf.constant(image), 32)
  assert out.shape == (32, 32, shape[2]) and out.dtype == tf.uint8
  if shape[:2] == (32, 32):
    np.testing.assert_array_equal(out.numpy(), image)


def test_resize_small_keeps_the_center():
  # A wide image: only its central square survives, so a left/right stripe disappears.
  image = np.full((32, 64, 1), 100, np.uint8)
  image[:, :8] = 0
  out = ops.resize_small(tf.constant(image), 32).numpy()
  assert (out == 100).all()


def test_decode_png_roundtrip():
  image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
  encoded = tf.io.encode_png(image)
  np.testing.assert_array_equal(ops.decode(encoded, 3).numpy(), image)


def test_decode_square_matches_resize_then_center_crop():
  y, x = np.mgrid[0:300, 0:400]
  image = np.stack([y * 0.8, x * 0.6, (x + y) * 0.35], -1).astype(np.uint8)  # smooth ramps
  encoded = tf.io.encode_jpeg(image, quality=95)
  fast = ops.decode_square(encoded, 3, 64).numpy().astype(float)
  slow = ops.resize_small(ops.decode(encoded, 3), 64).numpy().astype(float)
  assert fast.shape == slow.shape == (64, 64, 3)
  # resize_small rounds the resized width (85.33 -> 85), shifting its crop by 2/3 of an output
  # pixel, ~3 input pixels: at these ramps (< 1 level per pixel) that is 3 levels at most.
  assert np.abs(fast - slow).max() <= 4
  png = tf.io.encode_png(image)
  np.testing.assert_array_equal(ops.decode_square(png, 3, 64), ops.resize_small(ops.decode(png, 3), 64))
