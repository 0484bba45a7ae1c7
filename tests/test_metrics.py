"""Metric rows on disk (JSON lines, TensorBoard) and the console progress output."""

import io
import json
import logging
import os

import numpy as np
import pytest

from alexnet_jax import metrics


def _rows():
  return [
      {"kind": "train", "step": 10, "epoch": 0.5, "lr": 0.01, "loss": np.float32(2.5),
       "top1_err": 0.9, "top5_err": 0.6, "images_per_sec": 1000.0, "wall_time": 3.0},
      {"kind": "val", "step": 20, "epoch": 1.0, "loss": 2.0, "top1_err": 0.7,
       "top5_err": np.float64(0.4), "crops": "center", "wall_time": 6.0, "lr": 0.01},
      {"kind": "test", "step": 20, "epoch": 1.0, "loss": 1.9, "top1_err": 0.65,
       "top5_err": 0.35, "crops": "ten", "wall_time": 7.0, "lr": 0.01},
  ]


def test_jsonl_round_trip_and_truncated_last_line(tmp_path):
  workdir = str(tmp_path)
  with metrics.MetricWriter(workdir) as w:
    for row in _rows():
      w.write(row)
  rows = metrics.read_metrics(workdir)
  assert [r["kind"] for r in rows] == ["train", "val", "test"]
  assert rows[0]["loss"] == pytest.approx(2.5)
  assert isinstance(rows[1]["top5_err"], float)
  assert metrics.read_metrics(workdir, kind="val") == [rows[1]]

  # A run killed mid-write leaves half a line without its newline.
  path = os.path.join(workdir, metrics.METRICS_FILE)
  with open(path, "a") as f:
    f.write('{"kind": "train", "step": 30, "lo')
  assert metrics.read_metrics(workdir) == rows

  # The resumed run appends cleanly: the fragment is dropped, not glued to the next row.
  with metrics.MetricWriter(workdir) as w:
    w.write({"kind": "train", "step": 30, "loss": 1.5})
  assert [r["step"] for r in metrics.read_metrics(workdir)] == [10, 20, 20, 30]
  with open(path) as f:
    assert all(json.loads(line) for line in f)


def test_resume_drops_rows_after_checkpoint(tmp_path):
  workdir = str(tmp_path)
  with metrics.MetricWriter(workdir) as w:
    for step in (10, 20, 30, 40):
      w.write({"kind": "train", "step": step, "loss": 1.0})
  with metrics.MetricWriter(workdir, drop_after_step=20) as w:
    w.write({"kind": "train", "step": 30, "loss": 0.5})
  assert [(r["step"], r["loss"]) for r in metrics.read_metrics(workdir)] == [
      (10, 1.0), (20, 1.0), (30, 0.5)]


def test_missing_file_disabled_writer_and_bad_rows(tmp_path):
  assert metrics.read_metrics(str(tmp_path / "nothing")) == []
  off = str(tmp_path / "off")
  w = metrics.MetricWriter(off, enabled=False)
  w.write({"kind": "train", "step": 1, "loss": 1.0})
  w.close()
  assert not os.path.exists(off)
  with metrics.MetricWriter(str(tmp_path / "on")) as w:
    with pytest.raises(ValueError, match="'step'"):
      w.write({"kind": "train", "loss": 1.0})
    with pytest.raises(ValueError, match="kind"):
      w.write({"kind": "eval", "step": 1})
    with pytest.raises(TypeError, match="'logits'"):
      w.write({"kind": "train", "step": 1, "logits": np.zeros(3)})


def _accumulator(workdir):
  from tensorboard.backend.event_processing import event_accumulator

  acc = event_accumulator.EventAccumulator(os.path.join(workdir, metrics.TB_DIR))
  acc.Reload()
  return acc


def test_tensorboard_events_have_tags_and_values(tmp_path):
  workdir = str(tmp_path)
  with metrics.MetricWriter(workdir) as w:
    for row in _rows():
      w.write(row)
  acc = _accumulator(workdir)  # TensorBoard's own reader, not the writing library's.
  tags = set(acc.Tags()["scalars"])
  assert {"train/loss", "train/lr", "train/images_per_sec", "val/top1_err",
          "test_ten/top1_err"} <= tags
  assert not any(t.endswith(("/kind", "/step", "/crops")) for t in tags)
  (loss,) = acc.Scalars("train/loss")
  assert (loss.step, loss.value) == (10, pytest.approx(2.5))
  (val,) = acc.Scalars("val/top5_err")
  assert (val.step, val.value) == (20, pytest.approx(0.4))
  (test,) = acc.Scalars("test_ten/top1_err")
  assert (test.step, test.value) == (20, pytest.approx(0.65))
  with pytest.raises(KeyError):  # No config given, no hyper-parameters.
    acc.PluginTagToContent("hparams")


