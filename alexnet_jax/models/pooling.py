"""Max pooling; the paper's overlapping 3x3 windows with stride 2 (section 3.4)."""

import jax
import jax.numpy as jnp


def max_pool(x, window: int, stride: int):
  """VALID max pooling over the two spatial axes of an NHWC array."""
  return jax.lax.reduce_window(
      x, -jnp.inf, jax.lax.max, (1, window, window, 1), (1, stride, stride, 1), "VALID")
