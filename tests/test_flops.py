"""The analytic FLOP count behind the benchmark's GFLOP/s and MFU figures."""

import jax
import jax.numpy as jnp
import pytest

from alexnet_jax import config as C
from alexnet_jax import flops as F
from alexnet_jax.models import AlexNet, ModelSpec


def _paper():
  return C.base_config().model


def _small():
  c = C.base_config()
  C.small_model(c)
  return c.model


def test_paper_net_by_hand():
  # Layer by layer from the paper's figure 2 (towers: conv2/4/5 see half the channels).
  macs = {
      "conv1": 55 * 55 * 11 * 11 * 3 * 96,
      "conv2": 27 * 27 * 5 * 5 * 48 * 256,
      "conv3": 13 * 13 * 3 * 3 * 256 * 384,
      "conv4": 13 * 13 * 3 * 3 * 192 * 384,
      "conv5": 13 * 13 * 3 * 3 * 192 * 256,
      "fc6": 6 * 6 * 256 * 4096,
      "fc7": 4096 * 4096,
      "fc8": 4096 * 1000,
  }
  got = {c.name: c.macs for c in F.layer_counts(_paper())}
  assert got == macs
  assert sum(macs.values()) == 724_406_816
  assert F.forward_flops(_paper()) == 2 * 724_406_816
  # The "~4.3 GFLOP per image" is the 3x-forward convention.
  assert F.train_step_flops(_paper()) == 6 * 724_406_816
  assert round(F.train_step_flops(_paper()) / 1e9, 1) == 4.3
  # conv1 needs no input gradient.
  assert F.train_step_flops(_paper(), exact=True) == 6 * 724_406_816 - 2 * macs["conv1"]


def test_ablations_change_the_count():
  c = C.base_config()
  C.apply_variant(c, "drop_conv=3")
  # Without conv3, conv4 takes over the cross-tower connection and reads both towers' maps.
  got = {l.name: l.macs for l in F.layer_counts(c.model)}
  assert "conv3" not in got
  assert got["conv4"] == 13 * 13 * 9 * 256 * 384
  c = C.base_config()
  C.apply_variant(c, "towers=1")
  got = {l.name: l.macs for l in F.layer_counts(c.model)}
  assert got["conv1"] == 55 * 55 * 121 * 3 * 48
  assert got["conv2"] == 27 * 27 * 25 * 48 * 128


def _params_and_input(model_config, batch):
  model = AlexNet(ModelSpec.from_config(model_config))
  s = model_config.input_size
  params = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)},
                                             jnp.zeros((1, s, s, 3)), train=False))["params"]
  return model, params, jax.ShapeDtypeStruct((batch, s, s, 3), jnp.float32)


# The rest of XLA's count (ReLU, LRN, pooling, biases, softmax) is O(activations): 1-2% of
# the paper net, more of the small one, whose convs are thin.
@pytest.mark.parametrize("config,fwd_tol,grad_tol", [(_paper, 1.02, 1.03), (_small, 1.05, 1.10)],
                         ids=["paper", "small"])
def test_forward_matches_xla_cost_analysis(config, fwd_tol, grad_tol):
  # XLA counts 2 FLOPs per MAC and skips products with the zero padding.
  m = config()
  model, params, x = _params_and_input(m, 2)
  fwd = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))
  xla = fwd.lower(params, x).compile().cost_analysis()["flops"] / 2
  ours = F.forward_flops(m, count_padding=False)
  assert ours <= xla <= fwd_tol * ours


@pytest.mark.parametrize("shape", [(27, 48, 128, 5, 1, 2), (13, 256, 192, 3, 1, 1),
                                   (227, 3, 48, 11, 4, 0), (28, 3, 16, 5, 1, 2)])
def test_conv_taps_match_xla_exactly(shape):
  hw, cin, cout, k, s, p = shape
  x = jax.ShapeDtypeStruct((1, hw, hw, cin), jnp.float32)
  w = jax.ShapeDtypeStruct((k, k, cin, cout), jnp.float32)
  conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
      x, w, (s, s), [(p, p)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")))
  xla = conv.lower(x, w).compile().cost_analysis()["flops"]
  assert xla == 2 * F._taps(hw, k, s, p) ** 2 * cin * cout


@pytest.mark.parametrize("config,fwd_tol,grad_tol", [(_paper, 1.02, 1.03), (_small, 1.05, 1.10)],
                         ids=["paper", "small"])
def test_gradient_matches_xla_cost_analysis(config, fwd_tol, grad_tol):
  # The gradient with respect to the params costs forward + 2x backward minus conv1's
  # input gradient: XLA's count must sit just above that (without padding products).
  m = config()
  model, params, x = _params_and_input(m, 2)
  grad = jax.jit(jax.grad(lambda p, x: jnp.sum(model.apply({"params": p}, x, train=False))))
  xla = grad.lower(params, x).compile().cost_analysis()["flops"] / 2
  exact = sum(2 * l.macs * (3 if l.input_grad else 2)
              for l in F.layer_counts(m, count_padding=False))
  assert exact <= xla <= grad_tol * exact
