"""The paper's SGD rule (section 5) and the learning-rate policies that drive it.

The update of Krizhevsky et al. (2012) is

    v <- m * v - wd * lr * w - lr * dL/dw
    w <- w + v

so the learning rate is applied *before* the momentum accumulator. After a learning-rate
drop the velocity built up at the old rate decays geometrically rather than being rescaled
at once, as it would be with `optax.sgd` (which scales after `trace`). In optax terms it is
`add_decayed_weights(wd) -> scale_by_learning_rate(lr) -> trace(m)`.

The learning rate lives in the optimizer state (`optax.inject_hyperparams`): the training
loop asks a host-side policy for the rate of the coming step and writes it into the state
with `set_learning_rate`, inside or outside `jit`, without retracing. Keeping it in the
state also means it is checkpointed with the velocity.

Policies are Python objects on the host because the paper's rule (divide by 10 when
validation error stalls) depends on evaluation results that only exist between epochs;
the fixed ones (constant, steps, cosine) are optax schedules behind that same interface.

The authors' code (cuda-convnet) gives biases twice the weights' rate and no decay; see
`bias_lr_mult` and `decay_mask`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

LR_DTYPE = jnp.float32


# --------------------------------------------------------------------------------------
# Optimizer.


def paper_sgd(learning_rate: float, momentum: float = 0.9, weight_decay: float = 5e-4,
              decay_mask: Any = None, bias_lr_mult: float = 1.0,
              bias_mask: Any = None) -> optax.GradientTransformation:
  """The paper's momentum SGD with weight decay; the LR is settable per step.

  Args:
    learning_rate: initial rate; change it later with `set_learning_rate`.
    momentum: `m` in the rule above.
    weight_decay: `wd` in the rule above (multiplied by the learning rate, as in the paper).
    decay_mask: pytree of bools matching the params (True = decayed), a callable
      returning one, or None to decay every leaf. See `decay_mask`.
    bias_lr_mult: the biases' rate as a multiple of the weights' (cuda-convnet's epsB /
      epsW); applied before the momentum trace, so their velocity carries the larger rate.
    bias_mask: pytree of bools, True on the leaves `bias_lr_mult` applies to (see
      `bias_mask`); needed when bias_lr_mult != 1.
  """
  if bias_lr_mult != 1.0 and bias_mask is None:
    raise ValueError("paper_sgd: bias_lr_mult needs a bias_mask naming the bias leaves.")

  def chain(learning_rate):
    bias_rate = ([optax.masked(optax.scale(bias_lr_mult), bias_mask)]
                 if bias_lr_mult != 1.0 else [])
    return optax.chain(
        optax.add_decayed_weights(weight_decay, mask=decay_mask),
        optax.scale_by_learning_rate(learning_rate),
        *bias_rate,
        optax.trace(decay=momentum, nesterov=False),
    )

  # A fixed float32 dtype keeps the state's type identical whatever the params' dtype
  # or how the rate was set, so a jitted step never sees a new signature.
  return optax.inject_hyperparams(chain, hyperparam_dtype=LR_DTYPE)(learning_rate=learning_rate)


def set_learning_rate(opt_state, lr):
  """Returns `opt_state` with the learning rate of the next update set to `lr`.

  Finds the rate wherever the optimizer sits in the state (inside `optax.chain`,
  `optax.MultiSteps`, ...). Works on traced values inside `jit`; the rate is cast to
  float32 so that the state's type never changes and the step is not recompiled.
  """
  try:
    return optax.tree_utils.tree_set(opt_state, learning_rate=jnp.asarray(lr, LR_DTYPE))
  except KeyError:
    raise ValueError(
        "set_learning_rate needs an optimizer built by paper_sgd/make_optimizer "
        "(optax.inject_hyperparams with a 'learning_rate'); got state of type "
        f"{type(opt_state).__name__}.") from None


def get_learning_rate(opt_state) -> jax.Array:
  """The learning rate the next update will use (a float32 scalar array)."""
  lr = optax.tree_utils.tree_get(opt_state, "learning_rate")
  if lr is None:
    raise ValueError(
        "get_learning_rate needs an optimizer built by paper_sgd/make_optimizer; got state "
        f"of type {type(opt_state).__name__}.")
  return lr


def _leaf_name(path):
  last = path[-1] if path else None
  return getattr(last, "key", getattr(last, "name", None))


def bias_mask(params):
  """Pytree of bools: True on the leaves named 'bias'."""
  return jax.tree_util.tree_map_with_path(lambda path, _: _leaf_name(path) == "bias", params)


def decay_mask(params, decay_biases: bool):
  """Pytree of bools: True where weight decay applies.

  Leaves named 'bias' are excluded unless `decay_biases`; everything else (kernels) is
  decayed. The paper's text decays every weight; its authors' code never decays biases
  (cuda-convnet builds every bias with weight cost 0: akrizhevsky/cuda-convnet2
  cudaconvnet/src/layer.cu, WeightLayer's constructor), and neither do most modern
  setups, so that is the config default (config.optim.decay_biases).
  """
  if decay_biases:
    return jax.tree.map(lambda _: True, params)
  return jax.tree.map(lambda is_bias: not is_bias, bias_mask(params))


def make_optimizer(optim_config, params) -> optax.GradientTransformation:
  """Builds `paper_sgd` from config.optim for the given params (used for the masks)."""
  o = optim_config
  if o.lr <= 0:
    raise ValueError(f"config.optim.lr={o.lr} must be > 0.")
  if not 0.0 <= o.momentum < 1.0:
    raise ValueError(f"config.optim.momentum={o.momentum} must be in [0, 1).")
  if o.weight_decay < 0:
    raise ValueError(f"config.optim.weight_decay={o.weight_decay} must be >= 0.")
  if o.bias_lr_mult <= 0:
    raise ValueError(f"config.optim.bias_lr_mult={o.bias_lr_mult} must be > 0.")
  return paper_sgd(
      learning_rate=float(o.lr),
      momentum=float(o.momentum),
      weight_decay=float(o.weight_decay),
      decay_mask=decay_mask(params, bool(o.decay_biases)),
      bias_lr_mult=float(o.bias_lr_mult),
      bias_mask=bias_mask(params),
  )


# --------------------------------------------------------------------------------------
# Learning-rate policies (host side).


def _warmup(warmup_steps: float) -> optax.Schedule:
  """Multiplier ramping linearly to 1 over `warmup_steps`.

  Step 0 already gets 1/warmup_steps rather than optax's 0 (a step at rate 0 is wasted),
  hence the ramp from 1/W to 1 over W - 1 steps: step s gets (s + 1) / W.
  """
  if warmup_steps <= 1:
    return optax.constant_schedule(1.0)
  return optax.linear_schedule(1.0 / warmup_steps, 1.0, warmup_steps - 1)


def _times(a: optax.Schedule, b: optax.Schedule) -> optax.Schedule:
  return lambda step: a(step) * b(step)


class LRPolicy:
  """Common API: `lr(step, steps_per_epoch)`, `observe(epoch, val_error)`, state dicts.

  Subclasses give the rate as an optax schedule of the step (`schedule`). The policy
  evaluates it for a whole epoch of steps at once, on the host's CPU: one vectorised call
  per epoch (a few ms) instead of per step, which never waits for the accelerator.
  """

  kind = ""

  def __init__(self, base_lr: float, warmup_epochs: float = 0.0):
    self.base_lr = float(base_lr)
    self.warmup_epochs = float(warmup_epochs)
    self._epoch_key: tuple[int, int] | None = None  # (steps_per_epoch, epoch) of _epoch_lrs.
    self._epoch_lrs = None

  def schedule(self, steps_per_epoch: int) -> optax.Schedule:
    raise NotImplementedError

  def lr(self, step: int, steps_per_epoch: int) -> float:
    if steps_per_epoch < 1:
      raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    epoch, offset = divmod(int(step), steps_per_epoch)
    if self._epoch_key != (steps_per_epoch, epoch):
      steps = np.arange(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)
      with jax.default_device(jax.local_devices(backend="cpu")[0]):
        lrs = self.schedule(steps_per_epoch)(steps)
      self._epoch_lrs = np.broadcast_to(np.asarray(lrs, np.float64), steps.shape)
      self._epoch_key = (steps_per_epoch, epoch)
    return float(self._epoch_lrs[offset])

  def observe(self, epoch: int, val_error: float) -> bool:
    """Feeds a validation result; returns True if the rate changed. Most policies ignore it."""
    del epoch, val_error
    return False

  def state_dict(self) -> dict:
    return {"kind": self.kind}

  def load_state_dict(self, d: dict) -> None:
    kind = d.get("kind")
    if kind != self.kind:
      raise ValueError(
          f"checkpointed learning-rate policy is {kind!r} but config.optim.schedule is "
          f"{self.kind!r}; resume with the schedule the run started with.")

  def _warmup(self, steps_per_epoch):
    return _warmup(self.warmup_epochs * steps_per_epoch)


class Constant(LRPolicy):
  """The base rate throughout (after an optional warmup)."""

  kind = "constant"

  def schedule(self, steps_per_epoch):
    return _times(optax.constant_schedule(self.base_lr), self._warmup(steps_per_epoch))


class Steps(LRPolicy):
  """Multiplies the rate by `factor` at each epoch in `step_epochs`."""

  kind = "steps"

  def __init__(self, base_lr, step_epochs: Sequence[float], factor: float = 0.1,
               warmup_epochs: float = 0.0):
    super().__init__(base_lr, warmup_epochs)
    self.step_epochs = tuple(float(e) for e in step_epochs)
    self.factor = float(factor)

  def schedule(self, steps_per_epoch):
    # Boundaries in steps, not fractional epochs, so a drop lands on an exact step; two
    # epochs that round to one step multiply there.
    scales: dict[int, float] = {}
    for e in self.step_epochs:
      b = round(e * steps_per_epoch)
      scales[b] = scales.get(b, 1.0) * self.factor
    return _times(optax.piecewise_constant_schedule(self.base_lr, scales),
                  self._warmup(steps_per_epoch))


class Cosine(LRPolicy):
  """Linear warmup to the base rate, then a half cosine to 0 at `num_epochs`."""

  kind = "cosine"

  def __init__(self, base_lr, num_epochs: float, warmup_epochs: float = 0.0):
    super().__init__(base_lr, warmup_epochs)
    self.num_epochs = float(num_epochs)

  def schedule(self, steps_per_epoch):
    # optax.warmup_cosine_decay_schedule ramps from 0 at step 0 and is one step behind
    # this ramp (see _warmup), so the two halves are joined here instead.
    warmup = self.warmup_epochs * steps_per_epoch
    decay = optax.cosine_decay_schedule(self.base_lr, self.num_epochs * steps_per_epoch - warmup)
    if warmup <= 0:
      return decay
    ramp = _times(optax.constant_schedule(self.base_lr), _warmup(warmup))
    return optax.join_schedules([ramp, decay], [warmup])


class Plateau(LRPolicy):
  """The paper's rule: divide by 10 when validation error stops improving.

  Validation error "improves" when it falls below `best * (1 - threshold) - min_delta`,
  `best` being the lowest seen so far: `threshold` is relative (0.01: one percent of the
  error itself), `min_delta` absolute. After `patience` evaluations in a row without
  improvement the rate is multiplied by `factor` and the count restarts; after
  `max_drops` drops it stays put. Re-observing an epoch already seen is ignored, so
  replaying an evaluation after a resume cannot cause a second drop.

  The rule lives on the host rather than in `optax.contrib.reduce_on_plateau`: that one
  is fed from inside the update, so it would learn of an epoch's validation error only
  at the next step, and it counts steps, not evaluations.
  """

  kind = "plateau"

  def __init__(self, base_lr, factor: float = 0.1, patience: int = 1, min_delta: float = 0.0,
               max_drops: int = 3, warmup_epochs: float = 0.0, threshold: float = 0.0):
    super().__init__(base_lr, warmup_epochs)
    self.factor = float(factor)
    self.patience = int(patience)
    self.min_delta = float(min_delta)
    self.threshold = float(threshold)
    self.max_drops = int(max_drops)
    self.drops = 0
    self.best: float | None = None
    self.bad_epochs = 0
    self.last_epoch: int | None = None

  @property
  def current_lr(self) -> float:
    return self.base_lr * self.factor**self.drops

  def schedule(self, steps_per_epoch):
    return self._warmup(steps_per_epoch)  # A multiplier: the rate itself moves with drops.

  def lr(self, step, steps_per_epoch):
    return self.current_lr * super().lr(step, steps_per_epoch)

  def observe(self, epoch, val_error):
    if self.last_epoch is not None and epoch <= self.last_epoch:
      return False
    self.last_epoch = int(epoch)
    val_error = float(val_error)
    if self.best is None or val_error < self.best * (1.0 - self.threshold) - self.min_delta:
      self.best = val_error
      self.bad_epochs = 0
      return False
    # A worse-but-finite error still counts; only the best moves the bar.
    self.bad_epochs += 1
    if self.bad_epochs >= self.patience and self.drops < self.max_drops:
      self.drops += 1
      self.bad_epochs = 0
      return True
    return False

  def state_dict(self):
    return {
        "kind": self.kind,
        "drops": self.drops,
        "best": self.best,
        "bad_epochs": self.bad_epochs,
        "last_epoch": self.last_epoch,
    }

  def load_state_dict(self, d):
    super().load_state_dict(d)
    self.drops = int(d["drops"])
    self.best = None if d["best"] is None else float(d["best"])
    self.bad_epochs = int(d["bad_epochs"])
    self.last_epoch = None if d["last_epoch"] is None else int(d["last_epoch"])


def _plateau(o, num_epochs):
  del num_epochs
  if o.plateau_patience < 1:
    raise ValueError(f"config.optim.plateau_patience={o.plateau_patience} must be >= 1.")
  if o.plateau_max_drops < 0:
    raise ValueError(f"config.optim.plateau_max_drops={o.plateau_max_drops} must be >= 0.")
  if o.plateau_min_delta < 0:
    raise ValueError(f"config.optim.plateau_min_delta={o.plateau_min_delta} must be >= 0.")
  if not 0.0 <= o.plateau_threshold < 1.0:
    raise ValueError(f"config.optim.plateau_threshold={o.plateau_threshold} must be in [0, 1).")
  return Plateau(o.lr, factor=o.plateau_factor, patience=o.plateau_patience,
                 min_delta=o.plateau_min_delta, max_drops=o.plateau_max_drops,
                 warmup_epochs=o.warmup_epochs, threshold=o.plateau_threshold)


def _steps(o, num_epochs):
  epochs = tuple(o.step_epochs)
  if not epochs:
    raise ValueError(
        "config.optim.schedule='steps' needs config.optim.step_epochs, e.g. (30, 60, 80).")
  if list(epochs) != sorted(epochs) or any(e <= 0 for e in epochs):
    raise ValueError(
        f"config.optim.step_epochs={epochs} must be positive and increasing.")
  if epochs[-1] >= num_epochs:
    raise ValueError(
        f"config.optim.step_epochs={epochs} has a step at or after num_epochs={num_epochs}; "
        "it would never take effect.")
  return Steps(o.lr, epochs, factor=o.plateau_factor, warmup_epochs=o.warmup_epochs)


def _cosine(o, num_epochs):
  if o.warmup_epochs >= num_epochs:
    raise ValueError(
        f"config.optim.warmup_epochs={o.warmup_epochs} must be < num_epochs={num_epochs} "
        "for the cosine schedule.")
  return Cosine(o.lr, num_epochs=num_epochs, warmup_epochs=o.warmup_epochs)


def _constant(o, num_epochs):
  del num_epochs
  return Constant(o.lr, warmup_epochs=o.warmup_epochs)


_POLICIES: dict[str, Callable[[Any, float], LRPolicy]] = {
    "plateau": _plateau,
    "steps": _steps,
    "cosine": _cosine,
    "constant": _constant,
}


def make_lr_policy(optim_config, num_epochs: float) -> LRPolicy:
  """The learning-rate policy named by config.optim.schedule."""
  o = optim_config
  if o.schedule not in _POLICIES:
    raise ValueError(
        f"config.optim.schedule={o.schedule!r} is not one of {tuple(_POLICIES)}.")
  if o.lr <= 0:
    raise ValueError(f"config.optim.lr={o.lr} must be > 0.")
  if not 0.0 < o.plateau_factor <= 1.0:
    raise ValueError(f"config.optim.plateau_factor={o.plateau_factor} must be in (0, 1].")
  if o.warmup_epochs < 0:
    raise ValueError(f"config.optim.warmup_epochs={o.warmup_epochs} must be >= 0.")
  return _POLICIES[o.schedule](o, num_epochs)


