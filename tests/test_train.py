"""The real training loop end to end: workdir layout, learning, resume, SIGTERM, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from alexnet_jax import config as config_lib
from alexnet_jax import data, train
from alexnet_jax.metrics import read_metrics
from alexnet_jax.sweep import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def make_folder_dataset(root, n_train=24, n_test=8, classes=4, size=32, seed=0):
  """A tiny learnable image folder: each class is a bright square in its own quadrant."""
  rng = np.random.default_rng(seed)
  for split, n in (("train", n_train), ("test", n_test)):
    for c in range(classes):
      os.makedirs(os.path.join(root, split, f"class{c}"), exist_ok=True)
      for i in range(n):
        img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
        y, x = divmod(c, 2)
        img[y * 16:y * 16 + 16, x * 16:x * 16 + 16] += 150
        Image.fromarray(img).save(os.path.join(root, split, f"class{c}", f"{i}.png"))
  return root


def tiny_config(dataset_root, data_dir):
  c = config_lib.base_config()
  config_lib.small_model(c, num_classes=4, crop=28)
  c.model.conv_features = (8, 16, 16, 16, 16)
  c.model.fc_features = (32, 32)
  d = c.data
  d.dataset = f"folder:{dataset_root}"
  d.data_dir = data_dir
  d.val_split = None
  d.val_fraction = 0.25
  d.test_split = "test"
  d.image_size = 32
  d.crop_size = 28
  d.cache = True
  c.batch_size = 12
  c.eval_batch_size = 10
  c.num_epochs = 3
  c.log_every_steps = 2
  c.checkpoint_every_steps = 3
  c.optim.lr = 0.01
  return c


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return make_folder_dataset(str(tmp_path_factory.mktemp("images")))


def _final_params(workdir):
  ckpt_dir = os.path.join(workdir, "checkpoints")
  last = max(int(s) for s in os.listdir(ckpt_dir) if s.isdigit())
  state = ocp.StandardCheckpointer().restore(os.path.join(ckpt_dir, str(last), "state"))
  return last, state["params"]


def _assert_trees_equal(a, b):
  flat_a = sorted(_flatten(a).items())
  flat_b = sorted(_flatten(b).items())
  assert [k for k, _ in flat_a] == [k for k, _ in flat_b]
  for (k, x), (_, y) in zip(flat_a, flat_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=k)


def _flatten(tree, prefix=""):
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f"{prefix}{k}/"))
    return out
  return {prefix: tree}


def test_writes_the_documented_workdir(folder, tmp_path):
  c = tiny_config(folder, str(tmp_path / "tfds"))
  final = train.train_and_evaluate(c, str(tmp_path / "run"))
  run = tmp_path / "run"
  assert json.loads((run / "config.json").read_text())["model"]["num_classes"] == 4
  rows = read_metrics(str(run))
  kinds = {r["kind"] for r in rows}
  assert kinds == {"train", "train_epoch", "val", "test"}
  spe = 72 // 12  # 96 train images, a quarter carved off for validation.
  epochs = [r for r in rows if r["kind"] == "train_epoch"]
  assert [r["step"] for r in epochs] == [spe, 2 * spe, 3 * spe]
  assert [r["epoch"] for r in rows if r["kind"] == "val"] == [1.0, 2.0, 3.0]
  for r in rows:
    assert 0.0 <= r["top1_err"] <= r["top5_err"] + 1e-9 or r["top5_err"] <= r["top1_err"]
    assert r["wall_time"] >= 0
  on_disk = json.loads((run / "final.json").read_text())
  assert on_disk["step"] == 3 * spe and on_disk["test"]["center"] == final["test"]["center"]
  assert os.listdir(run / "tb")


def test_resume_equals_uninterrupted(folder, tmp_path):
  data_dir = str(tmp_path / "tfds")
  straight = str(tmp_path / "straight")
  train.train_and_evaluate(tiny_config(folder, data_dir), straight)

  resumed = str(tmp_path / "resumed")
  first = tiny_config(folder, data_dir)
  # Mid-way through epoch 2, between two periodic checkpoints and between two log steps, so
  # the resumed run's first train row averages a step from before the checkpoint too.
  first.max_steps = 7
  train.train_and_evaluate(first, resumed)
  assert _final_params(resumed)[0] == 7
  # A killed run can have logged past its last checkpoint; the resumed run replays those steps.
  with open(os.path.join(resumed, "metrics.jsonl"), "a") as f:
    f.write(json.dumps({"kind": "train", "step": 10, "epoch": 1.6, "loss": 9.0, "top1_err": 1.0,
                        "top5_err": 1.0, "lr": 0.01, "images_per_sec": 1.0, "wall_time": 1.0}) + "\n")
  train.train_and_evaluate(tiny_config(folder, data_dir), resumed)

  step_a, params_a = _final_params(straight)
  step_b, params_b = _final_params(resumed)
  assert step_a == step_b == 18
  _assert_trees_equal(params_a, params_b)
  # One row per logged step, as if never interrupted (the first run's test rows aside).
  steps = lambda wd, kind: [r["step"] for r in read_metrics(wd) if r["kind"] == kind]
  for kind in ("train", "train_epoch", "val"):
    assert steps(resumed, kind) == steps(straight, kind)
  # The resumed run's per-epoch rows equal the straight run's (epoch sums were checkpointed).
  row = lambda wd: [r for r in read_metrics(wd) if r["kind"] == "train_epoch"][-1]
  assert row(straight)["loss"] == pytest.approx(row(resumed)["loss"], rel=1e-6)
  # Every train row too, the one straddling the checkpoint included (the log window's sums
  # were checkpointed): same numbers, timings aside.
  timing = ("images_per_sec", "wall_time")
  rows = lambda wd: [{k: v for k, v in r.items() if k not in timing}
                     for r in read_metrics(wd) if r["kind"] in ("train", "train_epoch", "val")]
  assert rows(resumed) == rows(straight)
  final = json.loads(open(os.path.join(resumed, "final.json")).read())
  assert final["val"] is not None and final["val"] == json.loads(
      open(os.path.join(straight, "final.json")).read())["val"]

  # TensorBoard shows what metrics.jsonl says: the killed run's orphaned points are purged.
  assert _tensorboard_scalars(resumed) == _tensorboard_scalars(straight)

  # A finished workdir is left as it is: no new rows, no new evaluation, same final.json.
  before = {f: open(os.path.join(resumed, f), "rb").read() for f in ("metrics.jsonl", "final.json")}
  again = train.train_and_evaluate(tiny_config(folder, data_dir), resumed)
  assert again == final
  for f, content in before.items():
    assert open(os.path.join(resumed, f), "rb").read() == content, f


def _tensorboard_scalars(workdir, skip=("images_per_sec", "wall_time")):
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

  acc = EventAccumulator(os.path.join(workdir, "tb"))  # Purges orphaned data, as TensorBoard does.
  acc.Reload()
  return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]
          if tag.split("/")[-1] not in skip}


def test_sigterm_saves_and_the_same_command_resumes(folder, tmp_path):
  workdir = tmp_path / "run"
  cmd = [sys.executable, "-m", "alexnet_jax.main", "--config=configs/small_fashion_mnist.py",
         f"--workdir={workdir}", f"--config.data.dataset=folder:{folder}",
         f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.data.val_split=test",
         "--config.data.val_fraction=0.0", "--config.model.num_classes=4",
         # A constant LR: the config's fixed drop would sit past the shortened rerun's end.
         "--config.optim.schedule=constant",
         "--config.batch_size=8", "--config.eval_batch_size=8", "--config.num_epochs=40",
         "--config.log_every_steps=1", "--config.checkpoint_every_steps=1000"]
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 120
  while not (metrics.exists() and metrics.read_text().count("\n") >= 3):
    assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
    assert time.time() < deadline, "training never logged a step"
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 143, err.decode()[-3000:]
  assert b"rerun the same command to resume" in err
  saved, _ = _final_params(str(workdir))
  assert saved >= 3
  assert not (workdir / "final.json").exists()

  # Same command, fewer epochs so the test stays short: it picks up where it stopped.
  done = subprocess.run(cmd[:-3] + ["--config.num_epochs=1", "--config.log_every_steps=1",
                                    "--config.checkpoint_every_steps=1000"],
                        cwd=ROOT, capture_output=True, timeout=300)
  assert done.returncode == 0, done.stderr.decode()[-3000:]
  assert b"Resumed from step" in done.stderr
  steps = [r["step"] for r in read_metrics(str(workdir)) if r["kind"] == "train"]
  assert steps[:saved] == list(range(1, saved + 1))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(folder, tmp_path):
  c = tiny_config(folder, str(tmp_path / "tfds"))
  c.num_epochs = 1
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(c, workdir)
  good_step, good = _final_params(workdir)
  c.num_epochs = 3
  c.optim.lr = 1e6  # Blows up at once.
  with pytest.raises(train.NonFiniteLoss, match="last good checkpoint"):
    train.train_and_evaluate(c, workdir)
  step, params = _final_params(workdir)
  assert step == good_step
  _assert_trees_equal(good, params)


def test_bad_inputs_fail_before_training(folder, tmp_path):
  c = tiny_config(folder, str(tmp_path / "tfds"))
  c.model.num_classes = 10
  with pytest.raises(config_lib.ConfigError, match="num_classes=4"):
    train.train_and_evaluate(c, str(tmp_path / "a"))
  c = tiny_config(folder, str(tmp_path / "tfds"))
  c.data.dataset = f"folder:{tmp_path / 'nowhere'}"
  with pytest.raises(data.DatasetError, match="config.data.dataset"):
    train.train_and_evaluate(c, str(tmp_path / "b"))
  assert not os.path.exists(tmp_path / "b" / "checkpoints")


@pytest.mark.skipif(not os.path.exists(FASHION),
                    reason="needs the Debian package dataset-fashion-mnist (CI installs it)")
def test_small_model_learns_fashion_mnist(tmp_path):
  c = load_config("configs/small_fashion_mnist.py")
  c.batch_size = 64
  c.max_steps = 150
  c.log_every_steps = 25
  c.data.data_dir = str(tmp_path / "tfds")
  final = train.train_and_evaluate(c, str(tmp_path / "run"))
  rows = [r for r in read_metrics(str(tmp_path / "run")) if r["kind"] == "train"]
  assert rows[-1]["loss"] < 0.6 * rows[0]["loss"]
  # 150 steps of 64 images see a sixth of one epoch; chance is 90% error.
  assert final["test"]["center"]["top1_err"] < 0.4


def test_eval_every_epochs_and_train_eval_rows(folder, tmp_path):
  """Validation every 2 epochs and after the last; `train_eval` rows at the same steps, equal
  to evaluating the final checkpoint on the training range through alexnet_jax.evaluate."""
  from alexnet_jax import evaluate as evaluate_lib
  c = tiny_config(folder, str(tmp_path / "tfds"))
  c.eval_every_epochs = 2
  c.eval_train = True
  workdir = str(tmp_path / "run")
  final = train.train_and_evaluate(c, workdir)
  rows = read_metrics(workdir)
  epochs = lambda kind: [round(r["epoch"]) for r in rows if r["kind"] == kind]
  assert epochs("train_epoch") == [1, 2, 3]
  assert epochs("val") == epochs("train_eval") == [2, 3]
  last = [r for r in rows if r["kind"] == "train_eval"][-1]
  again = evaluate_lib.evaluate_run(workdir, "train", "center")
  for k in ("loss", "top1_err", "top5_err"):
    assert last[k] == pytest.approx(again[k], rel=1e-5) == final["train_eval"][k]
