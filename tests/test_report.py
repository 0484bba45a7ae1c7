"""The report on hand-written run folders: claims table, Figure 1's LR grid, curves, tidy CSV, export."""

from __future__ import annotations

import csv
import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as sps

from alexnet_jax import report, sweep
from alexnet_jax.report import plots, runs as runs_lib, speedup as speedup_lib, stats
from test_launch_report import fake_run

REPO = pathlib.Path(__file__).resolve().parents[1]
SEEDS = 5
# Per-seed top-1 errors (fractions): a full model, and each switch's designed Δ in points.
BASE = [0.120, 0.124, 0.118, 0.122, 0.121]
DESIGN = {
    "one_tower": ("towers=1", [1.0, 1.2, 0.9, 1.1, 1.05]),  # Clearly worse: held.
    "no_lrn": ("lrn=0", [0.1, -0.2, 0.15, 0.0, -0.05]),  # Nothing, far from the paper's 1.4: refuted.
    "no_dropout": ("dropout=0", [-0.5, -0.6, -0.4, -0.55, -0.45]),  # Better without: reversed.
    "pool_2x2": ("pool=2x2", [0.6, -0.3, 0.9, 0.1, 0.5]),  # Noisy, paper-sized: not resolved.
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  root = tmp_path_factory.mktemp("study") / "runs"
  for s in range(SEEDS):
    fake_run(root, f"full.s{s}", f"crops=ten,seed={s}", top1=BASE[s], ten_gain=0.004 + 0.001 * s)
    for g, (variant, deltas) in DESIGN.items():
      fake_run(root, f"{g}.s{s}", f"{variant},crops=ten,seed={s}", top1=BASE[s] + deltas[s] / 100,
               ten_gain=0.004 + 0.001 * s)
  return root


def test_claims_table_verdicts_and_holm_family(study, tmp_path):
  rep = report.make_report([str(study)], out=str(tmp_path / "rep"))
  rows = {r["key"]: r for r in rep["claims"]}
  assert set(rows) == {"towers", "lrn", "dropout", "pool", "crops"}
  # The family: one paired test per claim on 10 crops (the paper's view); ten_gain is the same
  # in both arms of a seed, so the 10-crop Δs are the designed ones.
  ps = {}
  for key, (g, (_, deltas)) in zip(("towers", "lrn", "dropout", "pool"), DESIGN.items()):
    r = rows[key]
    assert r["view"] == "ten" and r["summary"].values == pytest.approx(deltas)
    base = [100 * (b - 0.004 - 0.001 * s) for s, b in enumerate(BASE)]
    ps[key] = sps.ttest_rel([b + d for b, d in zip(base, deltas)], base).pvalue
    assert r["summary"].p == pytest.approx(ps[key])
  # The center crop row: center − 10 crops of `full`, per seed.
  assert rows["crops"]["summary"].values == pytest.approx([0.4 + 0.1 * s for s in range(SEEDS)])
  ps["crops"] = rows["crops"]["summary"].p
  m = len(ps)
  smallest = min(ps, key=ps.get)
  assert rows[smallest]["p_holm"] == pytest.approx(min(1.0, m * ps[smallest]))  # Holm's first step.
  assert [rows[k]["p_holm"] for k in ps] == pytest.approx(stats.holm(list(ps.values())))
  assert rows["towers"]["verdict"] == "held" and rows["towers"]["size"] == "smaller"
  assert rows["lrn"]["verdict"] == "refuted"
  assert rows["dropout"]["verdict"] == "reversed"
  assert rows["pool"]["verdict"] == "same direction, not resolved" and rows["pool"]["size"] == "consistent"
  assert rows["crops"]["verdict"] == "held"
  with open(rep["out"] / "claims.csv") as f:
    got = {r["key"]: r for r in csv.DictReader(f)}
  assert got["towers"]["verdict"] == "held" and float(got["towers"]["paper_value"]) == 1.7
  s = rows["towers"]["summary"]
  assert (float(got["towers"]["ci_low"]), float(got["towers"]["ci_high"])) == pytest.approx(s.ci, abs=1e-5)
  md = rep["markdown"]
  assert "| one tower, half the kernels | 3.2 | +1.7 | " + s.fmt_ci() + " | 5 | " in md
  assert "| <0.001 |" in md and "| 0.00 |" not in md  # A tiny p is not printed as 0.00.
  # The ablation table carries the same Holm p for the claims' tests.
  abl = {r["run"]: r for r in rep["ablations"]}
  assert abl["no_lrn"]["p_holm_claims"] == pytest.approx(rows["lrn"]["p_holm"])
  assert abl["no_lrn"]["d_top1_ten_values"].split() == [f"{d:.4f}" for d in DESIGN["no_lrn"][1]]


def test_figure1_lr_grid_keeps_each_nets_fastest_rate(tmp_path):
  root = tmp_path / "fig1"
  # Training error 0.9 exp(-epoch / tau): faster rates have smaller tau.
  taus = {("relu", 0.01): 1.5, ("relu", 0.03): 1.0, ("tanh", 0.01): 6.0, ("tanh", 0.03): 4.5}
  for (act, lr), tau in taus.items():
    for s in range(3):
      wd = fake_run(root, f"{act}_lr{lr}.s{s}", f"act={act},dropout=0,aug=0,pca=0,seed={s}", tau=tau * (1 + 0.1 * s),
                    epochs=20)
      cfg = json.loads((wd / "config.json").read_text())
      cfg["optim"].update(lr=lr, weight_decay=0.0)
      (wd / "config.json").write_text(json.dumps(cfg))
  rep = report.make_report([str(root)], baseline="relu_lr0.03", plots=False)
  (sp,) = rep["speedup"]
  assert (sp["relu"], sp["tanh"]) == ("relu_lr0.03", "tanh_lr0.03")
  assert {g for g, _ in sp["lr_grid"]["relu"]} == {"relu_lr0.01", "relu_lr0.03"}
  # Per seed, tanh's epochs over ReLU's; the geometric mean of those with a t-interval on logs.
  groups = rep["groups"]
  ratios = []
  for s in range(3):
    e = [speedup_lib.epochs_to_threshold(groups[g][s], 0.25, sp["fractional"])[0] for g in (sp["relu"], sp["tanh"])]
    ratios.append(e[1] / e[0])
  assert sp["per_seed"].mean == pytest.approx(math.exp(np.mean(np.log(ratios))))
  (row,) = [r for r in rep["claims"] if r["key"] == "figure1"]
  assert row["verdict"] in ("held", "same direction, not resolved")
  assert "not Figure 1's protocol" not in row["expected"]
  assert "**0.03**" in rep["markdown"]


def test_figure1_two_stage_grid_compares_rates_on_their_shared_seed(tmp_path):
  # Stage 1: every rate on seed 0; stage 2: seeds 1-2 at each activation's seed-0 winner. The
  # winner's later seeds are slower (tau grows with the seed), so its 3-seed mean is worse than a
  # losing rate's lone seed 0: only a comparison on the shared seed keeps the stage-1 choice.
  root = tmp_path / "fig1"
  taus = {("relu", 0.01): 1.0, ("relu", 0.03): 1.05, ("tanh", 0.01): 4.0, ("tanh", 0.03): 4.2}
  chosen = {"relu": 0.01, "tanh": 0.01}
  for (act, lr), tau in taus.items():
    for s in range(3) if lr == chosen[act] else (0,):
      wd = fake_run(root, f"{act}_lr{lr}.s{s}", f"act={act},dropout=0,aug=0,pca=0,seed={s}",
                    tau=tau * (1 + 0.1 * s), epochs=20)
      cfg = json.loads((wd / "config.json").read_text())
      cfg["optim"].update(lr=lr, weight_decay=0.0)
      (wd / "config.json").write_text(json.dumps(cfg))
  groups = runs_lib.group_runs(runs_lib.discover([str(root)]), baseline=None)
  late = speedup_lib._mean_epochs(groups["relu_lr0.01"], 0.25)
  assert late > speedup_lib._mean_epochs(groups["relu_lr0.03"], 0.25)  # the trap is armed
  assert speedup_lib.relu_tanh_pairs(groups) == [("relu_lr0.01", "tanh_lr0.01")]
  (sp,) = speedup_lib.speedup(groups, [("relu_lr0.01", "tanh_lr0.01")], 0.25)
  assert sp["per_seed"].n == 3  # the ratio uses every seed of the chosen rates


def test_figure1_sweep_runs_the_grid_on_seed_0_and_the_chosen_rates_after():
  spec = str(REPO / "experiments/fmnist_figure1.py")
  grid = sweep.load_sweep(spec + ":seeds=3,lrs=0.001+0.002")
  assert len(grid) == 2 * 2 * 3  # no choice given: every seed at every rate
  staged = [r.name for r in sweep.load_sweep(spec + ":seeds=3,lrs=0.001+0.002,relu_lr=0.001,tanh_lr=0.002")]
  assert staged == ["relu_lr0.001.s0", "relu_lr0.002.s0", "tanh_lr0.001.s0", "tanh_lr0.002.s0",
                    "relu_lr0.001.s1", "tanh_lr0.002.s1", "relu_lr0.001.s2", "tanh_lr0.002.s2"]
  with pytest.raises(sweep.SweepError, match="give both"):
    sweep.load_sweep(spec + ":relu_lr=0.001")


def test_group_curve_averages_only_where_every_seed_has_logged():
  a = (np.array([0.0, 1.0, 2.0, 3.0, 4.0]), np.array([10.0, 8.0, 6.0, 4.0, 2.0]))
  b = (np.array([0.5, 1.5, 2.5, 3.5, 4.5, 5.5]), np.array([9.0, 7.0, 5.0, 3.0, 1.0, 0.5]))
  xs, mean, lo, hi = plots.group_curve([a, b])
  assert xs[0] == 0.5 and xs[-1] == 4.0  # From the latest start to the earliest end: no jump.
  want = (np.interp(xs, *a) + np.interp(xs, *b)) / 2
  assert mean == pytest.approx(want) and np.all(lo <= mean) and np.all(mean <= hi)
  assert plots.group_curve([None, a])[1] == pytest.approx(a[1])


def test_panels_say_log_scale_only_when_they_are(tmp_path, monkeypatch):
  root = tmp_path / "r"
  fake_run(root, "full", "", top1=0.1)
  wd = fake_run(root, "other", "lrn=0", top1=0.1)
  rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
  for r in rows:
    if r["kind"] == "val":
      r["top5_err"] = 0.0  # A small net's top-5: no place on a log axis.
  (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  figs = []
  monkeypatch.setattr(plots, "save", lambda fig, path: figs.append(fig) or [path])
  groups = runs_lib.group_runs(runs_lib.discover([str(root)]), "full")
  plots.plot_curves(groups, "full", tmp_path, "epoch", "log")
  labels = {ax.get_title(): (ax.get_ylabel(), ax.get_yscale()) for ax in figs[0].axes}
  assert labels["Validation top-5 error"] == ("error (%)", "linear")
  assert labels["Validation top-1 error"] == ("error (%), log scale", "log")
  plots.plot_curves(groups, "full", tmp_path, "epoch", "linear")
  assert all(ax.get_ylabel() == "error (%)" for ax in figs[1].axes if ax.get_title())


def test_tidy_csv_holds_every_logged_number(study):
  runs = runs_lib.discover([str(study)])
  df = runs_lib.tidy_frame(runs)
  assert list(df.columns) == ["run", "group", "seed", "kind", "step", "epoch", "crops", "wall_time", "metric",
                              "value"]
  # Count what read_run keeps (one row per kind, step and crops), every numeric field but the ids.
  ids = {"kind", "step", "epoch", "crops", "wall_time"}
  want = sum(1 for r in runs for rows in r.rows.values() for row in rows for k, v in row.items()
             if k not in ids and isinstance(v, (int, float)))
  assert len(df) == want
  run = next(r for r in runs if r.name == "no_lrn.s2")
  test = df[(df.run == "no_lrn.s2") & (df.kind == "test") & (df.crops == "ten") & (df.metric == "top1_err")]
  assert test.value.tolist() == pytest.approx([run.test("ten")["top1_err"]])
  assert set(df[df.run == "no_lrn.s2"].seed) == {2} and set(df[df.run == "no_lrn.s2"].group) == {"no_lrn"}


def test_exported_raw_runs_regenerate_the_report(study, tmp_path):
  dest = tmp_path / "results" / "study"
  first = report.make_report([str(study)], out=str(tmp_path / "a"), export=str(dest), plots=False)
  for name in ("full.s0", "no_lrn.s4"):
    assert sorted(p.name for p in (dest / name).iterdir()) == ["config.json", "final.json", "metrics.jsonl"]
    assert (dest / name / "metrics.jsonl").read_bytes() == (study / name / "metrics.jsonl").read_bytes()
  # Committed like this, the command in the issue regenerates the tables into <folder>/report.
  rc = subprocess.run([sys.executable, "-m", "alexnet_jax.report", str(dest), "--no_plots"], cwd=REPO,
                      capture_output=True, text=True)
  assert rc.returncode == 0, rc.stderr
  assert "## The paper's claims" in rc.stdout
  for name in ("claims.csv", "ablations.csv", "results.csv"):
    assert (dest / "report" / name).read_text() == (first["out"] / name).read_text()


def test_valid_json_of_the_wrong_shape_is_left_out_with_a_warning(tmp_path):
  fake_run(tmp_path, "good")
  fake_run(tmp_path, "odd")
  odd = tmp_path / "odd"
  (odd / "config.json").write_text("[1, 2, 3]")
  (odd / "final.json").write_text(json.dumps({"step": 40, "test": {"center": "not a dict"}}))
  with open(odd / "metrics.jsonl", "a") as f:
    f.write(json.dumps({"kind": "val", "step": 50, "top1_err": "abc"}) + "\n")
  with pytest.warns(UserWarning) as caught:
    found = {r.name: r for r in runs_lib.discover([str(tmp_path)])}
  texts = " ".join(str(w.message) for w in caught)
  assert "odd/config.json" in texts and "odd/final.json" in texts and "odd/metrics.jsonl" in texts
  assert found["odd"].config is None and found["odd"].final is None
  assert all(r.get("step") != 50 for r in found["odd"].val_rows())
  assert found["good"].final is not None
  out = tmp_path / "report_out"
  rc = subprocess.run([sys.executable, "-m", "alexnet_jax.report", str(tmp_path), f"--out={out}",
                       "--no_plots"], cwd=pathlib.Path(__file__).parents[1], capture_output=True,
                      text=True, timeout=300)
  assert rc.returncode == 0, rc.stderr[-2000:]
  assert "odd/final.json" in rc.stderr


def test_eval_mode_training_error_reaches_the_results_table_and_the_export(tmp_path):
  # alexnet_jax.evaluate writes <run>/eval/train-center.json; the results table shows it beside
  # the val error (mean over seeds) and --export carries it with the raw files.
  root = tmp_path / "runs"
  for s, err in enumerate((0.10, 0.14)):
    wd = fake_run(root, f"full.s{s}", f"seed={s}")
    (wd / "eval").mkdir()
    (wd / "eval" / "train-center.json").write_text(json.dumps(
        {"split": "train", "crops": "center", "step": 40, "examples": 100, "loss": 0.3, "top1_err": err,
         "top5_err": 0.0}))
  fake_run(root, "no_lrn.s0", "lrn=0,seed=0")  # not evaluated: its cell stays empty
  dest = tmp_path / "export"
  rep = report.make_report([str(root)], out=str(tmp_path / "rep"), export=str(dest), plots=False)
  with open(rep["out"] / "results.csv") as f:
    rows = {r["run"]: r for r in csv.DictReader(f)}
  assert float(rows["full"]["train_eval_top1_mean"]) == pytest.approx(12.0)
  assert rows["full"]["train_eval_seeds"] == "2" and rows["no_lrn"]["train_eval_seeds"] == "0"
  assert "Train top-1 (eval mode)" in rep["markdown"] and "12.00 ± 2.83" in rep["markdown"]
  assert (dest / "full.s1" / "eval" / "train-center.json").read_text() == (
      root / "full.s1" / "eval" / "train-center.json").read_text()
  again = {r.name: r for r in runs_lib.discover([str(dest)])}
  assert again["full.s1"].evals["train-center"]["top1_err"] == 0.14


def test_a_report_over_two_studies_compares_each_group_only_within_its_protocol(tmp_path):
  # The like-for-like study (full, no_lrn; 4 epochs) and Figure 1's grid (1 epoch, no
  # regularisation) reported together: the claims table has both, the ablation table only the
  # groups trained like `full`, and a note names the others instead of printing their Δ.
  abl, fig = tmp_path / "abl", tmp_path / "fig1"
  for s in range(2):
    fake_run(abl, f"full.s{s}", f"seed={s}", top1=0.12 + 0.01 * s)
    fake_run(abl, f"no_lrn.s{s}", f"lrn=0,seed={s}", top1=0.13 + 0.01 * s)
    for act, tau in (("relu", 0.1), ("tanh", 0.4)):
      fake_run(fig, f"{act}_lr0.01.s{s}", f"act={act},dropout=0,aug=0,pca=0,epochs=1,seed={s}",
               tau=tau * (1 + 0.1 * s), epochs=1)
  rep = report.make_report([str(abl), str(fig)], out=str(tmp_path / "rep"), plots=False)
  assert {c["run"] for c in rep["ablations"]} == {"no_lrn", "full"}  # full: the 10-crop row
  assert {r["key"] for r in rep["claims"]} >= {"lrn", "figure1"}
  md = rep["markdown"]
  assert "Not compared with `full` (trained under another protocol: num_epochs, optim.schedule): relu_lr0.01, tanh_lr0.01" in md
