"""The paper's preprocessing ops on one example, in NumPy: each a small function a switch turns on.

Random ops take their random numbers as arguments (from `draw_augmentation`), which keeps them
pure and testable and the randomness a function of the example's generator only.
The paper's mean-image subtraction is `crop` applied to the mean image with the example's own
window and flip, subtracted from the crop: the same numbers as subtracting the whole mean image
before cropping, at a fraction of the cost. Pixel values stay in the 0..255 scale the paper used.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """One training example's random numbers."""
  offset: tuple[int, int]  # (top, left) of the crop window
  flip: bool
  alphas: np.ndarray  # (C,) float32: N(0, pca_noise^2) weights of the colour components


def draw_augmentation(rng: np.random.Generator, image_size: int, crop_size: int, channels: int,
                      *, random_crop: bool, flip: bool, pca_noise: float) -> Augmentation:
  """Crop corner uniform over all image_size - crop_size + 1 positions per axis, a fair coin
  for the mirror, and the PCA alphas.

  Every number is drawn whatever the switches say, so turning one augmentation off leaves the
  others' draws (and so an ablation's other randomness) unchanged.
  """
  span = image_size - crop_size
  offset = rng.integers(0, span + 1, size=2)
  mirror = rng.random() < 0.5
  alphas = rng.standard_normal(channels).astype(np.float32) * np.float32(pca_noise)
  if not random_crop:
    offset = (span // 2, span // 2)
  return Augmentation(offset=(int(offset[0]), int(offset[1])), flip=bool(mirror and flip),
                      alphas=alphas)


def crop(image: np.ndarray, offset, size: int, flip: bool = False) -> np.ndarray:
  """The size x size window at `offset` (top, left) of an (H, W, C) image, mirrored if `flip`."""
  top, left = offset
  window = image[top:top + size, left:left + size]
  return window[:, ::-1] if flip else window


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
  top = (image.shape[0] - size) // 2
  left = (image.shape[1] - size) // 2
  return image[top:top + size, left:left + size]


def ten_crop(image: np.ndarray, size: int) -> np.ndarray:
  """The paper's test views of one image, (10, size, size, C).

  Order: top-left, top-right, bottom-left, bottom-right, centre, then the same five mirrored.
  """
  h, w = image.shape[0], image.shape[1]
  corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size),
             ((h - size) // 2, (w - size) // 2)]
  views = [image[t:t + size, l:l + size] for t, l in corners]
  views += [v[:, ::-1] for v in views]
  return np.stack(views)


def pca_shift(alphas: np.ndarray, eigvecs: np.ndarray, eigvals: np.ndarray) -> np.ndarray:
  """The colour shift `pca_noise` adds to every pixel, (C,) float32."""
  return (eigvecs @ (alphas * np.sqrt(eigvals))).astype(np.float32)


def pca_noise(image: np.ndarray, alphas: np.ndarray, eigvecs: np.ndarray,
              eigvals: np.ndarray) -> np.ndarray:
  """Adds sum_i alpha_i * sqrt(lambda_i) * p_i to every pixel (paper, section 4.1).

  The paper writes lambda_i, the eigenvalue; that is a variance (intensity^2), and used
  literally in 0..255 units (~10^4 on ImageNet) it would shift colours by thousands. Its
  cuda-convnet code scales by the standard deviation along p_i, which makes the noise
  covariance exactly pca_noise^2 times the data's colour covariance. `eigvecs` holds p_i as
  columns.
  """
  return image + pca_shift(alphas, eigvecs, eigvals)


def channel_normalize(image: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
  return (image - mean) / std
