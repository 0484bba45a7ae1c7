"""provenance.json and the one config differ (resume warning, launcher, report)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import pytest

from alexnet_jax import config as config_lib
from alexnet_jax import provenance


def test_record_appends_what_produced_the_workdir(tmp_path):
  first = provenance.record(tmp_path, argv=["-m", "alexnet_jax.main", "--workdir=x"])
  second = provenance.record(tmp_path)  # A resume adds an entry; the first stays.
  starts = json.loads((tmp_path / "provenance.json").read_text())["starts"]
  assert starts == [first, second] == provenance.read(tmp_path)
  assert os.listdir(tmp_path) == ["provenance.json"]  # Nothing half-written left beside it.
  assert first["command"] == [sys.executable, "-m", "alexnet_jax.main", "--workdir=x"]
  assert second["command"][1:] == sys.argv
  head = subprocess.run(["git", "-C", str(provenance.REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                        text=True)
  if head.returncode == 0:
    assert first["git"]["commit"] == head.stdout.strip()
    porcelain = subprocess.run(["git", "-C", str(provenance.REPO_ROOT), "status", "--porcelain"],
                               capture_output=True, text=True).stdout
    assert first["git"]["dirty"] is bool(porcelain.strip())
  else:
    assert first["git"] == {"commit": None, "dirty": None, "branch": None}
  assert first["packages"]["jax"] == jax.__version__
  assert first["devices"]["count"] == len(jax.devices())
  assert first["devices"]["kind"] == jax.devices()[0].device_kind
  assert first["devices"]["backend"] == jax.default_backend()


def test_outside_a_git_checkout_the_commit_is_none(monkeypatch, tmp_path):
  monkeypatch.setattr(provenance, "REPO_ROOT", tmp_path)
  assert provenance.git_state() == {"commit": None, "dirty": None, "branch": None}
  assert provenance.read(tmp_path) == []
  (tmp_path / "provenance.json").write_text("{not json")
  assert provenance.read(tmp_path) == []


def test_config_diff_on_nested_dicts():
  a = config_lib.base_config().to_dict()
  b = config_lib.base_config()
  config_lib.apply_variant(b, "lrn=0,pool=2x2,seed=3")
  b = json.loads(b.to_json_best_effort())  # As config.json holds it: lists, not tuples.
  a = json.loads(json.dumps(a))
  assert config_lib.diff(a, b) == {"model.lrn": (True, False), "model.pool_window": (3, 2), "seed": (0, 3)}
  assert config_lib.diff(a, b, ignore={"seed"}) == {"model.lrn": (True, False), "model.pool_window": (3, 2)}
  assert config_lib.diff(a, a) == {}
  # A field only one side has (a config written by older code) reads as None there.
  old = {"model": {"lrn": True}, "num_epochs": 3}
  new = {"model": {"lrn": True, "dtype": "bfloat16"}, "num_epochs": 4}
  assert config_lib.diff(old, new) == {"model.dtype": (None, "bfloat16"), "num_epochs": (3, 4)}


def test_resume_names_the_changed_fields_through_the_one_differ(tmp_path):
  # A resumed run's record of what changed comes from config.diff (workdir.record_config).
  from alexnet_jax import workdir

  c = config_lib.base_config()
  old = c.to_dict()
  c.optim.lr = 0.02
  c.model.dropout = 0.0
  refused, allowed = workdir.config_changes(old, c.to_dict())
  assert refused == ["model.dropout"] and allowed == ["optim.lr"]
  assert list(config_lib.diff(old, c.to_dict())) == ["model.dropout", "optim.lr"]


def test_training_records_provenance_in_the_workdir(tmp_path):
  from alexnet_jax import train
  from test_train import make_folder_dataset, tiny_config

  c = tiny_config(make_folder_dataset(str(tmp_path / "images")), str(tmp_path / "tfds"))
  c.max_steps = 2
  train.train_and_evaluate(c, str(tmp_path / "run"))
  (entry,) = provenance.read(tmp_path / "run")
  assert entry["devices"]["count"] == len(jax.devices()) and entry["packages"]["jax"] == jax.__version__
  assert entry["command"] == [sys.executable, *sys.argv]
