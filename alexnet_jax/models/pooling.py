"""Max pooling; the paper's overlapping 3x3 windows with stride 2 (section 3.4).

`max_pool` has a hand-written backward pass. JAX differentiates `reduce_window` max
through a generic select-and-scatter (here 6-25x slower than the forward on CPU); with a
window of only window**2 offsets it is cheaper to remember, per output, which offset
held the maximum (one int8) and to gather the gradient back with elementwise ops that
XLA fuses into one loop. `max_pool_reference` is the plain `reduce_window` version the
tests compare against.
"""

from functools import partial

import jax
import jax.numpy as jnp


def max_pool_reference(x, window: int, stride: int):
  """VALID max pooling over the two spatial axes of an NHWC array (autodiff backward)."""
  return jax.lax.reduce_window(
      x, -jnp.inf, jax.lax.max, (1, window, window, 1), (1, stride, stride, 1), "VALID")


def max_pool(x, window: int, stride: int):
  """VALID max pooling over the two spatial axes of an NHWC array.

  Forward values equal `max_pool_reference`'s. The gradient of each window goes to the
  first maximal element in row-major window order (reduce_window's choice may differ
  only between exactly tied inputs).
  """
  if x.ndim != 4:
    raise ValueError(f"max_pool expects NHWC, got shape {x.shape}")
  if x.shape[1] < window or x.shape[2] < window:
    raise ValueError(f"max_pool window {window} exceeds the map {x.shape[1:3]}")
  with jax.named_scope("max_pool"):
    return _max_pool(x, int(window), int(stride))


def _out_size(n, window, stride):
  return (n - window) // stride + 1


def _offsets(x, window, stride):
  """(offset index, i, j, x[:, i::stride, j::stride] cropped to the output size)."""
  n, h, w, c = x.shape
  oh, ow = _out_size(h, window, stride), _out_size(w, window, stride)
  k = 0
  for i in range(window):
    for j in range(window):
      yield k, i, j, jax.lax.slice(
          x, (0, i, j, 0), (n, i + stride * (oh - 1) + 1, j + stride * (ow - 1) + 1, c),
          (1, stride, stride, 1))
      k += 1


def _pool_and_argmax(x, window, stride):
  best = arg = None
  for k, _, _, s in _offsets(x, window, stride):
    if best is None:
      best, arg = s, jnp.zeros(s.shape, jnp.int8 if window * window < 128 else jnp.int32)
    else:
      # Strict '>' keeps the first maximum; max() (not where) propagates NaNs as
      # reduce_window does.
      arg = jnp.where(s > best, jnp.asarray(k, arg.dtype), arg)
      best = jnp.maximum(best, s)
  return best, arg


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool(x, window, stride):
  return _pool_and_argmax(x, window, stride)[0]


def _max_pool_fwd(x, window, stride):
  y, arg = _pool_and_argmax(x, window, stride)
  return y, (arg, x.shape)


def _max_pool_bwd(window, stride, res, g):
  # Gathered, not scattered: view the input as blocks of stride x stride pixels. Block
  # (a, b) is covered by windows (a - dh, b - dw) for dh, dw < ceil(window / stride),
  # and pixel (r, q) of the block sits at offset (r + dh*stride, q + dw*stride) of that
  # window. So each pixel sums a few shifted copies of g, each kept where the window's
  # argmax is that offset: elementwise work with broadcasts that XLA fuses into one loop.
  # (Scattering with window**2 interior-padded copies of g is equivalent, but XLA:CPU
  # then materialises every padded copy: ~5x slower inside the train step.)
  arg, (n, h, w, c) = res
  oh, ow = g.shape[1:3]
  s = stride
  hb, wb = -(-h // s), -(-w // s)
  r = jax.lax.broadcasted_iota(jnp.int32, (1, 1, s, 1, 1, 1), 2)
  q = jax.lax.broadcasted_iota(jnp.int32, (1, 1, 1, 1, s, 1), 4)
  zero = jnp.zeros((), g.dtype)
  reach = -(-window // s)
  dx = None
  for dh in range(reach):
    for dw in range(reach):
      def shifted(a, fill):
        # a[:, p - dh, p' - dw] on the hb x wb block grid; `fill` outside.
        a = jax.lax.pad(a, jnp.asarray(fill, a.dtype),
                        [(0, 0, 0), (dh, hb - oh - dh, 0), (dw, wb - ow - dw, 0), (0, 0, 0)])
        return a[:, :, None, :, None, :]
      i, j = r + dh * s, q + dw * s
      hit = (i < window) & (j < window) & (shifted(arg, -1).astype(jnp.int32) == i * window + j)
      part = jnp.where(hit, shifted(g, 0), zero)
      dx = part if dx is None else dx + part
  return (dx.reshape(n, hb * s, wb * s, c)[:, :h, :w],)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
