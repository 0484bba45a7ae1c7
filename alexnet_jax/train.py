"""`train_and_evaluate(config, workdir)`: the whole training run, resumable.

Rerunning with the same workdir resumes from the latest checkpoint: the data iterator's
position is part of it (grain), dropout keys are derived from the step, and the
learning-rate policy's state is part of the checkpoint, so on CPU a resumed run ends with
exactly the params of an uninterrupted one. The host state also carries the running sums of
the log window and the epoch and the last val result, so the metric rows match too.

Around the loop: `workdir.WorkdirLock` (one run per workdir), `workdir.record_config` (no
silent config change), `checkpoint.Checkpointer` (falls back past damaged checkpoints) and
`preemption.StopSignals` (save at an agreed step on SIGTERM/SIGUSR2/SIGINT).
"""

from __future__ import annotations

import json
import math
import os
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
from alexnet_jax import preemption
from alexnet_jax import provenance
from alexnet_jax import step as step_lib
from alexnet_jax import workdir as workdir_lib
from alexnet_jax.models import AlexNet, ModelSpec, count_params


class NonFiniteLoss(RuntimeError):
  """Training diverged; the checkpoints on disk predate the divergence."""


# Defined with the signal handling, where the launcher can import it without JAX.
Interrupted = preemption.Interrupted


def _lock_workdir(workdir, is_chief):
  """The chief holds the lock; every process learns whether it got it (or all would hang)."""
  lock = workdir_lib.WorkdirLock(workdir)
  busy = None
  if is_chief:
    try:
      lock.acquire()
    except workdir_lib.WorkdirBusy as e:
      busy = e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    if int(np.max(multihost_utils.process_allgather(np.int32(busy is not None)))) and not busy:
      busy = workdir_lib.WorkdirBusy(f"{workdir} is in use (process 0 could not lock it)")
  if busy is not None:
    lock.release()
    raise busy
  return lock


def _already_finished(workdir, total_steps):
  final = workdir_lib.read_final(workdir)
  if final is not None and isinstance(final.get("step"), int) and final["step"] >= total_steps:
    logging.info("%s already finished (step %d, final.json written); leaving it as it is. Delete "
                 "its final.json to redo the final evaluation.", workdir, final["step"])
    return final
  return None


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


def evaluate(eval_step, params, config, split: str, mesh, stop=None) -> dict[str, float]:
  """Means of the eval metrics over `split`; None if `stop` (a StopSignals) asks to stop."""
  sums = None
  index, count = mesh_lib.data_shard(mesh)
  batches = data.eval_batches(config, split=split, process_index=index, process_count=count)
  for i, batch in enumerate(batches):
    # Every 16 batches: the same batches on every process, so they agree at the same one.
    if stop is not None and stop.requested(sync_point=i % 16 == 0):
      return None
    m = eval_step(params, mesh_lib.put_batch(batch, mesh))
    sums = step_lib.add_sums(sums, m)
  return step_lib.means(jax.device_get(sums))


def _host_sums(sums):
  """Device metric sums as Python floats for the JSON host state (exact for float32)."""
  return None if sums is None else {k: float(v) for k, v in jax.device_get(sums).items()}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       force_config_change: bool = False) -> dict:
  """Trains, evaluates every epoch, checkpoints, and returns the final metrics.

  One run per workdir at a time (`workdir.WorkdirLock`); a finished workdir is returned
  as it is; a config change that would mix two runs is refused unless
  `force_config_change`. SIGTERM, SIGUSR2 and SIGINT save and raise `Interrupted`, after
  handing the signal on to a handler installed before (submitit's requeue).
  """
  config_lib.validate(config)
  mesh_lib.initialize_distributed(config)  # Before anything touches a device.
  mesh = mesh_lib.make_mesh(config)
  info = data.dataset_info(config)  # Fails fast with how to prepare a missing dataset.
  _check_against_data(config, info)
  os.makedirs(workdir, exist_ok=True)
  is_chief = jax.process_index() == 0
  lock = _lock_workdir(workdir, is_chief)
  stop = preemption.StopSignals()
  try:
    stop.install()
    return _train(config, workdir, mesh, info, is_chief, stop, force_config_change)
  except Interrupted:
    stop.restore()
    lock.release()
    stop.chain()  # Under submitit this requeues the job and exits.
    raise
  finally:
    stop.restore()
    lock.release()


