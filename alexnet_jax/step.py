"""The loss, the train step and the eval step, written once for every device layout.

Steps return metric *sums* (and counts) rather than means so that a sharded step only
has to add them across devices; the host divides when it logs.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from alexnet_jax import optim
from alexnet_jax.models import AlexNet


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array  # Base key; step s draws its dropout masks from fold_in(rng, s).


def init_state(model: AlexNet, tx: optax.GradientTransformation, rng, input_shape) -> TrainState:
  """Creates params with the paper's init; `input_shape` is (H, W, C) of one image."""
  init_rng, train_rng = jax.random.split(rng)
  params = model.init({"params": init_rng}, jnp.zeros((1, *input_shape), jnp.float32),
                      train=False)["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params), rng=train_rng)


def error_counts(logits_or_probs, labels, weights):
  """Weighted counts of top-1 and top-5 mistakes (top-k capped at the class count)."""
  k = min(5, logits_or_probs.shape[-1])
  _, top = jax.lax.top_k(logits_or_probs, k)
  hit1 = top[:, 0] == labels
  hit5 = jnp.any(top == labels[:, None], axis=-1)
  return (jnp.sum(weights * (1.0 - hit1)), jnp.sum(weights * (1.0 - hit5)))


def loss_and_metrics(params, model: AlexNet, batch, dropout_rng, global_batch: int):
  """Mean cross-entropy over the *global* batch, so per-device losses simply add up."""
  logits = model.apply({"params": params}, batch["image"], train=True,
                       rngs={"dropout": dropout_rng})
  labels = batch["label"]
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  ones = jnp.ones_like(nll)
  top1, top5 = error_counts(logits, labels, ones)
  metrics = {"loss": jnp.sum(nll), "top1_err": top1, "top5_err": top5,
             "count": jnp.sum(ones)}
  return jnp.sum(nll) / global_batch, metrics


def make_train_step(model: AlexNet, tx: optax.GradientTransformation,
                    reduce_grads: Callable = lambda g: g,
                    reduce_metrics: Callable = lambda m: m,
                    batch_scale: int = 1):
  """Returns train_step(state, batch, lr) -> (state, metric sums).

  `reduce_grads`/`reduce_metrics` are identities on one device; the mesh code passes the
  collectives that make a sharded step equal to this one. `batch_scale` turns the local
  batch size into the global one.
  """

  def train_step(state: TrainState, batch, lr):
    dropout_rng = jax.random.fold_in(state.rng, state.step)
    global_batch = batch["label"].shape[0] * batch_scale
    grad_fn = jax.value_and_grad(loss_and_metrics, has_aux=True)
    (_, metrics), grads = grad_fn(state.params, model, batch, dropout_rng, global_batch)
    grads = reduce_grads(grads)
    opt_state = optim.set_learning_rate(state.opt_state, lr)
    updates, opt_state = tx.update(grads, opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = reduce_metrics(metrics)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


def make_eval_step(model: AlexNet, reduce_metrics: Callable = lambda m: m):
  """Returns eval_step(params, batch) -> metric sums over the unmasked examples.

  With ten crops (`image` of shape (B, 10, H, W, C)) the softmax outputs of the views
  are averaged before the loss and errors are taken, as in the paper.
  """

  def eval_step(params, batch):
    images, labels, mask = batch["image"], batch["label"], batch["mask"]
    if images.ndim == 5:
      b, v = images.shape[:2]
      logits = model.apply({"params": params}, images.reshape(b * v, *images.shape[2:]),
                           train=False)
      probs = jnp.mean(jax.nn.softmax(logits.reshape(b, v, -1)), axis=1)
      nll = -jnp.log(jnp.take_along_axis(probs, labels[:, None], axis=-1)[:, 0] + 1e-12)
      ranked = probs
    else:
      logits = model.apply({"params": params}, images, train=False)
      nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      ranked = logits
    top1, top5 = error_counts(ranked, labels, mask)
    return reduce_metrics({"loss": jnp.sum(nll * mask), "top1_err": top1, "top5_err": top5,
                           "count": jnp.sum(mask)})

  return eval_step


def add_sums(sums, metric_sums):
  """Running total of steps' metric sums (None before the first step), on the device."""
  return metric_sums if sums is None else jax.tree.map(jnp.add, sums, metric_sums)


def means(metric_sums) -> dict[str, float]:
  """Host-side: turns accumulated sums into per-example means."""
  count = float(metric_sums["count"])
  return {k: float(v) / max(count, 1.0) for k, v in metric_sums.items() if k != "count"}
