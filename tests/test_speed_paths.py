"""The fast paths of the model equal the plain formulas they replace.

LRN and max pooling carry hand-written backward passes and the tower layers use
batched/merged matmuls; each is checked here against the straightforward version
(autodiff of the formula, `reduce_window`, per-tower slices), alone and inside the
whole network's gradient.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import config as C
from alexnet_jax.models import AlexNet, ModelSpec
from alexnet_jax.models import alexnet as alexnet_lib
from alexnet_jax.models import lrn as lrn_lib
from alexnet_jax.models import pooling as pool_lib


def _vjp(f, x, g):
  return jax.vjp(f, x)[1](g)[0]


# ---------------------------------------------------------------------------------------
# LRN.

@pytest.mark.parametrize("size,beta", [(5, 0.75), (3, 0.75), (7, 0.5), (1, 1.0), (5, 0.6)])
@pytest.mark.parametrize("shape", [(2, 7, 7, 48), (3, 5, 4, 10), (4, 6)])
def test_lrn_custom_vjp_equals_autodiff(size, beta, shape):
  rng = np.random.default_rng(0)
  # Post-ReLU-like activations, large enough that the denominator is far from k.
  x = jnp.asarray(np.maximum(rng.normal(0, 40, shape), 0), jnp.float32)
  g = jnp.asarray(rng.normal(size=shape), jnp.float32)
  kw = dict(size=size, k=2.0, alpha=1e-4, beta=beta)
  fast = lambda x: lrn_lib.local_response_norm(x, **kw)
  ref = lambda x: lrn_lib.local_response_norm_reference(x, **kw)
  np.testing.assert_array_equal(fast(x), ref(x))
  np.testing.assert_allclose(_vjp(fast, x, g), _vjp(ref, x, g), rtol=1e-5, atol=1e-6)
  # Same under jit, where XLA fuses differently.
  np.testing.assert_allclose(jax.jit(lambda x, g: _vjp(fast, x, g))(x, g),
                             _vjp(ref, x, g), rtol=1e-5, atol=1e-6)


def test_lrn_custom_vjp_strong_normalisation():
  # alpha large enough that the cross-channel term dominates the gradient.
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 3, 3, 16)), jnp.float32)
  g = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  kw = dict(size=5, k=1.0, alpha=1.0, beta=0.75)
  np.testing.assert_allclose(
      _vjp(lambda x: lrn_lib.local_response_norm(x, **kw), x, g),
      _vjp(lambda x: lrn_lib.local_response_norm_reference(x, **kw), x, g),
      rtol=1e-5, atol=1e-6)


def test_lrn_bfloat16_keeps_dtype_and_computes_in_float32():
  rng = np.random.default_rng(2)
  x32 = jnp.asarray(np.maximum(rng.normal(0, 40, (2, 5, 5, 24)), 0), jnp.float32)
  x = x32.astype(jnp.bfloat16)
  g = jnp.ones(x.shape, jnp.bfloat16)
  kw = dict(size=5, k=2.0, alpha=1e-4, beta=0.75)
  y = lrn_lib.local_response_norm(x, **kw)
  assert y.dtype == jnp.bfloat16
  dx = _vjp(lambda x: lrn_lib.local_response_norm(x, **kw), x, g)
  assert dx.dtype == jnp.bfloat16
  ref = _vjp(lambda x: lrn_lib.local_response_norm_reference(x, **kw), x.astype(jnp.float32),
             g.astype(jnp.float32))
  np.testing.assert_allclose(dx.astype(jnp.float32), ref, rtol=2e-2, atol=1e-2)


# ---------------------------------------------------------------------------------------
# Max pooling.

POOLS = [((2, 55, 55, 8), 3, 2), ((2, 27, 27, 4), 3, 2), ((2, 13, 13, 4), 3, 2),
         ((3, 12, 12, 2), 2, 2), ((2, 10, 11, 3), 3, 3), ((2, 9, 9, 3), 3, 1),
         ((1, 14, 9, 2), 5, 2), ((2, 4, 4, 1), 1, 1), ((2, 6, 7, 2), 4, 3)]


@pytest.mark.parametrize("shape,window,stride", POOLS)
def test_max_pool_equals_reduce_window(shape, window, stride):
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)  # Continuous: no ties.
  fast = lambda x: pool_lib.max_pool(x, window, stride)
  ref = lambda x: pool_lib.max_pool_reference(x, window, stride)
  np.testing.assert_array_equal(fast(x), ref(x))
  g = jnp.asarray(rng.normal(size=ref(x).shape), jnp.float32)
  # Overlapping windows add their gradients in another order: equal up to rounding.
  np.testing.assert_allclose(_vjp(fast, x, g), _vjp(ref, x, g), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(jax.jit(lambda x, g: _vjp(fast, x, g))(x, g),
                             _vjp(ref, x, g), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape,window,stride", POOLS[:4])
def test_max_pool_ties_go_to_the_first_maximum_like_reduce_window(shape, window, stride):
  rng = np.random.default_rng(4)
  # Post-ReLU maps are full of zero windows; quantised values add ties among positives.
  x = jnp.asarray(np.maximum(np.round(rng.normal(size=shape) * 2), 0), jnp.float32)
  g = jnp.asarray(rng.normal(size=pool_lib.max_pool_reference(x, window, stride).shape),
                  jnp.float32)
  fast = _vjp(lambda x: pool_lib.max_pool(x, window, stride), x, g)
  ref = _vjp(lambda x: pool_lib.max_pool_reference(x, window, stride), x, g)
  np.testing.assert_allclose(fast, ref, rtol=1e-6, atol=1e-6)
  # Every window hands on its whole gradient.
  np.testing.assert_allclose(jnp.sum(fast), jnp.sum(g), rtol=1e-5)


def test_max_pool_propagates_nan_and_keeps_dtype():
  x = jnp.zeros((1, 5, 5, 1)).at[0, 1, 1, 0].set(jnp.nan)
  y = pool_lib.max_pool(x, 3, 2)
  assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(y[0, 1, 1, 0])
  xb = jnp.asarray(np.random.default_rng(5).normal(size=(2, 7, 7, 3)), jnp.bfloat16)
  assert pool_lib.max_pool(xb, 3, 2).dtype == jnp.bfloat16
  gb = _vjp(lambda x: pool_lib.max_pool(x, 3, 2), xb, jnp.ones((2, 3, 3, 3), jnp.bfloat16))
  assert gb.dtype == jnp.bfloat16
  np.testing.assert_array_equal(
      gb, _vjp(lambda x: pool_lib.max_pool_reference(x, 3, 2), xb, jnp.ones((2, 3, 3, 3), jnp.bfloat16)))


def test_max_pool_rejects_bad_shapes():
  with pytest.raises(ValueError, match="NHWC"):
    pool_lib.max_pool(jnp.zeros((5, 5, 1)), 3, 2)
  with pytest.raises(ValueError, match="exceeds"):
    pool_lib.max_pool(jnp.zeros((1, 2, 2, 1)), 3, 2)


# ---------------------------------------------------------------------------------------
# The whole network: fast paths against the plain ones.

def _small_spec(**kw):
  c = C.base_config()
  C.small_model(c)
  return dataclasses.replace(ModelSpec.from_config(c.model), **kw)


def _conv_plain(xs, kernel, bias, stride, padding):
  return [jax.lax.conv_general_dilated(
      x, kernel[i].astype(x.dtype), (stride, stride), [(padding, padding)] * 2,
      dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias[i].astype(x.dtype)
          for i, x in enumerate(xs)]


def _dense_plain(x, kernel, bias):
  return [x @ kernel[i].astype(x.dtype) + bias[i].astype(x.dtype) for i in range(kernel.shape[0])]


def _plain_layers(m):
  """Swaps the model's fast layers for the straightforward formulations."""
  m.setattr(alexnet_lib, "local_response_norm", lrn_lib.local_response_norm_reference)
  m.setattr(alexnet_lib, "max_pool", pool_lib.max_pool_reference)
  m.setattr(alexnet_lib, "tower_convs", _conv_plain)
  m.setattr(alexnet_lib, "tower_dense", _dense_plain)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("stride,padding,k", [(4, 0, 11), (1, 2, 5), (1, 1, 3), (2, 1, 3)])
