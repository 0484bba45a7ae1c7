"""The preprocessing ops against NumPy: crops, flips, PCA noise, ten-crop."""

import numpy as np

from alexnet_jax.data import ops


def _draw(n, size, crop, channels=3, **kw):
  """n examples' random numbers, each from its own generator as the pipeline does."""
  kw = {"random_crop": True, "flip": True, "pca_noise": 0.1, **kw}
  draws = [ops.draw_augmentation(np.random.default_rng([7, i]), size, crop, channels, **kw)
           for i in range(n)]
  return {"offset": np.array([d.offset for d in draws]), "flip": np.array([d.flip for d in draws]),
          "alphas": np.stack([d.alphas for d in draws])}


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
        got = ops.crop(image, (t, l), 7, f)
        want = image[t:t + 7, l:l + 7]
        np.testing.assert_array_equal(got, want[:, ::-1] if f else want)
  np.testing.assert_array_equal(ops.crop(image, (1, 2), 7), image[1:8, 2:9])


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
  vals, vecs = vals.astype(np.float32), vecs.astype(np.float32)
  sigma = 0.1
  alphas = _draw(40000, 4, 4, pca_noise=sigma)["alphas"]
  shifts = np.stack([ops.pca_noise(np.zeros((1, 1, 3), np.float32), a, vecs, vals)[0, 0]
                     for a in alphas])
  scale = sigma**2 * np.abs(cov).max()
  np.testing.assert_allclose(shifts.mean(0), 0, atol=0.05 * np.sqrt(scale))
  np.testing.assert_allclose(np.cov(shifts.T), sigma**2 * cov, rtol=0.05, atol=0.03 * scale)
  # The same shift on every pixel of an image.
  image = ops.pca_noise(np.zeros((3, 3, 3), np.float32), alphas[0], vecs, vals)
  assert np.allclose(image, image[:1, :1])


def test_pca_noise_one_channel_uses_its_std():
  alphas = _draw(20000, 4, 4, channels=1, pca_noise=0.1)["alphas"]
  out = np.array([ops.pca_noise(np.zeros((1, 1), np.float32), a, np.ones((1, 1)),
                                np.array([400.0]))[0, 0] for a in alphas])
  assert abs(out.std() - 0.1 * 20.0) < 0.05


def test_ten_crop_returns_corners_center_and_mirrors():
  x = np.random.default_rng(1).integers(0, 256, (9, 11, 3)).astype(np.float32)
  got = ops.ten_crop(x, 5)
  want = [x[:5, :5], x[:5, 6:], x[4:, :5], x[4:, 6:], x[2:7, 3:8]]
  want += [v[:, ::-1] for v in want]
  np.testing.assert_array_equal(got, np.stack(want))


def test_center_crop():
  x = np.arange(8 * 8).reshape(8, 8, 1).astype(np.float32)
  np.testing.assert_array_equal(ops.center_crop(x, 4), x[2:6, 2:6])


def test_switching_one_augmentation_off_keeps_the_others_draws():
  on = _draw(50, 32, 28)
  no_flip = _draw(50, 32, 28, flip=False)
  no_crop = _draw(50, 32, 28, random_crop=False)
  np.testing.assert_array_equal(on["offset"], no_flip["offset"])
  np.testing.assert_array_equal(on["alphas"], no_crop["alphas"])
  np.testing.assert_array_equal(on["flip"], no_crop["flip"])