def test_tensorboard_hparams_are_the_configs_fields(tmp_path):
  from alexnet_jax import config as config_lib
  from tensorboard.plugins.hparams import metadata

  c = config_lib.base_config()
  c.optim.lr = 0.02
  c.model.lrn = False
  workdir = str(tmp_path)
  with metrics.MetricWriter(workdir, config=c) as w:
    w.write({"kind": "val", "step": 5, "top1_err": 0.5})
  acc = _accumulator(workdir)
  content = acc.PluginTagToContent("hparams")
  assert set(content) == {"_hparams_/session_start_info"}
  start = metadata.parse_session_start_info_plugin_data(content["_hparams_/session_start_info"])
  got = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
  # Every field of the config that has a value, under its dotted name.
  def flat(d, prefix=""):
    for k, v in d.items():
      if isinstance(v, dict):
        yield from flat(v, f"{prefix}{k}.")
      elif v is not None:
        yield f"{prefix}{k}", v
  expected = dict(flat(c.to_dict()))
  assert set(got) == set(expected)
  assert got["optim.lr"] == pytest.approx(0.02)
  assert got["model.lrn"] is False
  assert got["batch_size"] == 128.0 and got["data.dataset"] == "imagenet2012"
  assert got["model.conv_features"] == "(96, 256, 384, 384, 256)"
  assert "data.test_split" not in got  # None: not a value the HParams view can show.
  (val,) = acc.Scalars("val/top1_err")  # The scalars still land beside them.
  assert val.value == pytest.approx(0.5)


class _Clock:
  def __init__(self):
    self.t = 100.0

  def __call__(self):
    return self.t


def test_progress_plain_mode_logs_every_update(caplog):
  clock = _Clock()
  stream = io.StringIO()
  p = metrics.Progress(1000, 100, 32, steps_per_epoch=200, stream=stream, clock=clock)
  assert not p.interactive  # StringIO is not a terminal.
  with caplog.at_level(logging.INFO):
    clock.t += 5.0  # Compilation: kept out of the ETA by measuring from the first update.
    p.update(110, loss=2.30259, lr=0.01)
    clock.t += 2.0
    p.update(210, loss=1.5)
  p.close()
  assert stream.getvalue() == ""
  lines = [r.getMessage() for r in caplog.records if "step " in r.getMessage()]
  assert len(lines) == 2
  assert lines[0].startswith("step 110/1000 (11.0%) | epoch 0.55 | 64 img/s")
  assert "loss 2.303 lr 0.01" in lines[0]
  # 110 -> 210 in 2 s: 1600 img/s; 100 steps per 2 s since the first update leaves 790
  # steps = 15.8 s.
  assert lines[1] == "step 210/1000 (21.0%) | epoch 1.05 | 1600 img/s | ETA 0:00:16 | loss 1.5"


def test_progress_interactive_redraws_one_line():
  clock = _Clock()
  stream = io.StringIO()
  p = metrics.Progress(10, 0, 4, stream=stream, interactive=True, clock=clock)
  for step in range(1, 11):
    clock.t += 1.0
    p.update(step, epoch=step / 5)
  p.close()
  out = stream.getvalue()
  assert out.count("\n") == 1 and out.endswith("\n")
  assert out.count("\r") == 10
  assert "step 10/10 (100.0%) | epoch 2.00 | 4 img/s | ETA 0:00:00" in out


def test_progress_shows_the_given_rate_and_errors_in_percent(caplog):
  clock = _Clock()
  p = metrics.Progress(100, 0, 32, stream=io.StringIO(), clock=clock)
  ips = 1234.56  # What train.py also writes to metrics.jsonl for this step.
  with caplog.at_level(logging.INFO):
    clock.t += 1.0  # 10 steps x 32 in 1 s would measure 320 img/s: the given rate wins.
    p.update(10, images_per_sec=ips, loss=1.25, top1_err=0.4321, top5_err=0.05)
  (line,) = [r.getMessage() for r in caplog.records if "step " in r.getMessage()]
  assert f"| {ips:.0f} img/s |" in line and "320 img/s" not in line
  assert "loss 1.25 top1_err 43.21% top5_err 5.00%" in line
  assert "images_per_sec" not in line


def test_a_log_record_erases_the_bar_before_its_line():
  stream = io.StringIO()
  handler = logging.StreamHandler(stream)
  root = logging.getLogger()
  root.addHandler(handler)
  try:
    clock = _Clock()
    p = metrics.Progress(10, 0, 4, stream=stream, interactive=True, clock=clock)
    clock.t += 1.0
    p.update(5)
    logging.getLogger("absl").warning("eval says hello")
    clock.t += 1.0
    p.update(6)
    p.close()
  finally:
    root.removeHandler(handler)
  out = stream.getvalue()
  bar, after = out.split("eval says hello\n")
  # The bar was drawn, then erased to the start of the line before the record was written.
  assert "step 5/10" in bar and bar.endswith("\r\x1b[K")
  assert "step 6/10" in after and after.endswith("\n")
  # Once closed, the progress leaves the handler as it found it.
  assert not handler.filters