def test_tower_convs_equal_per_tower_convs(shared, stride, padding, k):
  rng = np.random.default_rng(7)
  x0 = jnp.asarray(rng.normal(size=(2, 23, 23, 6)), jnp.float32)
  xs = [x0, x0] if shared else [x0, x0 * 0.5 + 1]
  kernel = jnp.asarray(rng.normal(size=(2, k, k, 6, 5)), jnp.float32)
  bias = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
  gs = [jnp.asarray(rng.normal(size=y.shape), jnp.float32)
        for y in _conv_plain(xs, kernel, bias, stride, padding)]

  def run(f):
    ys, vjp = jax.vjp(lambda xs, k, b: f(xs, k, b, stride, padding), xs, kernel, bias)
    return ys, vjp(gs)

  (fast_y, fast_g), (ref_y, ref_g) = run(alexnet_lib.tower_convs), run(_conv_plain)
  for a, b in zip(jax.tree.leaves((fast_y, fast_g)), jax.tree.leaves((ref_y, ref_g))):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-4)


def test_tower_dense_equals_per_tower_matmuls():
  rng = np.random.default_rng(8)
  x = jnp.asarray(rng.normal(size=(3, 20)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(2, 20, 7)), jnp.float32)
  bias = jnp.asarray(rng.normal(size=(2, 7)), jnp.float32)
  gs = [jnp.asarray(rng.normal(size=(3, 7)), jnp.float32)] * 2
  fast = jax.vjp(alexnet_lib.tower_dense, x, kernel, bias)
  ref = jax.vjp(_dense_plain, x, kernel, bias)
  for a, b in zip(jax.tree.leaves((fast[0], fast[1](gs))), jax.tree.leaves((ref[0], ref[1](gs)))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spec_kw", [
    {},
    {"towers": 1, "conv_features": (16, 32, 48, 48, 64)},
    {"pool_window": 2, "pool_stride": 2},
    {"conv_layers": (2, 3, 4, 5)},  # conv2 reads the image: towers share their input.
    {"lrn_beta": 0.5, "lrn_alpha": 1.0, "lrn_k": 1.0},
])
def test_network_gradients_equal_plain_formulation(spec_kw, monkeypatch):
  spec = _small_spec(dropout=0.0, **spec_kw)
  model = AlexNet(spec)
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.normal(size=(4, 28, 28, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 10, 4))
  params = model.init({"params": jax.random.key(0)}, x, train=False)["params"]

  def loss(p):
    logits = model.apply({"params": p}, x, train=True, rngs={"dropout": jax.random.key(1)})
    return jnp.mean(-jax.nn.log_softmax(logits)[jnp.arange(4), labels])

  fast_loss, fast_grads = jax.jit(jax.value_and_grad(loss))(params)
  with monkeypatch.context() as m:
    _plain_layers(m)
    plain_params = model.init({"params": jax.random.key(0)}, x, train=False)["params"]
    assert jax.tree.structure(plain_params) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(plain_params), jax.tree.leaves(params)):
      assert a.shape == b.shape
    plain_loss, plain_grads = jax.jit(jax.value_and_grad(loss))(params)
  np.testing.assert_allclose(fast_loss, plain_loss, rtol=1e-5)
  for path, a, b in zip(jax.tree_util.tree_leaves_with_path(fast_grads),
                        jax.tree.leaves(fast_grads), jax.tree.leaves(plain_grads)):
    scale = float(jnp.max(jnp.abs(b))) or 1.0
    np.testing.assert_allclose(a / scale, b / scale, atol=2e-5, err_msg=str(path[0]))


