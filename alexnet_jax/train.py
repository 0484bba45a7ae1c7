"""`train_and_evaluate(config, workdir)`: the whole training run, resumable.

Rerunning with the same workdir resumes from the latest checkpoint: the data iterator is
rebuilt at the checkpointed step, dropout keys are derived from the step, and the
learning-rate policy's state is part of the checkpoint, so on CPU a resumed run ends with
exactly the params of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from alexnet_jax import checkpoint as ckpt_lib
from alexnet_jax import config as config_lib
from alexnet_jax import data
from alexnet_jax import files
from alexnet_jax import mesh as mesh_lib
from alexnet_jax import metrics as metrics_lib
from alexnet_jax import optim
from alexnet_jax import provenance
from alexnet_jax import step as step_lib
from alexnet_jax.models import AlexNet, ModelSpec, count_params


class NonFiniteLoss(RuntimeError):
  """Training diverged; the checkpoints on disk predate the divergence."""


class Interrupted(Exception):
  """SIGTERM arrived; a checkpoint was saved and the same command resumes."""

  def __init__(self, step):
    super().__init__(f"interrupted at step {step}; checkpoint saved, rerun the same command to resume")
    self.step = step


def _record_config(config, workdir) -> None:
  path = os.path.join(workdir, "config.json")
  new = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    changed = list(config_lib.diff(old, new))
    if changed:
      logging.warning("Resuming %s with a changed config: %s", workdir, ", ".join(changed))
  files.write_json(path, new)


def _check_against_data(config, info) -> None:
  if config.model.num_classes != info.num_classes:
    raise config_lib.ConfigError(
        f"config.model.num_classes={config.model.num_classes} but dataset "
        f"{config.data.dataset!r} has {info.num_classes} classes; set --config.model.num_classes="
        f"{info.num_classes}.")
  if config.optim.schedule == "plateau" and not info.num_val:
    raise config_lib.ConfigError(
        "config.optim.schedule='plateau' needs validation data, but the validation split is empty; "
        "set config.data.val_split, or config.data.val_fraction>0, or another schedule.")
  if data.steps_per_epoch(config, info) < 1:
    raise config_lib.ConfigError(
        f"config.batch_size={config.batch_size} exceeds the {info.num_train} training examples.")


def _with_crops(config, crops: str):
  """A copy of the config whose evaluations use `crops` ('center' or 'ten')."""
  view = ml_collections.ConfigDict(config.to_dict())
  view.data.eval_crops = crops
  return view


def evaluate(eval_step, params, config, split: str, mesh) -> dict[str, float]:
  sums = None
  index, count = mesh_lib.data_shard(mesh)
  for batch in data.eval_batches(config, split=split, process_index=index, process_count=count):
    m = eval_step(params, mesh_lib.put_batch(batch, mesh))
    sums = m if sums is None else jax.tree.map(jnp.add, sums, m)
  return step_lib.means(jax.device_get(sums))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains, evaluates every epoch, checkpoints, and returns the final metrics."""
  config_lib.validate(config)
  mesh_lib.initialize_distributed(config)  # Before anything touches a device.
  mesh = mesh_lib.make_mesh(config)
  info = data.dataset_info(config)  # Fails fast with how to prepare a missing dataset.
  _check_against_data(config, info)
  os.makedirs(workdir, exist_ok=True)
  is_chief = jax.process_index() == 0
  if is_chief:
    _record_config(config, workdir)
    provenance.record(workdir)  # Commit, dirty flag, packages, devices, command line.

  spec = ModelSpec.from_config(config.model)
  model = AlexNet(spec)
  crop = config.data.crop_size
  rng = jax.random.PRNGKey(config.seed)
  probe = jax.eval_shape(lambda: model.init({"params": rng}, jnp.zeros((1, crop, crop, info.channels)),
                                            train=False)["params"])
  tx = optim.make_optimizer(config.optim, probe)
  # Created directly in its shardings: with mesh.model=2 no device ever holds both towers.
  state = mesh_lib.make_init_state(spec, tx, mesh, (crop, crop, info.channels))(config.seed)
  logging.info("AlexNet with %s parameters, map sizes %s, mesh %s", f"{count_params(state.params):,}",
               config_lib.feature_map_sizes(config.model), dict(mesh.shape))

  policy = optim.make_lr_policy(config.optim, config.num_epochs)
  # Per-epoch validation may use cheaper views than the final test (data.val_crops).
  val_config = _with_crops(config, config.data.val_crops or config.data.eval_crops)
  spe = data.steps_per_epoch(config, info)
  total_steps = config.num_epochs * spe
  if config.max_steps > 0:
    total_steps = min(total_steps, config.max_steps)

  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                       keep=config.keep_checkpoints)
  host = {"wall_time": 0.0, "epoch_sums": None, "policy": policy.state_dict()}
  shard_index, shard_count = mesh_lib.data_shard(mesh)
  batches = data.train_iterator(config, process_index=shard_index, process_count=shard_count)
  # The target carries this run's shardings, so a checkpoint from any mesh shape restores;
  # the data iterator comes back at the batch after the checkpointed step.
  restored = checkpointer.restore(state, data_iterator=batches)
  if restored is not None:
    state, host = restored
    policy.load_state_dict(host["policy"])
    logging.info("Resumed from step %d in %s", int(state.step), workdir)
  start_step = int(state.step)

  # Rows a killed run logged after its last checkpoint are replayed on resume: drop them.
  writer = metrics_lib.MetricWriter(workdir, enabled=is_chief, drop_after_step=start_step,
                                    config=config)
  train_step, eval_step = mesh_lib.make_sharded_steps(spec, tx, mesh, config)

  stop = {"signal": False}
  previous_handler = None
  if hasattr(signal, "SIGTERM"):
    try:
      previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop.update(signal=True))
    except ValueError:  # Not the main thread: leave signals alone.
      previous_handler = None

  def save(step, force=False):
    nonlocal loss_since_save
    # Never checkpoint a diverged model: the last good checkpoint must stay the latest.
    if not math.isfinite(float(loss_since_save)):
      raise NonFiniteLoss(f"non-finite training loss before step {step}; the last good "
                          f"checkpoint in {checkpointer.directory} is kept. Lower config.optim.lr?")
    loss_since_save = 0.0
    sums = None if epoch_sums is None else {
        k: float(v) for k, v in jax.device_get(epoch_sums).items()}
    checkpointer.save(step, state, {"wall_time": wall_time, "policy": policy.state_dict(),
                                    "epoch_sums": sums}, force=force, data_iterator=batches)

  wall_time = float(host["wall_time"])
  epoch_sums = host["epoch_sums"]
  window = None
  loss_since_save = 0.0  # A device scalar between saves: checking it costs no per-step sync.
  progress = metrics_lib.Progress(total_steps, start_step, config.batch_size)
  last_val = None
  t_window = time.time()
  step = start_step
  try:
    while step < total_steps:
      t0 = time.time()
      lr = policy.lr(step, spe)
      state, m = train_step(state, mesh_lib.put_batch(next(batches), mesh), np.float32(lr))
      window = m if window is None else jax.tree.map(jnp.add, window, m)
      epoch_sums = m if epoch_sums is None else jax.tree.map(jnp.add, epoch_sums, m)
      loss_since_save = loss_since_save + m["loss"]
      step += 1
      wall_time += time.time() - t0
      epoch = step / spe

      if step % config.log_every_steps == 0 or step == total_steps:
        means = step_lib.means(jax.device_get(window))
        if not math.isfinite(means["loss"]):
          raise NonFiniteLoss(
              f"training loss became {means['loss']} by step {step} (epoch {epoch:.2f}, lr {lr:g}); "
              f"the last good checkpoint in {checkpointer.directory} is kept. Lower config.optim.lr?")
        elapsed = time.time() - t_window
        ips = float(jax.device_get(window["count"])) / max(elapsed, 1e-9)  # count is global.
        writer.write({"kind": "train", "step": step, "epoch": epoch, "lr": lr,
                      "images_per_sec": ips, "wall_time": wall_time, **means})
        progress.update(step, epoch=epoch, lr=lr, images_per_sec=ips, loss=means["loss"],
                        top1_err=means["top1_err"])
        window, t_window = None, time.time()

      if step % spe == 0:
        means = step_lib.means(jax.device_get(epoch_sums))
        writer.write({"kind": "train_epoch", "step": step, "epoch": epoch, "lr": lr,
                      "wall_time": wall_time, **means})
        epoch_sums = None
        if info.num_val:
          last_val = evaluate(eval_step, state.params, val_config, "val", mesh)
          writer.write({"kind": "val", "step": step, "epoch": epoch, "lr": lr,
                        "crops": val_config.data.eval_crops, "wall_time": wall_time, **last_val})
          logging.info("epoch %d (step %d, lr %g): val loss %.4f top-1 err %.2f%% top-5 err %.2f%%",
                       round(epoch), step, lr, last_val["loss"], 100 * last_val["top1_err"],
                       100 * last_val["top5_err"])
          if policy.observe(round(epoch), last_val["top1_err"]):
            logging.info("learning rate now %g", policy.lr(step, spe))
        save(step, force=True)
      elif step % config.checkpoint_every_steps == 0:
        save(step)

      if stop["signal"]:
        save(step, force=True)
        checkpointer.wait()
        raise Interrupted(step)

    if step % spe != 0 or checkpointer.latest_step() != step:
      save(step, force=True)
    checkpointer.wait()
    final = {"step": step, "epoch": step / spe, "wall_time": wall_time, "val": last_val,
             "test": {}}
    if config.data.test_split:
      views = ["center", "ten"] if config.data.eval_crops == "ten" else ["center"]
      for crops in views:
        result = evaluate(eval_step, state.params, _with_crops(config, crops), "test", mesh)
        final["test"][crops] = result
        writer.write({"kind": "test", "step": step, "epoch": step / spe, "crops": crops,
                      "wall_time": wall_time, **result})
        logging.info("test (%s crop%s): top-1 err %.2f%% top-5 err %.2f%%", crops,
                     "" if crops == "center" else "s", 100 * result["top1_err"],
                     100 * result["top5_err"])
    if is_chief:
      files.write_json(os.path.join(workdir, "final.json"), final)
    return final
  finally:
    progress.close()
    writer.close()
    checkpointer.close()
    if previous_handler is not None:
      signal.signal(signal.SIGTERM, previous_handler)
