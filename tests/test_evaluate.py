"""Evaluating a finished run's checkpoint after training (alexnet_jax.evaluate)."""

from __future__ import annotations

import json

import pytest

from alexnet_jax import evaluate, train
from test_train import make_folder_dataset, tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  root = tmp_path_factory.mktemp("ev")
  c = tiny_config(make_folder_dataset(str(root / "images")), str(root / "tfds"))
  c.data.train_examples = 40  # a fixed subset: what `--split=train` must evaluate
  c.num_epochs = 2
  final = train.train_and_evaluate(c, str(root / "run"))
  return root / "run", final


def test_test_and_val_match_what_training_logged(trained):
  # Two code paths to the same numbers: the training loop's final evaluation and this command.
  run, final = trained
  got = evaluate.evaluate_run(run, "test", "center")
  want = final["test"]["center"] if "center" in final["test"] else final["test"]
  assert got["step"] == final["step"] and got["examples"] == 32
  for k in ("loss", "top1_err", "top5_err"):
    assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-7)
  val = evaluate.evaluate_run(run, "val", "center")
  assert val["top1_err"] == pytest.approx(final["val"]["top1_err"], abs=1e-7)
  assert json.loads(evaluate.eval_path(run, "val", "center").read_text()) == val


def test_train_split_is_the_training_subset_in_eval_mode(trained, capsys):
  run, _ = trained
  assert evaluate.main([str(run), "--split=train"]) == 0
  got = json.loads(evaluate.eval_path(run, "train", "center").read_text())
  assert got["examples"] == 40 and 0.0 <= got["top1_err"] <= 1.0
  assert evaluate.main([str(run), "--split=train"]) == 0  # current: not evaluated again
  assert "current, skipped" in capsys.readouterr().out


def test_a_folder_that_is_not_a_run_fails_with_its_name(tmp_path, capsys):
  (tmp_path / "empty").mkdir()
  assert evaluate.main([str(tmp_path / "empty")]) == 2
  err = capsys.readouterr().err
  assert "empty" in err and "config.json" in err