def test_bfloat16_compute_keeps_float32_master_weights_and_loss():
  # config.model.dtype='bfloat16' (the GPU setting): params, optimizer state, logits and
  # loss stay float32; the step's loss tracks the float32 step's. bf16 has float32's
  # exponent range, so no loss scaling is needed.
  from alexnet_jax import optim
  from alexnet_jax import step as step_lib
  rng = np.random.default_rng(9)
  batch = {"image": jnp.asarray(rng.normal(size=(4, 28, 28, 3)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 10, 4), jnp.int32)}
  losses = {}
  for dtype in ("float32", "bfloat16"):
    model = AlexNet(_small_spec(dtype=dtype))
    params = model.init({"params": jax.random.key(0)}, batch["image"], train=False)["params"]
    tx = optim.paper_sgd(0.01)
    state = step_lib.init_state(model, tx, jax.random.key(0), (28, 28, 3))
    logits = model.apply({"params": state.params}, batch["image"], train=False)
    assert logits.dtype == jnp.float32
    step = jax.jit(step_lib.make_train_step(model, tx))
    for _ in range(3):
      state, metrics = step(state, batch, jnp.float32(0.01))
    assert metrics["loss"].dtype == jnp.float32
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
    assert {x.dtype for x in jax.tree.leaves(state.opt_state) if hasattr(x, "dtype")
            and jnp.issubdtype(x.dtype, jnp.floating)} == {jnp.dtype(jnp.float32)}
    losses[dtype] = float(metrics["loss"])
    del params
  np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=0.05)
