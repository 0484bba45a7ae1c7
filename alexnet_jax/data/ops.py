"""Preprocessing ops, each one small TF function that a config switch turns on or off.

Per-example ops (`decode`, `resize_small`) bring every image to image_size x image_size
uint8 so that all later ops run on whole batches, vectorised. Random ops take their random
numbers as arguments (from `draw_augmentation`), which keeps them pure and testable, and
keeps the randomness a function of (seed, epoch, position) only.
Pixel values stay in the 0..255 scale the paper used.
"""

from __future__ import annotations

import tensorflow as tf


def decode(encoded: tf.Tensor, channels: int) -> tf.Tensor:
  """JPEG/PNG/BMP/GIF bytes -> uint8 (H, W, channels)."""
  image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
  image.set_shape([None, None, channels])
  return image


def resize_small(image: tf.Tensor, size: int) -> tf.Tensor:
  """Shorter side to `size` (bilinear, antialiased), then the central size x size square.

  The paper's 256x256 images; results are rounded back to uint8 so caches stay compact.
  """
  shape = tf.shape(image)
  h, w = shape[0], shape[1]
  scale = tf.cast(size, tf.float32) / tf.cast(tf.minimum(h, w), tf.float32)
  nh = tf.maximum(size, tf.cast(tf.round(tf.cast(h, tf.float32) * scale), tf.int32))
  nw = tf.maximum(size, tf.cast(tf.round(tf.cast(w, tf.float32) * scale), tf.int32))

  def resized():
    r = tf.image.resize(image, [nh, nw], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(r), 0, 255), tf.uint8)

  image = tf.cond(tf.logical_and(nh == h, nw == w), lambda: image, resized)
  top, left = (nh - size) // 2, (nw - size) // 2
  image = image[top:top + size, left:left + size]
  return tf.ensure_shape(image, [size, size, image.shape[-1]])


def draw_augmentation(seed, batch: int, image_size: int, crop_size: int, channels: int, *,
                      random_crop: bool, flip: bool, pca_noise: float) -> dict:
  """Random numbers for one batch: crop corners, flip flags and PCA alphas.

  Offsets are uniform over all image_size - crop_size + 1 positions per axis (maxval is
  exclusive); without random_crop they are the centre, without flip no image is flipped.
  """
  seeds = tf.random.experimental.stateless_split(seed, 3)
  span = image_size - crop_size
  if random_crop:
    offsets = tf.random.stateless_uniform([batch, 2], seeds[0], 0, span + 1, dtype=tf.int32)
  else:
    offsets = tf.fill([batch, 2], span // 2)
  if flip:
    flips = tf.random.stateless_uniform([batch], seeds[1]) < 0.5
  else:
    flips = tf.zeros([batch], tf.bool)
  alphas = tf.random.stateless_normal([batch, channels], seeds[2]) * pca_noise
  return {"offsets": offsets, "flips": flips, "alphas": alphas}


def crop(images: tf.Tensor, offsets: tf.Tensor, size: int, flips: tf.Tensor | None = None):
  """Per-example crops at `offsets` (B, 2: top, left), mirrored where `flips`.

  Gathers rows then columns; a mirrored crop gathers its columns in reverse, so flipping
  costs nothing extra.
  """
  steps = tf.range(size)
  rows = offsets[:, :1] + steps
  cols = offsets[:, 1:] + steps
  if flips is not None:
    cols = tf.where(flips[:, None], offsets[:, 1:] + size - 1 - steps, cols)
  images = tf.gather(images, rows, axis=1, batch_dims=1)
  return tf.gather(images, cols, axis=2, batch_dims=1)


def center_crop(images: tf.Tensor, size: int) -> tf.Tensor:
  top = (images.shape[1] - size) // 2
  left = (images.shape[2] - size) // 2
  return images[:, top:top + size, left:left + size]


def ten_crop(images: tf.Tensor, size: int) -> tf.Tensor:
  """The paper's test views, (B, 10, size, size, C).

  Order: top-left, top-right, bottom-left, bottom-right, centre, then the same five mirrored.
  """
  h, w = images.shape[1], images.shape[2]
  corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size),
             ((h - size) // 2, (w - size) // 2)]
  views = [images[:, t:t + size, l:l + size] for t, l in corners]
  views += [tf.reverse(v, axis=[2]) for v in views]
  return tf.stack(views, axis=1)


def pca_noise(images: tf.Tensor, alphas: tf.Tensor, eigvecs: tf.Tensor, eigvals: tf.Tensor):
  """Adds sum_i alpha_i * sqrt(lambda_i) * p_i to every pixel of each image (paper, 4.1).

  The paper writes lambda_i, the eigenvalue; that is a variance (intensity^2), and used
  literally in 0..255 units (~10^4 on ImageNet) it would shift colours by thousands. Its
  cuda-convnet code and fb.resnet's table scale by the standard deviation along p_i, which
  makes the noise covariance exactly pca_noise^2 times the data's colour covariance.
  `eigvecs` holds p_i as columns.
  """
  shift = tf.linalg.matvec(eigvecs, alphas * tf.sqrt(eigvals))  # (B, C)
  return images + shift[:, None, None, :]


def subtract_mean_image(images: tf.Tensor, mean_image: tf.Tensor) -> tf.Tensor:
  """The paper's normalisation; applied before cropping so each crop loses its own window."""
  return images - mean_image


def channel_normalize(images: tf.Tensor, mean: tf.Tensor, std: tf.Tensor) -> tf.Tensor:
  return (images - mean) / std
