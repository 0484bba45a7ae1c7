"""Local response normalisation, exactly as in section 3.3 of the paper.

    b[c] = a[c] / (k + alpha * sum_{c' = c - n/2}^{c + n/2} a[c']**2) ** beta

The sum is the raw sum over the window (clipped at the channel ends). Caffe and
PyTorch divide alpha by n; the paper does not, and neither do we.

`local_response_norm` has a hand-written backward pass; `local_response_norm_reference`
is the same formula left to autodiff, kept as the definition the tests hold it to.
"""

from functools import partial

import jax
import jax.numpy as jnp


def _check(size):
  if size % 2 != 1:
    raise ValueError(f"LRN size must be odd, got {size}")


def _window_sum(v, size):
  # `size` shifted slices of a zero-padded copy: XLA fuses them with the producer and
  # consumer into one loop, which beats reduce_window on CPU and GPU alike.
  half = size // 2
  channels = v.shape[-1]
  padded = jnp.pad(v, [(0, 0)] * (v.ndim - 1) + [(half, half)])
  out = padded[..., 0:channels]
  for i in range(1, size):
    out = out + padded[..., i:i + channels]
  return out


def _scale_and_inverse(x32, size, k, alpha, beta):
  """(denominator ** -beta, 1 / denominator) from float32 inputs."""
  denom = k + alpha * _window_sum(jnp.square(x32), size)
  if beta == 0.75:
    # d**-0.75 = rsqrt(d) * sqrt(rsqrt(d)): two cheap ops instead of a log and an exp.
    r = jax.lax.rsqrt(denom)
    return r * jnp.sqrt(r), r * r
  return denom ** (-beta), 1.0 / denom


def local_response_norm_reference(x, *, size=5, k=2.0, alpha=1e-4, beta=0.75):
  """The paper's formula, differentiated by JAX (slow backward; the tests' reference)."""
  _check(size)
  scale, _ = _scale_and_inverse(x.astype(jnp.float32), size, k, alpha, beta)
  return (x.astype(jnp.float32) * scale).astype(x.dtype)


def local_response_norm(x, *, size=5, k=2.0, alpha=1e-4, beta=0.75):
  """Normalises an NHWC (or any channels-last) array across its last axis.

  Computes in float32 whatever the input dtype and returns the input dtype.
  """
  _check(size)
  with jax.named_scope("lrn"):
    return _lrn(x, size, float(k), float(alpha), float(beta))


@partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _lrn(x, size, k, alpha, beta):
  return local_response_norm_reference(x, size=size, k=k, alpha=alpha, beta=beta)


def _lrn_fwd(x, size, k, alpha, beta):
  # Only the input is kept: the backward pass recomputes the window sums, which costs
  # less than storing and re-reading a second activation-sized array.
  return _lrn(x, size, k, alpha, beta), x


def _lrn_bwd(size, k, alpha, beta, x, g):
  # With d[c] = k + alpha * S[c] and b[c] = a[c] d[c]^-beta,
  #   dL/da[j] = g[j] d[j]^-beta - 2 alpha beta a[j] sum_{c: j in window(c)} g[c] b[c] / d[c],
  # and the windows are symmetric, so the inner sum is the same window sum as the forward.
  # Autodiff of the forward builds this from ~20 separate passes; here it is two fusions.
  x32 = x.astype(jnp.float32)
  g32 = g.astype(jnp.float32)
  scale, inv_denom = _scale_and_inverse(x32, size, k, alpha, beta)
  t = g32 * x32 * scale * inv_denom
  dx = g32 * scale - (2.0 * alpha * beta) * x32 * _window_sum(t, size)
  return (dx.astype(x.dtype),)


_lrn.defvjp(_lrn_fwd, _lrn_bwd)
