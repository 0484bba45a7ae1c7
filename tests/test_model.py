"""The AlexNet module: layer shapes, parameter count, init, towers, dropout and every switch.

The 227px paper net is only ever traced abstractly (`jax.eval_shape`): its shapes and
parameter count are exact without spending seconds of CPU. Numerical checks run the small
28px net (same structure) against `reference_logits`, an independent transcription of the
paper's layer order written with grouped convolutions, which is how the two-GPU net is
usually expressed on one device.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import config as config_lib
from alexnet_jax import variants
from alexnet_jax.models import AlexNet, ModelSpec, count_params
from alexnet_jax.models.alexnet import ConvTowers
from conftest import abstract_layers, run_layers

PAPER = ModelSpec()


def _small_spec(**changes) -> ModelSpec:
  c = config_lib.base_config()
  config_lib.small_model(c)
  return dataclasses.replace(ModelSpec.from_config(c.model), **changes)


SMALL = _small_spec()


def _images(spec, batch=2, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(size=(batch, spec.input_size, spec.input_size, 3)), jnp.float32)


def _key(seed):
  # XLA's RngBitGenerator compiles in a fraction of threefry's time (init draws 16 arrays).
  return jax.random.key(seed, impl="rbg")


def _init(spec, seed=0):
  """The module's own initialisation (jitted)."""
  model = AlexNet(spec)
  x = jnp.zeros((1, spec.input_size, spec.input_size, 3), jnp.float32)
  return model, jax.jit(lambda k: model.init({"params": k}, x, train=False))(_key(seed))


def _random_params(spec, seed=0):
  """Params of the right shapes drawn in NumPy: He-scaled kernels and non-zero biases.

  Cheaper than `model.init` and, unlike the paper init, every bias matters.
  """
  shapes, _, _ = abstract_layers(AlexNet(spec))
  rng = np.random.default_rng(seed)
  params = {}
  for layer, p in shapes.items():
    k = p["kernel"]
    fan_in = math.prod(k[1:-1]) if len(k) > 2 else k[0]
    params[layer] = {
        "kernel": jnp.asarray(rng.normal(size=k) * math.sqrt(2.0 / fan_in), jnp.float32),
        "bias": jnp.asarray(rng.normal(size=p["bias"]) * 0.2, jnp.float32)}
  return {"params": params}


@functools.lru_cache(maxsize=None)
def _runner(spec, train=False):
  """jit(variables, images, dropout_key) -> (logits, {layer: (input, output)}), cached per spec."""
  model = AlexNet(spec)

  def run(variables, images, key):
    rngs = {"dropout": key} if train else None
    return run_layers(model, variables, images, train=train, rngs=rngs)

  return jax.jit(run)


def _run(spec, variables, x, train=False, key=None):
  return _runner(spec, train)(variables, x, jax.random.key(0) if key is None else key)


# ---------------------------------------------------------------------------------------
# An independent forward pass: one array of all channels, grouped convs for tower layers.

def _ref_lrn(h, spec):
  """Paper LRN on one tower's channels, as a banded matrix product (not shifted slices).

  With `lrn_alpha_per_size`, alpha is divided by the window size (cuda-convnet's rule).
  """
  c = h.shape[-1]
  idx = np.arange(c)
  band = (np.abs(idx[:, None] - idx[None, :]) <= spec.lrn_size // 2).astype(np.float32)
  window = jnp.einsum("...i,ij->...j", jnp.square(h), band, precision="highest")
  alpha = spec.lrn_alpha / spec.lrn_size if spec.lrn_alpha_per_size else spec.lrn_alpha
  return h / jnp.power(spec.lrn_k + alpha * window, spec.lrn_beta)


@functools.partial(jax.jit, static_argnums=0)
def reference_logits(spec: ModelSpec, params, x):
  act = {"relu": lambda v: jnp.maximum(v, 0.0), "tanh": jnp.tanh}[spec.activation]
  hp = jax.lax.Precision.HIGHEST
  h = x
  towers = None  # Number of tower channel groups in `h` once the first conv has run.
  for i in range(1, len(spec.conv_features) + 1):
    late_act = False
    if i in spec.conv_layers:
      p = params[f"conv{i}"]
      t = p["kernel"].shape[0]
      kernel = jnp.concatenate(list(p["kernel"]), axis=-1)  # Towers side by side on O.
      # The first conv sees the image in every tower, a cross-tower conv sees all channels:
      # both are ordinary convs. Every other conv is grouped by tower.
      groups = 1 if towers is None or i in spec.cross_tower else t
      pad, far = spec.conv_padding[i - 1], spec.conv_pad_far[i - 1]
      h = jax.lax.conv_general_dilated(
          h, kernel, (spec.conv_strides[i - 1],) * 2, [(pad, pad + far)] * 2,
          dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups,
          precision=hp) + jnp.concatenate(list(p["bias"]))
      # cuda-convnet's order for conv1: LRN of the raw conv output, the ReLU after the pool.
      late_act = i in spec.act_after_lrn
      if not late_act:
        h = act(h)
      towers = t
      # LRN normalises its own conv's output only; a removed conv takes its LRN along.
      if spec.lrn and i in spec.lrn_after:
        h = jnp.concatenate([_ref_lrn(g, spec) for g in jnp.split(h, towers, axis=-1)], -1)
    if i in spec.pool_after:
      w, s = spec.pool_window, spec.pool_stride
      h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, w, w, 1), (1, s, s, 1), "VALID")
    if late_act:
      h = act(h)
  h = h.reshape(h.shape[0], -1)
  for j in range(len(spec.fc_features)):
    p = params[f"fc{6 + j}"]
    h = act(jnp.dot(h, jnp.concatenate(list(p["kernel"]), -1), precision=hp)
            + jnp.concatenate(list(p["bias"])))
  p = params[f"fc{6 + len(spec.fc_features)}"]
  return jnp.dot(h, p["kernel"], precision=hp) + p["bias"]


