r"""Evaluates a run's checkpoint on any split and view after training, one JSON per evaluation.

    python -m alexnet_jax.evaluate runs/fmnist_l4l/*.s? --split=train --crops=center

The use it was written for: whether a net overfits is a question about its training error in
eval mode (no dropout, no random crops or flips, no colour noise), while the `train` rows of
metrics.jsonl are measured on the augmented batches with dropout on, which can sit above the
validation error of a net that already fits its training set better. `--split=train` runs the
training range as trained (`data.train_examples` honoured) through the evaluation pipeline.

Writes `<run>/eval/<split>-<crops>.json`: {"split", "crops", "step", "examples", "loss",
"top1_err", "top5_err"}. The report reads these files (train error in eval mode beside val) and
`report --export` copies them with the raw runs. A run whose file already holds its latest
checkpoint's step is skipped, so the command can be rerun over a growing sweep.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import sys

import jax
import ml_collections
import numpy as np

from alexnet_jax import checkpoint, files, optim
from alexnet_jax import config as config_lib
from alexnet_jax import step as step_lib
from alexnet_jax.models import AlexNet, ModelSpec

SPLITS = ("train", "val", "test")


def restore_params(run: str | pathlib.Path, step: int | None = None) -> tuple[dict, dict, int]:
  """(params as NumPy arrays, config dict, step) of a run's checkpoint (the latest, or `step`)."""
  run = pathlib.Path(run)
  try:
    cfg = json.loads((run / "config.json").read_text())
  except (OSError, ValueError) as e:
    raise ValueError(f"{run}/config.json: cannot read the run's config ({e}); is {run} a run workdir?") from None
  config = ml_collections.ConfigDict(cfg)
  ckpt = checkpoint.Checkpointer(str(run / "checkpoints"), async_save=False)
  try:
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise ValueError(f"{run}/checkpoints holds no checkpoint yet.")
    spec = ModelSpec.from_config(config.model)
    model = AlexNet(spec)
    size = config.model.input_size
    err = None
    # config.json does not record the images' channels (they come from the dataset), and the
    # restore target must have the saved shapes: the likelier count first, then the other.
    d = cfg.get("data") or {}
    if d.get("channel_mean"):
      order = (len(d["channel_mean"]),)
    else:
      order = (1, 3) if "mnist" in str(d.get("dataset")) else (3, 1)
    for channels in order:
      def init(channels=channels):
        rng = jax.random.PRNGKey(0)
        params = model.init({"params": rng}, jax.numpy.zeros((1, size, size, channels)), train=False)["params"]
        return step_lib.init_state(model, optim.make_optimizer(config.optim, params), rng, (size, size, channels))

      device = jax.devices("cpu")[0]
      one = jax.sharding.SingleDeviceSharding(device)
      abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one), jax.eval_shape(init))
      try:
        state, _ = ckpt.restore(abstract, step)
        return jax.tree.map(np.asarray, jax.device_get(state.params)), cfg, step
      except ValueError as e:  # Shape mismatch: the other channel count.
        err = e
    raise ValueError(f"{run}: checkpoint {step} does not match its config.json ({err}).")
  finally:
    ckpt.close()


def eval_path(run: str | os.PathLike, split: str, crops: str) -> pathlib.Path:
  return pathlib.Path(run) / "eval" / f"{split}-{crops}.json"


def evaluate_run(run: str | os.PathLike, split: str = "train", crops: str = "center",
                 step: int | None = None, eval_steps: dict | None = None) -> dict:
  """Evaluates the run's checkpoint on `split` with `crops`, writes and returns the result.

  `eval_steps` caches one jitted eval step per model spec across runs of a sweep (the runs of
  one arm share their net, so a sweep compiles once per arm, not once per run).
  """
  from alexnet_jax import data  # noqa: PLC0415  (the input pipeline loads only to evaluate)

  if split not in SPLITS or crops not in ("center", "ten"):
    raise ValueError(f"split={split!r}, crops={crops!r}: give a split of {SPLITS} and crops 'center' or 'ten'.")
  params, cfg, step = restore_params(run, step)
  config = ml_collections.ConfigDict(cfg)
  config.data.eval_crops = crops
  config_lib.validate(config)
  spec = ModelSpec.from_config(config.model)
  cache = {} if eval_steps is None else eval_steps
  key = repr(spec)  # one compile per net
  eval_step = cache.get(key)
  if eval_step is None:
    eval_step = cache[key] = jax.jit(step_lib.make_eval_step(AlexNet(spec)))
  sums = None
  for batch in data.eval_batches(config, split=split):
    m = eval_step(params, batch)
    sums = step_lib.add_sums(sums, m)
  if sums is None:
    raise ValueError(f"{run}: the {split} split is empty.")
  host = jax.device_get(sums)
  result = {"split": split, "crops": crops, "step": int(step), "examples": int(round(float(host["count"]))),
            **step_lib.means(host)}
  out = eval_path(run, split, crops)
  out.parent.mkdir(exist_ok=True)
  files.write_json(out, result)
  return result


def _fresh(run: pathlib.Path, split: str, crops: str) -> bool:
  """The run's result for (split, crops) exists and is of its latest checkpoint."""
  try:
    got = json.loads(eval_path(run, split, crops).read_text())
  except (OSError, ValueError):
    return False
  ckpt = checkpoint.Checkpointer(str(run / "checkpoints"), async_save=False)
  try:
    return got.get("step") == ckpt.latest_step()
  finally:
    ckpt.close()


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m alexnet_jax.evaluate", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("runs", nargs="+", help="run workdirs (config.json and checkpoints/)")
  p.add_argument("--split", default="train", choices=SPLITS)
  p.add_argument("--crops", default="center", choices=("center", "ten"))
  p.add_argument("--step", type=int, help="checkpoint step (default: each run's latest)")
  p.add_argument("--force", action="store_true", help="evaluate again even where a result is current")
  a = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  cache, failed = {}, 0
  for run in map(pathlib.Path, a.runs):
    if a.step is None and not a.force and _fresh(run, a.split, a.crops):
      print(f"{run}: current, skipped")
      continue
    try:
      r = evaluate_run(run, a.split, a.crops, a.step, cache)
    except (ValueError, FileNotFoundError, config_lib.ConfigError) as e:
      print(f"error: {run}: {e}", file=sys.stderr)
      failed += 1
      continue
    print(f"{run}: {a.split} ({a.crops}) at step {r['step']}: top-1 err {100 * r['top1_err']:.2f}% "
          f"top-5 err {100 * r['top5_err']:.2f}% loss {r['loss']:.4f}")
  return 2 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
