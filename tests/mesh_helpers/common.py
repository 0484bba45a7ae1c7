"""A tiny AlexNet, its batches and a plain single-device run, shared by the mesh scripts.

The scripts run in subprocesses because the number of fake CPU devices
(`JAX_NUM_CPU_DEVICES`) is fixed when JAX starts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax import config as config_lib
from alexnet_jax import optim
from alexnet_jax import step as step_lib
from alexnet_jax.models import AlexNet, ModelSpec

BATCH = 8
STEPS = 3
LRS = (0.05, 0.05, 0.02)


def tiny_config(data=-1, model=1, batch=BATCH):
  c = config_lib.base_config()
  config_lib.small_model(c, num_classes=10, crop=28)
  # Same layers, towers, LRN, pools and dropout as the paper's net, a few channels wide.
  c.model.conv_features = (8, 16, 24, 24, 16)
  c.model.fc_features = (32, 32)
  c.model.dropout = 0.5
  c.data.crop_size = 28
  c.data.image_size = 32
  c.batch_size = batch
  c.mesh.data = data
  c.mesh.model = model
  c.optim.weight_decay = 5e-4
  return c


def parts(config):
  spec = ModelSpec.from_config(config.model)
  probe = jax.eval_shape(lambda: AlexNet(spec).init(
      {"params": jax.random.PRNGKey(0)}, jnp.zeros((1, 28, 28, 3)), train=False)["params"])
  tx = optim.make_optimizer(config.optim, probe)
  return spec, tx


def batch(step, batch_size=BATCH, eval_batch=False):
  rng = np.random.default_rng(1000 + step)
  b = {"image": rng.normal(size=(batch_size, 28, 28, 3)).astype(np.float32),
       "label": rng.integers(0, 10, size=(batch_size,)).astype(np.int32)}
  if eval_batch:
    b["mask"] = np.ones((batch_size,), np.float32)
  return b


def reference(config):
  """Plain jit on one device: logits, loss, grads, params after STEPS steps, metrics."""
  spec, tx = parts(config)
  model = AlexNet(spec)
  state = jax.jit(lambda seed: step_lib.init_state(model, tx, jax.random.PRNGKey(seed),
                                                   (28, 28, 3)))(config.seed)
  first_state = state
  b0 = batch(0)
  drop = jax.random.fold_in(state.rng, state.step)
  logits = jax.jit(lambda p, x: model.apply({"params": p}, x, train=True,
                                            rngs={"dropout": drop}))(state.params, b0["image"])
  (loss, _), grads = jax.jit(jax.value_and_grad(step_lib.loss_and_metrics, has_aux=True),
                             static_argnums=(1, 4))(state.params, model, b0, drop, BATCH)
  train_step = jax.jit(step_lib.make_train_step(model, tx))
  metrics = []
  for s in range(STEPS):
    state, m = train_step(state, batch(s), jnp.float32(LRS[s]))
    metrics.append(m)
  return {"logits": logits, "loss": loss, "grads": grads, "params": state.params,
          "metrics": metrics, "state": state,
          "first_state": first_state}


def flat(tree, prefix):
  return {f"{prefix}{jax.tree_util.keystr(k)}": np.asarray(v)
          for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def max_rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))
