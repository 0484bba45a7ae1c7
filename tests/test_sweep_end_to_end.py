"""A two-run sweep on tiny generated images, launched, trained for real and reported."""

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from alexnet_jax import launch, report
from test_train import make_folder_dataset

# The same tiny net as test_train's; the launcher loads configs by path, and --in_process
# keeps this test's sys.path, so the config file can import the shared helper.
CONFIG = """
from alexnet_jax import config as C
from test_train import tiny_config

def get_config(arg=None):
  c = tiny_config("{images}", "{data_dir}")
  c.data.eval_crops = "ten"
  c.num_epochs = 2
  C.apply_variant(c, arg)
  return c
"""

SWEEP = """
def get_sweep(arg=None):
  return [{{"name": "full", "config": "{config}"}},
          {{"name": "no_lrn", "config": "{config}:lrn=0"}}]
"""


def test_two_run_sweep_trains_and_reports(tmp_path):
  images = make_folder_dataset(str(tmp_path / "images"))
  config = tmp_path / "tiny_config.py"
  config.write_text(CONFIG.format(images=images, data_dir=tmp_path / "tfds"))
  sweep = tmp_path / "tiny_sweep.py"
  sweep.write_text(SWEEP.format(config=config))
  workdir = tmp_path / "sweep"

  out = io.StringIO()
  assert launch.main([str(sweep), f"--workdir={workdir}", "--in_process"], out=out) == 0, out.getvalue()
  for name in ("full", "no_lrn"):
    final = json.loads((workdir / name / "final.json").read_text())
    assert set(final["test"]) == {"center", "ten"}

  # A second launch finds both runs finished and trains nothing.
  out = io.StringIO()
  assert launch.main([str(sweep), f"--workdir={workdir}", "--in_process"], out=out) == 0
  assert "skip" in out.getvalue().lower()

  result = report.make_report([str(workdir)])
  folder = workdir / "report"
  assert (folder / "report.md").read_text() == result["markdown"]
  assert "40.7" in result["markdown"]  # The paper's Table 2 number sits beside ours.

  finals = {n: json.loads((workdir / n / "final.json").read_text())["test"] for n in ("full", "no_lrn")}
  rows = {r["run"]: r for r in csv.DictReader(open(folder / "results.csv"))}
  for name, test in finals.items():
    for crops in ("center", "ten"):
      assert float(rows[name][f"top1_{crops}_mean"]) == pytest.approx(100 * test[crops]["top1_err"], abs=1e-3)
      assert float(rows[name][f"top5_{crops}_mean"]) == pytest.approx(100 * test[crops]["top5_err"], abs=1e-3)
  (no_lrn,) = [r for r in csv.DictReader(open(folder / "ablations.csv")) if r["run"] == "no_lrn"]
  assert "model.lrn" in no_lrn["config_change"]
  expected = 100 * (finals["no_lrn"]["center"]["top1_err"] - finals["full"]["center"]["top1_err"])
  assert float(no_lrn["d_top1_center_mean"]) == pytest.approx(expected, abs=1e-3)
  assert float(no_lrn["paper_d_top1"]) == 1.4

  for png in ("curves_epoch.png", "curves_walltime.png"):
    with Image.open(folder / png) as im:
      assert im.size[0] > 400 and im.size[1] > 300
      assert len(np.unique(np.asarray(im.convert("L")))) > 10  # Not a blank canvas.
