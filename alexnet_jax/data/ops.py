"""Preprocessing ops, each one small TF function that a config switch turns on or off.

All ops act on one example; tf.data maps them over examples in parallel. Random ops take
their random numbers as arguments (from `draw_augmentation`), which keeps them pure and
testable and the randomness a function of the example's seed only.
The paper's mean-image subtraction is `crop` applied to the mean image with the example's
own window and flip, subtracted from the crop: the same numbers as subtracting the whole mean
image before cropping, at a fraction of the cost.
Pixel values stay in the 0..255 scale the paper used.
"""

from __future__ import annotations

import tensorflow as tf


def decode(encoded: tf.Tensor, channels: int) -> tf.Tensor:
  """JPEG/PNG/BMP/GIF bytes -> uint8 (H, W, channels)."""
  image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
  image.set_shape([None, None, channels])
  return image


def decode_square(encoded: tf.Tensor, channels: int, size: int) -> tf.Tensor:
  """`resize_small(decode(encoded))`, decoding only the central square of JPEGs.

  Cropping the central square and then resizing it equals resizing the shorter side and
  cropping the centre, so JPEGs skip decoding the discarded sides (a quarter of a 4:3 photo).
  """
  def jpeg():
    shape = tf.io.extract_jpeg_shape(encoded)
    side = tf.minimum(shape[0], shape[1])
    window = tf.stack([(shape[0] - side) // 2, (shape[1] - side) // 2, side, side])
    return tf.io.decode_and_crop_jpeg(encoded, window, channels=channels)

  image = tf.cond(tf.io.is_jpeg(encoded), jpeg, lambda: decode(encoded, channels))
  image.set_shape([None, None, channels])
  return resize_small(image, size)


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


def draw_augmentation(seed, image_size: int, crop_size: int, channels: int, *,
                      random_crop: bool, flip: bool, pca_noise: float) -> dict:
  """One example's random numbers: crop corner, flip flag and PCA alphas.

  The offset is uniform over all image_size - crop_size + 1 positions per axis (maxval is
  exclusive); without random_crop it is the centre, without flip nothing is mirrored.
  """
  seeds = tf.random.experimental.stateless_split(seed, 3)
  span = image_size - crop_size
  if random_crop:
    offset = tf.random.stateless_uniform([2], seeds[0], 0, span + 1, dtype=tf.int32)
  else:
    offset = tf.fill([2], span // 2)
  if flip:
    mirror = tf.random.stateless_uniform([], seeds[1]) < 0.5
  else:
    mirror = tf.constant(False)
  alphas = tf.random.stateless_normal([channels], seeds[2]) * pca_noise
  return {"offset": offset, "flip": mirror, "alphas": alphas}


def crop(image: tf.Tensor, offset: tf.Tensor, size: int, flip=None) -> tf.Tensor:
  """The size x size window at `offset` (top, left) of an (H, W, C) image, mirrored if `flip`.

  Per example, not per batch: slicing one image in cache beats gathering from a whole
  batch (measured 4x on 256px ImageNet batches), and tf.data runs examples in parallel.
  """
  window = tf.slice(image, [offset[0], offset[1], 0], [size, size, -1])
  if flip is None:
    return window
  return tf.cond(flip, lambda: tf.reverse(window, [1]), lambda: window)


def center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
  top = (image.shape[0] - size) // 2
  left = (image.shape[1] - size) // 2
  return image[top:top + size, left:left + size]


def ten_crop(image: tf.Tensor, size: int) -> tf.Tensor:
  """The paper's test views of one image, (10, size, size, C).

  Order: top-left, top-right, bottom-left, bottom-right, centre, then the same five mirrored.
  """
  h, w = image.shape[0], image.shape[1]
  corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size),
             ((h - size) // 2, (w - size) // 2)]
  views = [image[t:t + size, l:l + size] for t, l in corners]
  views += [tf.reverse(v, axis=[1]) for v in views]
  return tf.stack(views)


def pca_noise(image: tf.Tensor, alphas: tf.Tensor, eigvecs: tf.Tensor, eigvals: tf.Tensor):
  """Adds sum_i alpha_i * sqrt(lambda_i) * p_i to every pixel (paper, section 4.1).

  The paper writes lambda_i, the eigenvalue; that is a variance (intensity^2), and used
  literally in 0..255 units (~10^4 on ImageNet) it would shift colours by thousands. Its
  cuda-convnet code and fb.resnet's table scale by the standard deviation along p_i, which
  makes the noise covariance exactly pca_noise^2 times the data's colour covariance.
  `eigvecs` holds p_i as columns.
  """
  return image + tf.linalg.matvec(eigvecs, alphas * tf.sqrt(eigvals))


def channel_normalize(image: tf.Tensor, mean: tf.Tensor, std: tf.Tensor) -> tf.Tensor:
  return (image - mean) / std
