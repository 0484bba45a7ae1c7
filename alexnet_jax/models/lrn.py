"""Local response normalisation, exactly as in section 3.3 of the paper.

    b[c] = a[c] / (k + alpha * sum_{c' = c - n/2}^{c + n/2} a[c']**2) ** beta

The sum is the raw sum over the window (clipped at the channel ends). Caffe and
PyTorch divide alpha by n; the paper does not, and neither do we.
"""

import jax
import jax.numpy as jnp


def local_response_norm(x, *, size=5, k=2.0, alpha=1e-4, beta=0.75):
  """Normalises an NHWC (or any channels-last) array across its last axis."""
  if size % 2 != 1:
    raise ValueError(f"LRN size must be odd, got {size}")
  half = size // 2
  channels = x.shape[-1]
  sq = jnp.square(x.astype(jnp.float32))
  # A window sum as `size` shifted slices of a zero-padded copy: XLA fuses it with the
  # square and the scale into one loop, which beats reduce_window on CPU and GPU alike.
  padded = jnp.pad(sq, [(0, 0)] * (x.ndim - 1) + [(half, half)])
  window_sum = padded[..., 0:channels]
  for i in range(1, size):
    window_sum = window_sum + padded[..., i:i + channels]
  denom = k + alpha * window_sum
  if beta == 0.75:
    # d**-0.75 = rsqrt(d) * sqrt(rsqrt(d)): two cheap ops instead of a log and an exp.
    r = jax.lax.rsqrt(denom)
    scale = r * jnp.sqrt(r)
  else:
    scale = denom ** (-beta)
  return (x.astype(jnp.float32) * scale).astype(x.dtype)
