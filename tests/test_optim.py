"""The paper's SGD rule against a NumPy transcription, and the learning-rate policies."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alexnet_jax import config as config_lib
from alexnet_jax import optim


def _params():
  rng = np.random.default_rng(0)
  return {
      "conv1": {"kernel": rng.normal(size=(2, 3, 3, 4)).astype(np.float32),
                "bias": rng.normal(size=(2, 4)).astype(np.float32)},
      "fc8": {"kernel": rng.normal(size=(6, 5)).astype(np.float32),
              "bias": rng.normal(size=(5,)).astype(np.float32)},
  }


def _grads(step):
  rng = np.random.default_rng(100 + step)
  return jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), _params())


def _numpy_paper_sgd(params, lrs, momentum, wd, decay_biases, bias_lr_mult=1.0):
  """Section 5 of the paper, line by line, in float64; biases at `bias_lr_mult` x lr."""
  w = jax.tree.map(lambda p: p.astype(np.float64), params)
  v = jax.tree.map(np.zeros_like, w)
  for step, lr in enumerate(lrs):
    g = _grads(step)
    for layer in w:
      for name in w[layer]:
        decay = wd if (name != "bias" or decay_biases) else 0.0
        rate = lr * (bias_lr_mult if name == "bias" else 1.0)
        v[layer][name] = (momentum * v[layer][name] - decay * rate * w[layer][name]
                          - rate * g[layer][name])
        w[layer][name] = w[layer][name] + v[layer][name]
  return w, v


@pytest.mark.parametrize("decay_biases", [False, True])
def test_matches_paper_rule_across_lr_drop(decay_biases):
  params = _params()
  lrs = [0.01] * 6 + [0.001] * 6  # 12 steps with a ÷10 drop in the middle.
  wd = 5e-3  # Larger than the paper's so that decay visibly matters over 12 steps.
  tx = optim.paper_sgd(0.01, momentum=0.9, weight_decay=wd,
                       decay_mask=optim.decay_mask(params, decay_biases))
  state = tx.init(params)

  @jax.jit
  def step(p, s, g, lr):
    s = optim.set_learning_rate(s, lr)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  p = params
  for i, lr in enumerate(lrs):
    p, state = step(p, state, _grads(i), lr)
  want_w, want_v = _numpy_paper_sgd(params, lrs, 0.9, wd, decay_biases)

  # The trace (velocity) is the last element of the inner chain's state.
  got_v = state.inner_state[2].trace
  for layer in params:
    for name in params[layer]:
      np.testing.assert_allclose(p[layer][name], want_w[layer][name], atol=1e-6, rtol=1e-6)
      np.testing.assert_allclose(got_v[layer][name], want_v[layer][name], atol=1e-6, rtol=1e-6)


def test_bias_lr_mult_matches_numpy_rule():
  # cuda-convnet's epsB = 2 epsW, no bias decay: built from a config as train.py does.
  c = config_lib.base_config()
  config_lib.apply_variant(c, "convention=cuda-convnet")
  assert c.optim.bias_lr_mult == 2.0 and not c.optim.decay_biases
  c.optim.weight_decay = 5e-3
  params = _params()
  tx = optim.make_optimizer(c.optim, params)
  state = tx.init(params)
  lrs = [0.01] * 5 + [0.001] * 5

  @jax.jit
  def step(p, s, g, lr):
    u, s = tx.update(g, optim.set_learning_rate(s, lr), p)
    return optax.apply_updates(p, u), s

  p = params
  for i, lr in enumerate(lrs):
    p, state = step(p, state, _grads(i), lr)
  want_w, _ = _numpy_paper_sgd(params, lrs, 0.9, 5e-3, decay_biases=False, bias_lr_mult=2.0)
  same_rate, _ = _numpy_paper_sgd(params, lrs, 0.9, 5e-3, decay_biases=False)
  for layer in params:
    for name in params[layer]:
      np.testing.assert_allclose(p[layer][name], want_w[layer][name], atol=1e-6, rtol=1e-6)
  assert not np.allclose(want_w["fc8"]["bias"], same_rate["fc8"]["bias"], rtol=1e-3)
  with pytest.raises(ValueError, match="bias_mask"):
    optim.paper_sgd(0.1, bias_lr_mult=2.0)


def test_lr_drop_decays_old_velocity_instead_of_rescaling():
  # With a zero gradient after the drop, the paper's velocity keeps moving at the old
  # scale (times momentum); optax.sgd-style rescaling would shrink it by 10 at once.
  p = {"w": jnp.zeros(())}
  tx = optim.paper_sgd(1.0, momentum=0.5, weight_decay=0.0)
  s = tx.init(p)
  _, s = tx.update({"w": jnp.ones(())}, s, p)  # v = -1
  s = optim.set_learning_rate(s, 0.1)
  u, _ = tx.update({"w": jnp.zeros(())}, s, p)
  assert float(u["w"]) == pytest.approx(-0.5)


def test_decay_mask_and_biases():
  params = _params()
  mask = optim.decay_mask(params, decay_biases=False)
  assert mask == {"conv1": {"kernel": True, "bias": False}, "fc8": {"kernel": True, "bias": False}}
  assert all(jax.tree.leaves(optim.decay_mask(params, decay_biases=True)))

  zero_grads = jax.tree.map(jnp.zeros_like, params)
  for decay_biases in (False, True):
    tx = optim.paper_sgd(0.1, weight_decay=0.5, decay_mask=optim.decay_mask(params, decay_biases))
    u, _ = tx.update(zero_grads, tx.init(params), params)
    # With zero gradients the whole update is -lr * wd * w where decayed, 0 elsewhere.
    np.testing.assert_allclose(u["fc8"]["kernel"], -0.05 * params["fc8"]["kernel"], rtol=1e-6)
    want_bias = -0.05 * params["fc8"]["bias"] if decay_biases else 0.0
    np.testing.assert_allclose(u["fc8"]["bias"], want_bias, rtol=1e-6)


def test_set_lr_inside_jit_does_not_retrace():
  params = {"w": jnp.ones((3,))}
  tx = optim.paper_sgd(0.1, momentum=0.0, weight_decay=0.0)
  traces = []

  @jax.jit
  def step(p, s, lr):
    traces.append(1)
    s = optim.set_learning_rate(s, lr)
    u, s = tx.update({"w": jnp.ones((3,))}, s, p)
    return u, s

  s = tx.init(params)
  u1, s = step(params, s, 0.1)
  u2, s = step(params, s, 0.01)
  u3, s = step(params, s, 0.5)
  # One trace: the state coming out of the step has exactly the type of the one from
  # init. (Mixing Python floats and np.float32 for `lr` itself would retrace, as for any
  # jitted argument, so the train loop should pass one kind consistently.)
  assert len(traces) == 1
  np.testing.assert_allclose(u1["w"], -0.1, rtol=1e-6)
  np.testing.assert_allclose(u2["w"], -0.01, rtol=1e-6)
  np.testing.assert_allclose(u3["w"], -0.5, rtol=1e-6)
  assert float(optim.get_learning_rate(s)) == pytest.approx(0.5)
  assert optim.get_learning_rate(s).dtype == jnp.float32


def test_helpers_find_lr_in_wrapped_state_and_reject_others():
  params = {"w": jnp.ones(())}
  tx = optax.chain(optax.clip_by_global_norm(1.0), optim.paper_sgd(0.1))
  s = optim.set_learning_rate(tx.init(params), 0.02)
  assert float(optim.get_learning_rate(s)) == pytest.approx(0.02)
  with pytest.raises(ValueError, match="paper_sgd"):
    optim.set_learning_rate(optax.sgd(0.1).init(params), 0.1)


def test_lr_helpers_inside_multisteps_under_jit():
  # Gradient accumulation wraps the optimizer; the rate is still found and set, in jit.
  params = _params()
  tx = optax.MultiSteps(optim.paper_sgd(0.1, weight_decay=0.0), every_k_schedule=2)

  @jax.jit
  def step(p, s, g, lr):
    u, s = tx.update(g, optim.set_learning_rate(s, lr), p)
    return optax.apply_updates(p, u), s

  s = tx.init(params)
  p, s = step(params, s, _grads(0), 0.5)
  np.testing.assert_array_equal(p["fc8"]["kernel"], params["fc8"]["kernel"])  # Accumulating.
  p, s = step(p, s, _grads(1), 0.5)
  assert float(optim.get_learning_rate(s)) == pytest.approx(0.5)
  mean_grad = (_grads(0)["fc8"]["kernel"] + _grads(1)["fc8"]["kernel"]) / 2
  np.testing.assert_allclose(p["fc8"]["kernel"], params["fc8"]["kernel"] - 0.5 * mean_grad,
                             rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="get_learning_rate"):
    optim.get_learning_rate(optax.sgd(0.1).init(params))


def test_make_optimizer_from_config():
  c = config_lib.base_config()
  params = _params()
  tx = optim.make_optimizer(c.optim, params)
  s = tx.init(params)
  assert float(optim.get_learning_rate(s)) == pytest.approx(c.optim.lr)
  c.optim.momentum = 1.5
  with pytest.raises(ValueError, match="config.optim.momentum"):
    optim.make_optimizer(c.optim, params)


# ---- policies -----------------------------------------------------------------------


def _optim_cfg(**kw):
  o = config_lib.base_config().optim
  for k, v in kw.items():
    o[k] = v
  return o


def test_plateau_drops_after_patience_and_respects_max_drops():
  p = optim.make_lr_policy(_optim_cfg(lr=0.01, plateau_patience=2, plateau_max_drops=2), 90)
  assert isinstance(p, optim.Plateau)
  errs = [0.9, 0.8, 0.8, 0.81, 0.7, 0.75, 0.72, 0.72, 0.73, 0.74, 0.75]
  changed = [p.observe(e, err) for e, err in enumerate(errs)]
  #        0.9    0.8    0.8    0.81  0.7    0.75   0.72  0.72   0.73   0.74   0.75
  assert changed == [False, False, False, True, False, False, True, False, False, False, False]
  assert p.drops == 2
  assert p.lr(0, 10) == pytest.approx(0.0001)


def test_plateau_min_delta_and_replayed_epoch():
  p = optim.Plateau(1.0, patience=1, min_delta=0.05)
  assert not p.observe(0, 0.5)
  assert p.observe(1, 0.47)  # Better, but not by more than min_delta.
  assert not p.observe(1, 0.9)  # Same epoch again (e.g. after a resume): ignored.
  assert p.lr(5, 10) == pytest.approx(0.1)


def test_plateau_threshold_is_relative():
  p = optim.Plateau(1.0, patience=1, threshold=0.1)
  assert not p.observe(0, 0.5)
  assert p.observe(1, 0.46)  # Not below 0.5 * (1 - 0.1) = 0.45.
  assert not p.observe(2, 0.44)  # Below it: the new best.
  assert p.best == 0.44


def _simulated_val_errors(policy, seed, epochs=90, noise=0.004):
  """Feeds `policy` a noisy per-epoch top-1 error of an ImageNet-like run; returns drop epochs.

  Under each rate the error falls as a power law from where it stood towards a floor
  that each drop lowers (0.46, 0.42, 0.41, 0.405); `noise` (0.4 points) is about the
  binomial std of a 50,000-image validation error plus run-to-run jitter.
  """
  rng = np.random.default_rng(seed)
  floors = (0.46, 0.42, 0.41, 0.405)
  start, since, drops = 0.99, 0, []
  for epoch in range(epochs):
    floor = floors[min(len(drops), 3)]
    err = floor + (start - floor) / (1 + since / 3.0)
    since += 1
    if policy.observe(epoch, err + rng.normal(0.0, noise)):
      drops.append(epoch)
      start, since = err, 0
  return drops


def test_plateau_defaults_drop_about_as_often_as_the_paper():
  # The paper divided the rate by 10 three times in about 90 epochs. The config defaults
  # do so on simulated curves, spread over the run; patience 1 with no threshold (the old
  # defaults) spends all three drops on noise within the first ~30 epochs.
  o = _optim_cfg()
  old = _optim_cfg(plateau_patience=1, plateau_threshold=0.0)
  for seed in range(8):
    drops = _simulated_val_errors(optim.make_lr_policy(o, 90), seed)
    assert len(drops) == 3, (seed, drops)
    assert drops[0] >= 20 and drops[-1] < 80, (seed, drops)
    assert min(np.diff(drops)) >= 6, (seed, drops)
    early = _simulated_val_errors(optim.make_lr_policy(old, 90), seed)
    assert len(early) == 3 and early[-1] < 35, (seed, early)


def test_plateau_state_round_trips_through_json():
  p = optim.Plateau(0.01, patience=1, max_drops=3)
  for e, err in enumerate([0.5, 0.6, 0.4, 0.45]):
    p.observe(e, err)
  d = json.loads(json.dumps(p.state_dict()))
  q = optim.Plateau(0.01, patience=1, max_drops=3)
  q.load_state_dict(d)
  assert q.state_dict() == p.state_dict()
  assert q.lr(0, 1) == p.lr(0, 1)
  # Both continue identically.
  assert p.observe(4, 0.46) == q.observe(4, 0.46)
  assert q.state_dict() == p.state_dict()
  with pytest.raises(ValueError, match="config.optim.schedule"):
    optim.Constant(0.01).load_state_dict(d)


def test_steps_values():
  p = optim.make_lr_policy(_optim_cfg(schedule="steps", lr=0.1, step_epochs=(2, 4)), 6)
  spe = 10
  assert p.lr(0, spe) == pytest.approx(0.1)
  assert p.lr(19, spe) == pytest.approx(0.1)
  assert p.lr(20, spe) == pytest.approx(0.01)
  assert p.lr(39, spe) == pytest.approx(0.01)
  assert p.lr(40, spe) == pytest.approx(0.001)
  assert not p.observe(3, 0.5)
  assert json.loads(json.dumps(p.state_dict())) == {"kind": "steps"}


def test_cosine_values_with_warmup():
  p = optim.make_lr_policy(_optim_cfg(schedule="cosine", lr=1.0, warmup_epochs=1), 5)
  spe = 10
  assert p.lr(0, spe) == pytest.approx(0.1)
  assert p.lr(4, spe) == pytest.approx(0.5)
  assert p.lr(10, spe) == pytest.approx(1.0)  # Warmup over: the top of the cosine.
  assert p.lr(30, spe) == pytest.approx(0.5)  # Halfway through the 40 decay steps.
  assert p.lr(20, spe) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
  assert p.lr(50, spe) == pytest.approx(0.0, abs=1e-12)
  assert p.lr(60, spe) == pytest.approx(0.0, abs=1e-12)


def test_warmup_gives_step_s_the_rate_times_s_plus_1_over_w():
  # Today's ramp, (s + 1) / W of the rate at step s and the full rate from s = W - 1, for
  # every policy, also for a warm-up that is not a whole number of steps.
  spe = 4
  for warmup_epochs in (1.0, 2.5 / 4):
    w = warmup_epochs * spe
    for schedule, extra in (("constant", {}), ("plateau", {}), ("steps", {"step_epochs": (3,)})):
      p = optim.make_lr_policy(_optim_cfg(schedule=schedule, lr=0.2, warmup_epochs=warmup_epochs,
                                          **extra), 5)
      for step in range(8):
        assert p.lr(step, spe) == pytest.approx(0.2 * min(1.0, (step + 1) / w), rel=1e-6), (
            schedule, warmup_epochs, step)
  p = optim.make_lr_policy(_optim_cfg(schedule="steps", lr=0.2, step_epochs=(0.75,)), 5)
  assert [p.lr(s, 4) for s in (2, 3)] == pytest.approx([0.2, 0.02])  # 0.75 epochs = step 3.


def test_constant_and_factory_errors():
  assert optim.make_lr_policy(_optim_cfg(schedule="constant", lr=0.3), 9).lr(123, 7) == 0.3
  with pytest.raises(ValueError, match="config.optim.schedule='exp'"):
    optim.make_lr_policy(_optim_cfg(schedule="exp"), 9)
  with pytest.raises(ValueError, match="config.optim.step_epochs"):
    optim.make_lr_policy(_optim_cfg(schedule="steps"), 9)
  with pytest.raises(ValueError, match="config.optim.step_epochs"):
    optim.make_lr_policy(_optim_cfg(schedule="steps", step_epochs=(5, 3)), 9)
  with pytest.raises(ValueError, match="config.optim.plateau_patience"):
    optim.make_lr_policy(_optim_cfg(plateau_patience=0), 9)
  with pytest.raises(ValueError, match="config.optim.warmup_epochs"):
    optim.make_lr_policy(_optim_cfg(schedule="cosine", warmup_epochs=9), 9)
  with pytest.raises(ValueError, match="config.optim.plateau_threshold"):
    optim.make_lr_policy(_optim_cfg(plateau_threshold=1.0), 9)