# ---------------------------------------------------------------------------------------
# Shapes and parameter count of the paper net.

PAPER_PARAM_SHAPES = {
    "conv1": {"kernel": (2, 11, 11, 3, 48), "bias": (2, 48)},
    "conv2": {"kernel": (2, 5, 5, 48, 128), "bias": (2, 128)},
    "conv3": {"kernel": (2, 3, 3, 256, 192), "bias": (2, 192)},
    "conv4": {"kernel": (2, 3, 3, 192, 192), "bias": (2, 192)},
    "conv5": {"kernel": (2, 3, 3, 192, 128), "bias": (2, 128)},
    "fc6": {"kernel": (2, 9216, 2048), "bias": (2, 2048)},
    "fc7": {"kernel": (2, 4096, 2048), "bias": (2, 2048)},
    "fc8": {"kernel": (4096, 1000), "bias": (1000,)},
}


def test_config_defaults_are_the_paper_spec():
  assert ModelSpec.from_config(config_lib.base_config().model) == PAPER


def test_paper_layer_shapes():
  params, seen, logits = abstract_layers(AlexNet(PAPER), batch=2)
  two = lambda *s: [(2, *s)] * 2
  assert seen["conv1"] == ([(2, 227, 227, 3)] * 2, two(55, 55, 48))
  assert seen["conv2"] == (two(27, 27, 48), two(27, 27, 128))  # Own tower's 48 channels.
  assert seen["conv3"] == (two(13, 13, 256), two(13, 13, 192))  # Both towers' 256.
  assert seen["conv4"] == (two(13, 13, 192), two(13, 13, 192))
  assert seen["conv5"] == (two(13, 13, 192), two(13, 13, 128))
  assert seen["fc6"] == ((2, 6 * 6 * 256), two(2048))
  assert seen["fc7"] == ((2, 4096), two(2048))
  assert seen["fc8"] == ((2, 4096), (2, 1000))
  assert logits.shape == (2, 1000) and logits.dtype == jnp.float32
  maps = [seen["conv1"][1][0][1], seen["conv2"][0][0][1], seen["conv2"][1][0][1],
          seen["conv3"][0][0][1], seen["conv3"][1][0][1], seen["conv4"][1][0][1],
          seen["conv5"][1][0][1], math.isqrt(seen["fc6"][0][1] // 256)]
  assert maps == [55, 27, 27, 13, 13, 13, 13, 6]


def test_paper_param_shapes_and_count():
  params, _, _ = abstract_layers(AlexNet(PAPER))
  assert params == PAPER_PARAM_SHAPES
  by_hand = sum(math.prod(s) for layer in PAPER_PARAM_SHAPES.values() for s in layer.values())
  assert by_hand == 60_965_224
  count = count_params(jax.eval_shape(
      lambda: AlexNet(PAPER).init({"params": jax.random.key(0)},
                                  jnp.zeros((1, 227, 227, 3)), train=False))["params"])
  assert count == 60_965_224


def test_num_classes_sets_only_fc8():
  params, _, logits = abstract_layers(AlexNet(dataclasses.replace(PAPER, num_classes=10)))
  assert params["fc8"] == {"kernel": (4096, 10), "bias": (10,)}
  assert params["fc7"] == PAPER_PARAM_SHAPES["fc7"]
  assert logits.shape == (1, 10)


def test_small_model_shapes():
  params, seen, logits = abstract_layers(AlexNet(SMALL), batch=3)
  three = lambda *s: [(3, *s)] * 2
  assert seen["conv1"] == ([(3, 28, 28, 3)] * 2, three(28, 28, 16))
  assert seen["conv2"] == (three(13, 13, 16), three(13, 13, 32))
  assert seen["conv3"] == (three(6, 6, 64), three(6, 6, 48))
  assert seen["conv4"] == (three(6, 6, 48), three(6, 6, 48))
  assert seen["conv5"] == (three(6, 6, 48), three(6, 6, 32))
  assert seen["fc6"] == ((3, 2 * 2 * 64), three(256))
  assert seen["fc7"] == ((3, 512), three(256))
  assert seen["fc8"] == ((3, 512), (3, 10))
  assert logits.shape == (3, 10)
  assert params["conv1"]["kernel"] == (2, 5, 5, 3, 16)
  assert params["fc6"]["kernel"] == (2, 256, 256)


# ---------------------------------------------------------------------------------------
# Initialisation.

# The paper's conv widths and init, with narrow fc layers and a small input so init is cheap.
INIT_SPEC = dataclasses.replace(PAPER, input_size=67, fc_features=(256, 256), num_classes=10)


def _fan_in(name, kernel_shape):
  return math.prod(kernel_shape[1:-1]) if name != "fc8" else kernel_shape[0]


def test_paper_init_statistics():
  _, variables = _init(INIT_SPEC)
  params = variables["params"]
  assert sorted(params) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
  for name, p in params.items():
    k = np.asarray(p["kernel"])
    assert abs(k.mean()) < 0.05 * 0.01, name
    assert k.std() == pytest.approx(0.01, rel=0.05), name
    expected_bias = 1.0 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
    np.testing.assert_array_equal(np.asarray(p["bias"]), expected_bias, err_msg=name)
    if name != "fc8":  # The towers are initialised independently.
      assert not np.allclose(k[0], k[1]), name


def test_he_init_statistics():
  _, variables = _init(dataclasses.replace(INIT_SPEC, init="he", init_std=0.5))
  for name, p in variables["params"].items():
    k = np.asarray(p["kernel"])
    fan_in = _fan_in(name, k.shape)
    assert k.std() == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.05), (name, fan_in)
    np.testing.assert_array_equal(np.asarray(p["bias"]), 0.0, err_msg=name)
  # Fan-ins are per tower for convs: conv2 sees 5*5*48, conv3 (cross-tower) 3*3*256.
  conv2 = np.asarray(variables["params"]["conv2"]["kernel"])
  assert conv2.std() == pytest.approx(math.sqrt(2.0 / 1200), rel=0.05)
  conv3 = np.asarray(variables["params"]["conv3"]["kernel"])
  assert conv3.std() == pytest.approx(math.sqrt(2.0 / 2304), rel=0.05)


# ---------------------------------------------------------------------------------------
# The forward pass against the grouped-conv reference.

# Large LRN constants so that LRN changes the activations noticeably.
STRONG_LRN = dict(lrn_k=1.0, lrn_alpha=1.0)


def _one_tower_small(**changes):
  c = config_lib.base_config()
  config_lib.small_model(c)
  config_lib.one_tower(c)
  return dataclasses.replace(ModelSpec.from_config(c.model), **changes)


REFERENCE_CASES = {
    "paper_two_towers": lambda: _small_spec(**STRONG_LRN),
    # Several switches at once (one compile): one tower, tanh, 2x2 pools, no conv3, beta=0.5.
    "switches_one_tower": lambda: _one_tower_small(
        **STRONG_LRN, activation="tanh", pool_window=2, pool_stride=2,
        conv_layers=(1, 2, 4, 5), lrn_beta=0.5),
    # drop_conv=3 on two towers: conv4 inherits the cross-tower connection (groups=1 there
    # in the reference), so a model that kept conv4 per-tower would not match.
    "two_towers_no_conv3": lambda: _small_spec(**STRONG_LRN, conv_layers=(1, 2, 4, 5), cross_tower=(4,)),
    # drop_conv=2: conv2's LRN leaves with conv2 (the model used to normalise conv1's maps
    # a second time there).
    "two_towers_no_conv2": lambda: _small_spec(**STRONG_LRN, conv_layers=(1, 3, 4, 5)),
    # cuda-convnet's rules: alpha / size, conv1's ReLU after LRN and pool (the reference
    # applies it after the pool, as cuda-convnet's layer file does), far-edge padding.
    "cuda_convnet_rules": lambda: _small_spec(
        **STRONG_LRN, lrn_alpha_per_size=True, act_after_lrn=(1,), conv_pad_far=(1, 0, 0, 0, 0)),
}


@pytest.mark.parametrize("case", sorted(REFERENCE_CASES))
def test_forward_matches_grouped_reference(case):
  spec = REFERENCE_CASES[case]()
  variables = _random_params(spec, seed=1)
  x = _images(spec)
  got, _ = _run(spec, variables, x)
  want = reference_logits(spec, variables["params"], x)
  assert float(jnp.std(want)) > 0.1  # Not a degenerate comparison.
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------
# Towers.

@pytest.fixture(scope="module")
def small_run():
  spec = _small_spec(**STRONG_LRN)
  variables = _random_params(spec, seed=3)
  x = _images(spec, seed=3)
  logits, seen = _run(spec, variables, x)
  return spec, variables, x, logits, seen


def _perturb(variables, layer, tower, seed=0):
  params = dict(variables["params"])
  k = params[layer]["kernel"]
  noise = 0.05 * np.random.default_rng(seed).normal(size=k.shape[1:])
  params[layer] = dict(params[layer], kernel=k.at[tower].add(noise))
  return {"params": params}


def _same(a, b):
  return np.array_equal(np.asarray(a), np.asarray(b))


def test_tower2_conv1_does_not_reach_tower1_until_conv3(small_run):
  spec, variables, x, logits, seen = small_run
  logits2, seen2 = _run(spec, _perturb(variables, "conv1", 1), x)
  assert _same(seen2["conv1"][1][0], seen["conv1"][1][0])
  assert not _same(seen2["conv1"][1][1], seen["conv1"][1][1])
  # conv2 of tower 1 reads (LRN'd, pooled) tower-1 maps only.
  assert _same(seen2["conv2"][0][0], seen["conv2"][0][0])
  assert _same(seen2["conv2"][1][0], seen["conv2"][1][0])
  assert not _same(seen2["conv2"][1][1], seen["conv2"][1][1])
  # conv3 reads both towers.
  assert not _same(seen2["conv3"][1][0], seen["conv3"][1][0])
  assert not _same(logits2, logits)


def test_tower2_conv3_does_not_reach_tower1_conv4_conv5(small_run):
  spec, variables, x, logits, seen = small_run
  _, seen2 = _run(spec, _perturb(variables, "conv3", 1), x)
  assert _same(seen2["conv3"][1][0], seen["conv3"][1][0])
  assert not _same(seen2["conv3"][1][1], seen["conv3"][1][1])
  for layer in ("conv4", "conv5"):
    assert _same(seen2[layer][1][0], seen[layer][1][0]), layer
    assert not _same(seen2[layer][1][1], seen[layer][1][1]), layer
  for t in range(2):  # Every fc unit reads both towers.
    assert not _same(seen2["fc6"][1][t], seen["fc6"][1][t])


def test_conv2_tower1_output_ignores_tower2_input(small_run):
  spec, variables, x, logits, seen = small_run
  conv2 = ConvTowers(spec=spec, name="conv2", features=32, kernel=5, stride=1, padding=2)
  apply = jax.jit(conv2.apply)
  p = {"params": variables["params"]["conv2"]}
  a, b = seen["conv2"][0]
  out = apply(p, [a, b])
  out2 = apply(p, [a, b + 1.0 + jnp.asarray(np.random.default_rng(0).normal(size=b.shape))])
  np.testing.assert_array_equal(out[0], out2[0])
  assert not _same(out[1], out2[1])
  np.testing.assert_allclose(out[0], seen["conv2"][1][0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layer", ["conv1", "conv2", "conv3", "conv4", "conv5"])
def test_tower_convs_equal_grouped_conv(small_run, layer):
  """conv2/4/5 == one conv with feature_group_count=2; conv1/3 == an ungrouped conv."""
  spec, variables, x, logits, seen = small_run
  inputs, outputs = seen[layer]
  p = variables["params"][layer]
  i = int(layer[-1])
  if layer in ("conv1", "conv3"):
    np.testing.assert_array_equal(inputs[0], inputs[1])  # Both towers see everything.
    h, groups = np.asarray(inputs[0]), 1
  else:
    h, groups = np.concatenate(inputs, -1), 2
  pad = spec.conv_padding[i - 1]
  ref = jax.lax.conv_general_dilated(
      h, jnp.concatenate(list(p["kernel"]), -1), (1, 1), [(pad, pad)] * 2,
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups,
      precision=jax.lax.Precision.HIGHEST) + jnp.concatenate(list(p["bias"]))
  np.testing.assert_allclose(np.concatenate(outputs, -1), ref, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------
# Dropout.

def test_dropout_train_eval_and_rng(small_run):
  spec, variables, x, logits, seen = small_run
  k1, k2 = _key(1), _key(2)
  t1, tr = _run(spec, variables, x, train=True, key=k1)
  np.testing.assert_array_equal(t1, _run(spec, variables, x, train=True, key=k1)[0])
  assert not _same(t1, _run(spec, variables, x, train=True, key=k2)[0])
  assert not _same(t1, logits)
  np.testing.assert_array_equal(_run(spec, variables, x)[0], logits)  # Eval: deterministic.
  # Inverted dropout at rate 0.5 on fc6 and fc7: the next layer gets, of the ReLU outputs
  # of the same (training) pass, about half, each doubled, and zeros elsewhere.
  assert spec.dropout == 0.5
  for prev, layer in (("fc6", "fc7"), ("fc7", "fc8")):
    e = np.maximum(np.concatenate(tr[prev][1], -1), 0.0)
    t = np.asarray(tr[layer][0])
    on = e != 0
    assert on.mean() > 0.2, layer
    kept = t != 0
    assert not (kept & ~on).any(), layer
    assert kept[on].mean() == pytest.approx(0.5, abs=0.1), layer
    np.testing.assert_allclose(t[kept], 2.0 * e[kept], rtol=1e-5, atol=1e-6)
    # Each unit is dropped independently: the towers do not share one mask.
    half = kept.shape[-1] // 2
    both_on = on[:, :half] & on[:, half:]
    differ = kept[:, :half] != kept[:, half:]
    assert differ[both_on].mean() == pytest.approx(0.5, abs=0.15), layer
  np.testing.assert_array_equal(np.concatenate(tr["fc6"][1], -1),
                                np.concatenate(seen["fc6"][1], -1))


def test_dropout_zero_makes_train_equal_eval():
  spec = _small_spec(dropout=0.0)
  variables = _random_params(spec)
  x = _images(spec)
  model = AlexNet(spec)

  @jax.jit
  def both(v, x, k):
    return (model.apply(v, x, train=True, rngs={"dropout": k}),
            model.apply(v, x, train=False))

  train, evaluate = both(variables, x, jax.random.key(0))
  np.testing.assert_array_equal(train, evaluate)


# ---------------------------------------------------------------------------------------
# Ablation switches: the structure each one promises.

def test_lrn_switch(small_run):
  spec, variables, x, logits, seen = small_run
  no_lrn = dataclasses.replace(spec, lrn=False)
  logits2, seen2 = _run(no_lrn, variables, x)  # Same params fit: LRN has none.
  np.testing.assert_array_equal(seen2["conv1"][1][0], seen["conv1"][1][0])
  assert not _same(logits2, logits)

  def pool(v):
    return jax.lax.reduce_window(v, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")

  for t in range(2):
    relu = jax.nn.relu(seen["conv1"][1][t])
    # Without LRN conv2 reads the pooled ReLU of conv1; with it, the pooled LRN of that.
    np.testing.assert_allclose(seen2["conv2"][0][t], pool(relu), rtol=1e-6)
    np.testing.assert_allclose(seen["conv2"][0][t], pool(_ref_lrn(relu, spec)),
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(seen["conv2"][0][t], seen2["conv2"][0][t], rtol=0.05)


def test_paper_pool_2x2_sizes():
  spec = dataclasses.replace(PAPER, pool_window=2, pool_stride=2)
  params, seen, _ = abstract_layers(AlexNet(spec))
  # 55 -> 27 -> 27 -> 13 -> 13 -> 13 -> 13 -> 6: the paper's sizes survive 2x2/2 pooling.
  assert seen["conv2"][0][0][1:3] == (27, 27)
  assert seen["conv3"][0][0][1:3] == (13, 13)
  assert params["fc6"]["kernel"] == (2, 9216, 2048)


def test_small_pool_2x2_changes_map_sizes():
  spec = _small_spec(pool_window=2, pool_stride=2)
  params, seen, _ = abstract_layers(AlexNet(spec))
  # 28 -> 14 -> 14 -> 7 -> 7 -> 7 -> 7 -> 3 (overlapping pools give 13, 6, 2).
  assert seen["conv2"][0][0][1:3] == (14, 14)
  assert seen["conv3"][0][0][1:3] == (7, 7)
  assert params["fc6"]["kernel"] == (2, 3 * 3 * 64, 256)


def test_one_tower_paper_net():
  c = config_lib.base_config()
  config_lib.one_tower(c)
  spec = ModelSpec.from_config(c.model)
  params, seen, _ = abstract_layers(AlexNet(spec))
  assert params == {
      "conv1": {"kernel": (1, 11, 11, 3, 48), "bias": (1, 48)},
      "conv2": {"kernel": (1, 5, 5, 48, 128), "bias": (1, 128)},
      "conv3": {"kernel": (1, 3, 3, 128, 192), "bias": (1, 192)},
      "conv4": {"kernel": (1, 3, 3, 192, 192), "bias": (1, 192)},
      "conv5": {"kernel": (1, 3, 3, 192, 256), "bias": (1, 256)},
      "fc6": {"kernel": (1, 9216, 4096), "bias": (1, 4096)},
      "fc7": {"kernel": (1, 4096, 4096), "bias": (1, 4096)},
      "fc8": {"kernel": (4096, 1000), "bias": (1000,)},
  }
  assert seen["conv2"][0] == [(1, 27, 27, 48)]


def test_tanh_one_layer_by_hand():
  spec = dataclasses.replace(
      PAPER, input_size=6, conv_features=(4,), conv_kernels=(3,), conv_strides=(1,),
      conv_padding=(0,), conv_layers=(1,), lrn=False, pool_after=(), fc_features=(),
      num_classes=3, activation="tanh")
  variables = _random_params(spec)
  p = variables["params"]
  assert sorted(p) == ["conv1", "fc6"]  # The class layer is fc{6 + number of hidden fcs}.
  x = np.asarray(_images(spec), np.float64)
  k = np.asarray(p["conv1"]["kernel"], np.float64)  # (towers=2, 3, 3, 3, 2)
  b = np.asarray(p["conv1"]["bias"], np.float64)
  out = np.zeros((2, 4, 4, 4))
  for t in range(2):
    for i in range(4):
      for j in range(4):
        out[:, i, j, 2 * t:2 * t + 2] = np.einsum(
            "nhwc,hwco->no", x[:, i:i + 3, j:j + 3], k[t]) + b[t]
  want = np.tanh(out).reshape(2, -1) @ np.asarray(p["fc6"]["kernel"]) + np.asarray(p["fc6"]["bias"])
  got, _ = _run(spec, variables, jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_drop_conv3():
  c = config_lib.base_config()
  config_lib.apply_variant(c, "drop_conv=3")
  spec = ModelSpec.from_config(c.model)
  params, seen, _ = abstract_layers(AlexNet(spec))
  assert "conv3" not in params and "conv3" not in seen
  # conv4 takes over conv3's cross-tower connection: it reads both towers' conv2 maps,
  # 2 x 128 channels, so the towers still meet once before fc6.
  assert params["conv4"]["kernel"] == (2, 3, 3, 256, 192)
  assert seen["conv4"][0] == [(1, 13, 13, 256)] * 2
  assert params["fc6"]["kernel"] == (2, 9216, 2048)
  count = sum(math.prod(s) for layer in params.values() for s in layer.values())
  # conv3 goes (kernel 3x3x256x192 and bias, per tower); conv4's kernel grows from
  # 192 to 256 input channels, exactly conv3's kernel size, so only conv3's bias and
  # conv4's old kernel leave the count.
  assert count == 60_965_224 - 2 * 192 - 2 * 3 * 3 * 192 * 192


def test_input_size_mismatch_names_the_field():
  model = AlexNet(SMALL)
  with pytest.raises(ValueError, match=r"config\.model\.input_size"):
    jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, jnp.zeros((1, 32, 32, 3)),
                                      train=False))
  variables = _random_params(SMALL)
  with pytest.raises(ValueError, match=r"config\.model\.input_size"):
    model.apply(variables, jnp.zeros((1, 27, 28, 3)), train=False)
  with pytest.raises(ValueError, match=r"config\.model\.input_size"):
    model.apply(variables, jnp.zeros((28, 28, 3)), train=False)


def test_bfloat16_compute_gives_float32_logits_close_to_float32(small_run):
  spec, variables, x, logits, seen = small_run
  bf16 = dataclasses.replace(spec, dtype="bfloat16")
  out, seen16 = _run(bf16, variables, x)
  assert out.dtype == jnp.float32
  assert seen16["conv2"][1][0].dtype == jnp.bfloat16  # It really computed in bfloat16.
  scale = float(np.abs(np.asarray(logits)).max())
  np.testing.assert_allclose(out, logits, atol=0.05 * scale)
  params = jax.eval_shape(lambda: AlexNet(bf16).init({"params": jax.random.key(0)}, x,
                                                     train=False))["params"]
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))


# ---------------------------------------------------------------------------------------
# The two readings of the paper (config.CONVENTIONS): each field against a reference.

def _pool(v, w=3, s=2):
  return jax.lax.reduce_window(v, -jnp.inf, jax.lax.max, (1, w, w, 1), (1, s, s, 1), "VALID")


def test_drop_conv2_normalises_conv1_maps_once():
  c = config_lib.base_config()
  config_lib.small_model(c)
  config_lib.apply_variant(c, "drop_conv=2")
  spec = dataclasses.replace(ModelSpec.from_config(c.model), **STRONG_LRN)
  assert spec.conv_layers == (1, 3, 4, 5) and spec.lrn_after == (1, 2)
  variables = _random_params(spec, seed=5)
  _, seen = _run(spec, variables, _images(spec, seed=5))
  for t in range(2):
    once = _ref_lrn(jax.nn.relu(seen["conv1"][1][t]), spec)
    # conv3 reads both towers: tower t's channels are the t-th half of its input.
    got = np.split(np.asarray(seen["conv3"][0][0]), 2, axis=-1)[t]
    np.testing.assert_allclose(got, _pool(_pool(once)), rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, _pool(_ref_lrn(_pool(once), spec)), rtol=0.05)


def test_lrn_alpha_per_size_is_torch_local_response_norm():
  torch = pytest.importorskip("torch")
  # The paper's constants, with activations large enough for alpha to matter.
  spec = _small_spec(lrn_alpha_per_size=True, lrn=True)
  assert (spec.lrn_size, spec.lrn_k, spec.lrn_alpha, spec.lrn_beta) == (5, 2.0, 1e-4, 0.75)
  variables = _random_params(spec, seed=6)
  x = 60.0 * _images(spec, seed=6)
  _, seen = _run(spec, variables, x)
  lrn = torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)  # Divides alpha by 5.
  for t in range(2):
    relu = np.asarray(jax.nn.relu(seen["conv1"][1][t]))
    ref = lrn(torch.from_numpy(relu.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
    assert not np.allclose(ref, relu / 2.0 ** 0.75, rtol=1e-3)  # LRN does something here.
    np.testing.assert_allclose(seen["conv2"][0][t], _pool(jnp.asarray(ref)), rtol=1e-5, atol=1e-5)


def _fc_inputs(spec, variables, x, train, key=None):
  """(ReLU outputs of fc6 and fc7, what fc7 and fc8 received), all towers concatenated."""
  _, seen = _run(spec, variables, x, train=train, key=key)
  relu = [np.maximum(np.concatenate(seen[f][1], -1), 0.0) for f in ("fc6", "fc7")]
  return relu, [np.asarray(seen[f][0]) for f in ("fc7", "fc8")]


@pytest.mark.parametrize("scaling", ["train", "test"])
def test_dropout_scaling_at_test_and_in_training(scaling):
  spec = _small_spec(dropout=0.5, dropout_scaling=scaling)
  variables = _random_params(spec, seed=7)
  x = _images(spec, seed=7)
  (e6, e7), (fc7_in, fc8_in) = _fc_inputs(spec, variables, x, train=False)
  # Test time: the paper multiplies by 0.5; inverted dropout leaves the outputs alone.
  test_scale = 0.5 if scaling == "test" else 1.0
  np.testing.assert_allclose(fc7_in, test_scale * e6, rtol=1e-6)
  np.testing.assert_allclose(fc8_in, test_scale * e7, rtol=1e-5, atol=1e-6)
  # Training: kept units pass unscaled ("test") or doubled ("train").
  (t6, _), (fc7_tr, _) = _fc_inputs(spec, variables, x, train=True, key=_key(3))
  kept = fc7_tr != 0
  assert 0.3 < kept[t6 != 0].mean() < 0.7
  train_scale = 1.0 if scaling == "test" else 2.0
  np.testing.assert_allclose(fc7_tr[kept], train_scale * t6[kept], rtol=1e-6)


def test_dropout_scalings_agree_in_expectation_and_differ_in_training():
  # Over many masks, what fc7 receives in training averages to what it receives at test,
  # for both scalings; with the same mask the inverted one is exactly 1/keep times larger,
  # which is the change in training dynamics the two readings disagree on.
  test_spec = _small_spec(dropout=0.5, dropout_scaling="test")
  inv_spec = dataclasses.replace(test_spec, dropout_scaling="train")
  variables = _random_params(test_spec, seed=8)
  x = _images(test_spec, batch=1, seed=8)
  keys = jax.random.split(_key(9), 512)

  def fc7_inputs(spec):
    run = jax.jit(jax.vmap(lambda k: run_layers(AlexNet(spec), variables, x, train=True,
                                                rngs={"dropout": k})[1]["fc7"][0]))
    return np.asarray(run(keys))

  for spec in (test_spec, inv_spec):
    _, (at_test, _) = _fc_inputs(spec, variables, x, train=False)
    samples = fc7_inputs(spec)
    sem = samples.std(0) / math.sqrt(len(keys)) + 1e-6
    assert np.all(np.abs(samples.mean(0) - at_test) < 5 * sem), spec.dropout_scaling
  np.testing.assert_allclose(fc7_inputs(inv_spec), 2.0 * fc7_inputs(test_spec), rtol=1e-6)


def _cuda_convnet_conv(x, w, b, stride, padding):
  """cuda-convnet's conv by its own rules: 1 + ceil((size + 2p - f) / s) outputs per axis,
  each the sum over the filter taps that land inside the image (others contribute 0)."""
  n, size, _, _ = x.shape
  f = w.shape[0]
  out = 1 + math.ceil((size + 2 * padding - f) / stride)
  y = np.zeros((n, out, out, w.shape[-1]))
  for oy in range(out):
    for ox in range(out):
      for dy in range(f):
        for dx in range(f):
          iy, ix = oy * stride - padding + dy, ox * stride - padding + dx
          if 0 <= iy < size and 0 <= ix < size:
            y[:, oy, ox] += x[:, iy, ix] @ w[dy, dx]
  return y + b


def test_far_padding_is_cuda_convnets_rounded_up_conv():
  # A small conv1 with the paper's awkward fit: 14 px, 5x5 filters at stride 4 leave 9 px
  # that 4 does not divide, so cuda-convnet makes 1 + ceil(9 / 4) = 4 outputs, not 3.
  c = config_lib.base_config()
  m = c.model
  m.input_size, m.conv_features, m.conv_kernels = 14, (4,), (5,)
  m.conv_strides, m.conv_padding, m.conv_layers, m.pool_after = (4,), (0,), (1,), ()
  far = variants.cuda_convnet_far_padding(m)
  assert far == (3,)
  spec = dataclasses.replace(PAPER, input_size=14, conv_features=(4,), conv_kernels=(5,),
                             conv_strides=(4,), conv_padding=(0,), conv_pad_far=far,
                             conv_layers=(1,), lrn=False, pool_after=(), fc_features=(),
                             num_classes=3)
  variables = _random_params(spec, seed=10)
  x = np.asarray(_images(spec, seed=10), np.float64)
  k = np.asarray(variables["params"]["conv1"]["kernel"], np.float64)
  b = np.asarray(variables["params"]["conv1"]["bias"], np.float64)
  _, seen = _run(spec, variables, jnp.asarray(x, jnp.float32))
  for t in range(2):
    want = _cuda_convnet_conv(x, k[t], b[t], 4, 0)
    assert want.shape[1:3] == (4, 4)
    np.testing.assert_allclose(seen["conv1"][1][t], want, rtol=1e-4, atol=1e-4)


def test_cuda_convnet_paper_net_224_gives_55_maps_and_same_params():
  c = config_lib.base_config()
  config_lib.apply_variant(c, "convention=cuda-convnet")
  spec = ModelSpec.from_config(c.model)
  assert spec.input_size == 224 and spec.conv_pad_far == (3, 0, 0, 0, 0)
  params, seen, _ = abstract_layers(AlexNet(spec), batch=2)
  assert seen["conv1"] == ([(2, 224, 224, 3)] * 2, [(2, 55, 55, 48)] * 2)
  assert seen["conv2"][0] == [(2, 27, 27, 48)] * 2
  assert seen["conv3"][0] == [(2, 13, 13, 256)] * 2
  assert seen["fc6"][0] == (2, 6 * 6 * 256)
  assert params == PAPER_PARAM_SHAPES
  # Plain (floor) convs at 224 give 54x54 maps instead.
  _, seen_floor, _ = abstract_layers(AlexNet(dataclasses.replace(spec, conv_pad_far=(0,) * 5)))
  assert seen_floor["conv1"][1][0][1:3] == (54, 54)


def test_per_layer_init_stds():
  stds = (0.01, 0.01, 0.03, 0.03, 0.03, 0.01, 0.01, 0.01)  # cuda-convnet's initW.
  _, variables = _init(dataclasses.replace(INIT_SPEC, init_stds=stds))
  names = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
  for name, std in zip(names, stds):
    assert np.asarray(variables["params"][name]["kernel"]).std() == pytest.approx(std, rel=0.05), name