def _train(config, workdir, mesh, info, is_chief, stop, force_config_change):
  spe = data.steps_per_epoch(config, info)
  total_steps = config.num_epochs * spe
  if config.max_steps > 0:
    total_steps = min(total_steps, config.max_steps)
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                       keep=config.keep_checkpoints)
  try:
    if is_chief:
      workdir_lib.record_config(json.loads(config.to_json_best_effort()), workdir,
                                has_checkpoint=checkpointer.latest_step() is not None,
                                force=force_config_change)
      provenance.record(workdir)  # Commit, dirty flag, packages, devices, command line.
    finished = _already_finished(workdir, total_steps)
    if finished is not None:
      return finished
  except BaseException:
    checkpointer.close()
    raise

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
  host = {"wall_time": 0.0, "epoch_sums": None, "policy": policy.state_dict()}
  shard_index, shard_count = mesh_lib.data_shard(mesh)
  batches = data.train_iterator(config, process_index=shard_index, process_count=shard_count)
  # The target carries this run's shardings, so a checkpoint from any mesh shape restores;
  # the data iterator comes back at the batch after the checkpointed step.
  try:
    restored = checkpointer.restore(state, data_iterator=batches)
  except BaseException:
    checkpointer.close()
    raise
  if restored is not None:
    state, host = restored
    policy.load_state_dict(host["policy"])
    logging.info("Resumed from step %d in %s", int(state.step), workdir)
  start_step = int(state.step)

  # Rows a killed run logged after its last checkpoint are replayed on resume: drop them.
  # An early stop (max_steps) off the log grid logged a partial train row that a longer
  # run does not have: its steps are in the checkpointed window and go into the next row.
  drop = {"test"} | ({"train"} if start_step % config.log_every_steps and start_step < total_steps
                     else set())
  writer = metrics_lib.MetricWriter(workdir, enabled=is_chief, drop_after_step=start_step,
                                    drop_at_step=frozenset(drop), config=config)
  train_step, eval_step = mesh_lib.make_sharded_steps(spec, tx, mesh, config)

  def save(step, force=False):
    nonlocal loss_since_save
    # Never checkpoint a diverged model: the last good checkpoint must stay the latest.
    if not math.isfinite(float(loss_since_save)):
      raise NonFiniteLoss(f"non-finite training loss before step {step}; "
                          f"{_kept(checkpointer)} Lower config.optim.lr?")
    loss_since_save = 0.0
    # The log window's and the epoch's running sums are checkpointed so that the first rows
    # after a resume average the same steps as an uninterrupted run's.
    checkpointer.save(step, state, {"wall_time": wall_time, "policy": policy.state_dict(),
                                    "epoch_sums": _host_sums(epoch_sums),
                                    "window_sums": _host_sums(window), "last_val": last_val,
                                    "last_train_eval": last_train_eval},
                      force=force, data_iterator=batches)

  def interrupted(step):
    checkpointer.wait()
    return Interrupted(step, saved=checkpointer.on_disk(step), latest=checkpointer.latest_step(),
                       exit_code=stop.exit_code)

  wall_time = float(host["wall_time"])
  epoch_sums = host["epoch_sums"]
  window = host.get("window_sums")
  last_val = host.get("last_val")
  last_train_eval = host.get("last_train_eval")
  loss_since_save = 0.0  # A device scalar between saves: checking it costs no per-step sync.
  progress = metrics_lib.Progress(total_steps, start_step, config.batch_size)
  t_window = time.time()
  step = start_step
  try:
    while step < total_steps:
      t0 = time.time()
      lr = policy.lr(step, spe)
      try:
        with stop.waiting_for_data():
          batch = next(batches)
      except preemption.DataStalled as e:
        logging.warning("%s; saving step %d", e, step)
        if jax.process_count() == 1:  # A collective save would wait for the stalled peers.
          save(step, force=True)
        raise interrupted(step) from None
      state, m = train_step(state, mesh_lib.put_batch(batch, mesh), np.float32(lr))
      window = step_lib.add_sums(window, m)
      epoch_sums = step_lib.add_sums(epoch_sums, m)
      loss_since_save = loss_since_save + m["loss"]
      step += 1
      wall_time += time.time() - t0
      epoch = step / spe

      log_step = step % config.log_every_steps == 0 or step == total_steps
      if log_step:
        means = step_lib.means(jax.device_get(window))
        if not math.isfinite(means["loss"]):
          raise NonFiniteLoss(
              f"training loss became {means['loss']} by step {step} (epoch {epoch:.2f}, lr {lr:g}); "
              f"{_kept(checkpointer)} Lower config.optim.lr?")
        elapsed = time.time() - t_window
        ips = float(jax.device_get(window["count"])) / max(elapsed, 1e-9)  # count is global.
        writer.write({"kind": "train", "step": step, "epoch": epoch, "lr": lr,
                      "images_per_sec": ips, "wall_time": wall_time, **means})
        progress.update(step, epoch=epoch, lr=lr, images_per_sec=ips, loss=means["loss"],
                        top1_err=means["top1_err"])
        if step % config.log_every_steps == 0:  # At an early stop, the window goes on in the
          window, t_window = None, time.time()  # checkpoint: a longer run continues it.

      # Evaluations (and the checkpoints that go with them) every `eval_every_epochs` epochs
      # and at the last one: a study of 1,000 images x 100 epochs would otherwise spend more
      # time validating 6,000 images each epoch than training.
      eval_epoch = step % spe == 0 and (round(epoch) % config.eval_every_epochs == 0
                                        or step == total_steps)
      if step % spe == 0:
        means = step_lib.means(jax.device_get(epoch_sums))
        writer.write({"kind": "train_epoch", "step": step, "epoch": epoch, "lr": lr,
                      "wall_time": wall_time, **means})
        epoch_sums = None
      if eval_epoch:
        if config.eval_train:
          # Training error in eval mode (center crop, no dropout, no noise) over the training
          # range as trained: the `train` rows are measured with dropout and augmentation on,
          # so only this row shows whether, and when, a net fits its training set beyond
          # its validation error.
          last_train_eval = evaluate(eval_step, state.params, val_config, "train", mesh)
          writer.write({"kind": "train_eval", "step": step, "epoch": epoch, "lr": lr,
                        "crops": val_config.data.eval_crops, "wall_time": wall_time,
                        **last_train_eval})
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

      # Multi-host: the processes compare flags where all of them already wait for the device.
      if stop.requested(sync_point=log_step or step % spe == 0):
        save(step, force=True)
        raise interrupted(step)

    if step % spe != 0 or checkpointer.latest_step() != step:
      save(step, force=True)
    checkpointer.wait()
    final = {"step": step, "epoch": step / spe, "wall_time": wall_time, "val": last_val,
             "test": {}}
    if config.eval_train:
      final["train_eval"] = last_train_eval
    if config.data.test_split:
      views = ["center", "ten"] if config.data.eval_crops == "ten" else ["center"]
      for crops in views:
        # A stop signal here ends the run without final.json; the checkpoint of the last step
        # is on disk, and the rerun does the whole final evaluation once.
        result = evaluate(eval_step, state.params, _with_crops(config, crops), "test", mesh,
                          stop=stop)
        if result is None:
          raise interrupted(step)
        final["test"][crops] = result
        writer.write({"kind": "test", "step": step, "epoch": step / spe, "crops": crops,
                      "wall_time": wall_time, **result})
        logging.info("test (%s crop%s): top-1 err %.2f%% top-5 err %.2f%%", crops,
                     "" if crops == "center" else "s", 100 * result["top1_err"],
                     100 * result["top5_err"])
    if stop.requested():
      raise interrupted(step)
    if is_chief:
      files.write_json(os.path.join(workdir, workdir_lib.FINAL_FILE), final)
    return final
  finally:
    progress.close()
    writer.close()
    checkpointer.close()


def _kept(checkpointer) -> str:
  latest = checkpointer.latest_step()
  if latest is None:
    return "no checkpoint was saved before it, so a rerun starts from step 0."
  return f"the last good checkpoint (step {latest}) in {checkpointer.directory} is kept."
