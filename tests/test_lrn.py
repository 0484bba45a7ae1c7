"""`local_response_norm` and `max_pool` against loop transcriptions of their definitions.

These pin the documented behaviour of the two public functions, whatever their
implementation (shifted slices, custom VJPs, ...): values in several dtypes and shapes,
and gradients against float64 finite differences of the loop references.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.models.lrn import local_response_norm
from alexnet_jax.models.pooling import max_pool


# ---------------------------------------------------------------------------------------
# References, float64 loops straight from the definitions.

def lrn_paper(a, size, k, alpha, beta):
  """Section 3.3: b[c] = a[c] / (k + alpha * sum_{c'=max(0,c-n/2)}^{min(N-1,c+n/2)} a[c']^2)^beta."""
  a = np.asarray(a, np.float64)
  n_ch = a.shape[-1]
  out = np.empty_like(a)
  for c in range(n_ch):
    lo, hi = max(0, c - size // 2), min(n_ch - 1, c + size // 2)
    s = np.zeros(a.shape[:-1])
    for j in range(lo, hi + 1):
      s += a[..., j] ** 2
    out[..., c] = a[..., c] / (k + alpha * s) ** beta
  return out


def lrn_torch_style(a, size, k, alpha, beta):
  """Caffe/PyTorch: the same window sum, but alpha is divided by the window size n."""
  return lrn_paper(a, size, k, alpha / size, beta)


def pool_loop(x, window, stride):
  x = np.asarray(x)
  n, h, w, c = x.shape
  oh, ow = (h - window) // stride + 1, (w - window) // stride + 1
  out = np.empty((n, oh, ow, c), x.dtype)
  for i in range(oh):
    for j in range(ow):
      patch = x[:, i * stride:i * stride + window, j * stride:j * stride + window, :]
      out[:, i, j, :] = patch.max(axis=(1, 2))
  return out


# Jitted once per shape/constants: one compile instead of one per eager op (slow CPU).
lrn = jax.jit(local_response_norm, static_argnames=("size", "k", "alpha", "beta"))
pool = jax.jit(max_pool, static_argnums=(1, 2))


def _x(shape, seed=0, scale=3.0):
  return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


# ---------------------------------------------------------------------------------------
# LRN values.

@pytest.mark.parametrize("size,k,alpha,beta,channels", [
    (5, 2.0, 1e-4, 0.75, 16),    # The paper's constants (beta=0.75 fast path).
    (5, 2.0, 0.1, 0.75, 16),     # Large alpha: the normalisation really bites.
    (5, 1.0, 0.5, 0.5, 11),      # beta != 0.75.
    (3, 2.0, 0.2, 1.0, 8),
    (7, 1.5, 0.3, 0.6, 9),
    (1, 2.0, 0.3, 0.75, 4),      # Window of one: each channel normalised by itself.
    (5, 2.0, 0.3, 0.75, 3),      # Fewer channels than the window.
    (7, 1.0, 0.3, 0.4, 2),
    (5, 2.0, 0.3, 0.75, 1),
])
def test_lrn_matches_paper_formula(size, k, alpha, beta, channels):
  x = _x((2, 3, 4, channels), seed=channels)
  got = lrn(jnp.asarray(x), size=size, k=k, alpha=alpha, beta=beta)
  assert got.shape == x.shape and got.dtype == jnp.float32
  want = lrn_paper(x, size, k, alpha, beta)
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=1e-6)
  if alpha >= 0.1:  # The test must not be passable by the identity scaled by k^-beta.
    assert not np.allclose(want, x / k ** beta, rtol=1e-2)


def test_lrn_defaults_are_the_papers():
  x = _x((1, 2, 2, 10), scale=40.0)  # Large activations, so alpha=1e-4 matters.
  want = lrn_paper(x, 5, 2.0, 1e-4, 0.75)
  assert not np.allclose(want, x / 2.0 ** 0.75, rtol=1e-2)
  np.testing.assert_allclose(np.asarray(local_response_norm(jnp.asarray(x))), want, rtol=2e-5)


def test_lrn_is_not_torch_style_but_differs_exactly_by_alpha_over_n():
  x = _x((2, 5, 5, 12), seed=3)
  size, k, alpha, beta = 5, 2.0, 0.05, 0.75
  ours = np.asarray(lrn(jnp.asarray(x), size=size, k=k, alpha=alpha, beta=beta))
  assert not np.allclose(ours, lrn_torch_style(x, size, k, alpha, beta), rtol=1e-3)
  # Our alpha equals the torch-style alpha divided by n, and nothing else differs.
  np.testing.assert_allclose(ours, lrn_torch_style(x, size, k, alpha * size, beta), rtol=2e-5)


def test_lrn_against_pytorch():
  torch = pytest.importorskip("torch")  # CI installs the CPU build.
  x = _x((2, 4, 4, 10), seed=4)
  size, k, alpha, beta = 5, 2.0, 0.05, 0.75
  nchw = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  ref = torch.nn.functional.local_response_norm(nchw, size, alpha=alpha * size, beta=beta, k=k)
  ours = lrn(jnp.asarray(x), size=size, k=k, alpha=alpha, beta=beta)
  np.testing.assert_allclose(np.asarray(ours), ref.numpy().transpose(0, 2, 3, 1), rtol=2e-5,
                             atol=1e-6)


@pytest.mark.parametrize("per_size", [False, True])
def test_model_lrn_alpha_per_size_against_pytorch(per_size):
  # The model's two readings of the paper's constants (model.lrn_alpha_per_size): the raw
  # sum as printed, or cuda-convnet's scale / size, which is exactly what
  # torch.nn.LocalResponseNorm computes from the same constants.
  torch = pytest.importorskip("torch")
  from alexnet_jax.models.alexnet import ModelSpec, lrn_alpha
  spec = ModelSpec(lrn_alpha_per_size=per_size)
  x = _x((2, 3, 3, 12), seed=5, scale=40.0)
  ours = np.asarray(lrn(jnp.asarray(x), size=5, k=2.0, alpha=lrn_alpha(spec), beta=0.75))
  nchw = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  ref = torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(nchw).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(ours, lrn_paper(x, 5, 2.0, 1e-4 / (5 if per_size else 1), 0.75),
                             rtol=2e-5)
  assert np.allclose(ours, ref, rtol=2e-5, atol=1e-6) == per_size


def test_lrn_any_channels_last_rank():
  for shape in [(7, 6), (2, 3, 5), (1, 2, 2, 2, 9)]:
    x = _x(shape, seed=len(shape))
    got = lrn(jnp.asarray(x), size=5, k=1.0, alpha=0.2, beta=0.75)
    np.testing.assert_allclose(np.asarray(got), lrn_paper(x, 5, 1.0, 0.2, 0.75), rtol=2e-5,
                               atol=1e-6)


def test_lrn_bfloat16_keeps_dtype_and_is_accurate():
  x = _x((2, 3, 3, 16), seed=5)
  xb = jnp.asarray(x, jnp.bfloat16)
  got = lrn(xb, size=5, k=2.0, alpha=0.1, beta=0.75)
  assert got.dtype == jnp.bfloat16
  want = lrn_paper(np.asarray(xb.astype(jnp.float32)), 5, 2.0, 0.1, 0.75)
  np.testing.assert_allclose(np.asarray(got.astype(jnp.float32)), want, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("beta", [0.75, 0.6])
def test_lrn_eager_and_vmap(beta):
  x = _x((3, 2, 2, 8), seed=6)
  f = lambda v: local_response_norm(v, size=3, k=1.0, alpha=0.3, beta=beta)
  want = lrn_paper(x, 3, 1.0, 0.3, beta)
  np.testing.assert_allclose(np.asarray(f(jnp.asarray(x))), want, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(f))(jnp.asarray(x))), want,
                             rtol=2e-5, atol=1e-6)


def test_lrn_even_size_is_rejected():
  with pytest.raises(ValueError, match="odd"):
    local_response_norm(jnp.ones((1, 1, 1, 8)), size=4)


# ---------------------------------------------------------------------------------------
# LRN gradients: jax.grad against central differences of the float64 loop.

def _numeric_grad(f, x, eps=1e-5):
  g = np.zeros_like(x, dtype=np.float64)
  flat, gflat = x.reshape(-1), g.reshape(-1)
  for i in range(flat.size):
    old = flat[i]
    flat[i] = old + eps
    up = f(x)
    flat[i] = old - eps
    down = f(x)
    flat[i] = old
    gflat[i] = (up - down) / (2 * eps)
  return g


@pytest.mark.parametrize("size,k,alpha,beta,channels", [
    (5, 2.0, 0.1, 0.75, 7),
    (5, 1.0, 0.4, 0.5, 6),
    (3, 2.0, 0.3, 1.3, 5),
    (5, 2.0, 0.3, 0.75, 3),   # Fewer channels than the window.
])
def test_lrn_gradient(size, k, alpha, beta, channels):
  x = _x((2, 2, 1, channels), seed=channels, scale=1.5).astype(np.float64)
  w = np.random.default_rng(1).normal(size=x.shape)  # A generic cotangent.
  loss64 = lambda v: float(np.sum(w * lrn_paper(v, size, k, alpha, beta)))
  want = _numeric_grad(loss64, x.copy())

  def loss(v):
    return jnp.sum(jnp.asarray(w, jnp.float32)
                   * local_response_norm(v, size=size, k=k, alpha=alpha, beta=beta))

  got = jax.jit(jax.grad(loss))(jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------------------------------
# Max pooling.

@pytest.mark.parametrize("hw,window,stride", [
    (13, 3, 2), (27, 3, 2), (14, 3, 2), (8, 2, 2), (7, 2, 2), (6, 3, 1), (5, 5, 1), (4, 1, 1),
])
def test_max_pool_matches_loop(hw, window, stride):
  x = _x((2, hw, hw, 3), seed=hw)
  got = pool(jnp.asarray(x), window, stride)
  want = pool_loop(x, window, stride)
  assert got.shape == want.shape == (2, (hw - window) // stride + 1,
                                     (hw - window) // stride + 1, 3)
  np.testing.assert_array_equal(np.asarray(got), want)


def test_max_pool_paper_sizes_and_negative_inputs():
  x = -np.abs(_x((1, 55, 55, 2))) - 1.0  # All negative: padding with 0 would show.
  got = np.asarray(max_pool(jnp.asarray(x), 3, 2))
  assert got.shape == (1, 27, 27, 2)
  np.testing.assert_array_equal(got, pool_loop(x, 3, 2))
  assert (got < 0).all()


def test_max_pool_gradient_ties_go_to_the_first_maximum():
  # Documented: each window's gradient goes to its first maximal element in row-major
  # order, and is not split or duplicated among tied elements.
  x = jnp.zeros((1, 7, 7, 2), jnp.float32)
  g = np.random.default_rng(8).normal(size=(1, 3, 3, 2)).astype(np.float32)
  grad = np.asarray(jax.jit(jax.grad(lambda v: jnp.sum(max_pool(v, 3, 2) * g)))(x))
  want = np.zeros((1, 7, 7, 2), np.float32)
  want[:, 0:5:2, 0:5:2, :] = g  # Window (p, q) starts at (2p, 2q).
  np.testing.assert_allclose(grad, want, rtol=1e-6)


def test_max_pool_keeps_dtype():
  x = jnp.asarray(_x((1, 6, 6, 2)), jnp.bfloat16)
  got = max_pool(x, 3, 2)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(got.astype(jnp.float32)),
                                pool_loop(np.asarray(x.astype(jnp.float32)), 3, 2))


@pytest.mark.parametrize("window,stride", [(3, 2), (2, 2), (3, 1)])
def test_max_pool_gradient_goes_to_the_max(window, stride):
  rng = np.random.default_rng(7)
  hw = 9
  # Distinct values (a permutation), so every window has one maximum.
  x = rng.permutation(2 * hw * hw * 3).reshape(2, hw, hw, 3).astype(np.float32) / 10.0
  out = pool_loop(x, window, stride)
  g = rng.normal(size=out.shape).astype(np.float32)
  want = np.zeros_like(x)
  for n in range(2):
    for i in range(out.shape[1]):
      for j in range(out.shape[2]):
        for c in range(3):
          patch = x[n, i * stride:i * stride + window, j * stride:j * stride + window, c]
          a, b = np.unravel_index(np.argmax(patch), patch.shape)
          want[n, i * stride + a, j * stride + b, c] += g[n, i, j, c]  # Overlaps add up.
  jit_grad = jax.jit(jax.grad(lambda v: jnp.sum(max_pool(v, window, stride) * g)))
  np.testing.assert_allclose(np.asarray(jit_grad(jnp.asarray(x))), want, rtol=1e-6, atol=1e-6)
