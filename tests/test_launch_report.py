"""Sweeps, the launcher and reports, on fake workdirs (no training: train_and_evaluate is stubbed)."""

import io
import json
import math
import re
import pathlib
import sys

import pytest

from alexnet_jax import launch, optim, report, sweep
from alexnet_jax.sweep import Run, SweepError

REPO = pathlib.Path(__file__).resolve().parents[1]
FMNIST = "configs/small_fashion_mnist.py"


def fake_run(root, name, variant="", *, top1=0.10, top5=0.02, ten_gain=0.01, finished=True,
             epochs=4, tau=1.0, floor=0.0, spe=10, log_every=2, last_epoch=None):
  """A workdir as train.py writes it: training error falls as floor + 0.9 exp(-epoch / tau)."""
  wd = pathlib.Path(root) / name
  wd.mkdir(parents=True)
  cfg = sweep.resolve(Run(name, f"{FMNIST}:{variant}" if variant else FMNIST))
  (wd / "config.json").write_text(cfg.to_json_best_effort(indent=2))
  err = lambda e: floor + 0.9 * math.exp(-e / tau)
  last = epochs if last_epoch is None else last_epoch
  rows = []
  for step in range(log_every, int(last * spe) + 1, log_every):
    e = step / spe
    rows.append(dict(kind="train", step=step, epoch=e, lr=0.01, loss=1.0, top1_err=err(e),
                     top5_err=err(e) / 5, images_per_sec=100.0, wall_time=6.0 * step))
    if step % spe == 0:
      rows.append(dict(kind="train_epoch", step=step, epoch=e, lr=0.01, loss=1.0, top1_err=err(e - 0.5),
                       top5_err=err(e - 0.5) / 5, wall_time=6.0 * step))
      rows.append(dict(kind="val", step=step, epoch=e, lr=0.01, loss=1.0, crops="center",
                       top1_err=top1 + 0.1 / e, top5_err=top5 + 0.02 / e, wall_time=6.0 * step + 1))
  final = None
  if finished:
    test = {"center": dict(loss=0.3, top1_err=top1, top5_err=top5),
            "ten": dict(loss=0.3, top1_err=top1 - ten_gain, top5_err=top5 - ten_gain / 2)}
    for crops, t in test.items():
      rows.append(dict(kind="test", step=epochs * spe, epoch=float(epochs), crops=crops, lr=0.01,
                       wall_time=6.0 * epochs * spe + 2, **t))
    final = dict(step=epochs * spe, epoch=float(epochs), wall_time=6.0 * epochs * spe + 2,
                 val=dict(loss=0.3, top1_err=top1, top5_err=top5), test=test)
  # A resumed run repeats rows after its checkpoint; the report must keep one per step.
  text = "".join(json.dumps(r) + "\n" for r in rows[:3] + rows)
  (wd / "metrics.jsonl").write_text(text + ('{"kind": "train", "step"' if not finished else ""))
  if final:
    (wd / "final.json").write_text(json.dumps(final))
  return wd


def _row(rows, **match):
  got = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
  assert len(got) == 1, (match, rows)
  return got[0]


def _check_png(path):
  import matplotlib.image

  assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  img = matplotlib.image.imread(path)
  assert img.shape[0] > 300 and img.shape[1] > 400
  assert img[..., :3].std() > 0.05  # Not a blank canvas: lines, labels, legend.


# ---------------------------------------------------------------------------------------------
# Reports.


@pytest.fixture
def ablation_sweep(tmp_path):
  root = tmp_path / "sweep"
  fake_run(root, "full.s0", "crops=ten,seed=0", top1=0.10, top5=0.02)
  fake_run(root, "full.s1", "crops=ten,seed=1", top1=0.12, top5=0.03)
  fake_run(root, "no_lrn.s0", "lrn=0,crops=ten,seed=0", top1=0.13, top5=0.025)
  fake_run(root, "no_lrn.s1", "lrn=0,crops=ten,seed=1", top1=0.14, top5=0.04)
  fake_run(root, "pool_2x2.s0", "pool=2x2,crops=ten,seed=0", top1=0.11, top5=0.02)
  fake_run(root, "tanh.s0", "act=tanh,crops=ten,seed=0", tau=3.0)
  fake_run(root, "one_tower.s0", "towers=1,crops=ten,seed=0", finished=False, last_epoch=2.2)
  return root


def test_report_tables_deltas_and_seeds(ablation_sweep):
  rep = report.make_report([str(ablation_sweep)])
  out = ablation_sweep / "report"
  assert rep["out"] == out and rep["baseline"] == "full"

  full = _row(rep["results"], run="full")
  assert full["seeds"] == 2 and full["finished"] == 2 and full["paper_top1"] == 40.7
  assert full["top1_center_mean"] == pytest.approx(11.0)
  assert full["top1_center_std"] == pytest.approx(math.sqrt(2))
  assert (full["top1_center_min"], full["top1_center_max"]) == pytest.approx((10.0, 12.0))
  assert full["top1_ten_mean"] == pytest.approx(10.0)
  assert full["paper_dataset"] is False

  lrn = _row(rep["ablations"], run="no_lrn")
  assert lrn["switch"] == "no LRN" and lrn["paper_d_top1"] == 1.4 and lrn["paper_d_top5"] == 1.2
  # Paired by seed: (13 - 10, 14 - 12) = (3, 2).
  assert lrn["d_top1_center_mean"] == pytest.approx(2.5)
  assert lrn["d_top1_center_std"] == pytest.approx(math.sqrt(0.5))
  assert lrn["d_top1_center_n"] == 2
  # Paired t over seeds: t = 2.5 / (sqrt(0.5) / sqrt(2)) = 5 with 1 degree of freedom, where
  # Student's t is the Cauchy distribution: p = 1 - (2 / pi) * atan(t).
  assert lrn["d_top1_center_t"] == pytest.approx(5.0)
  assert lrn["d_top1_center_p"] == pytest.approx(1 - 2 / math.pi * math.atan(5.0))
  assert lrn["d_top5_center_mean"] == pytest.approx(0.75)
  assert lrn["config_change"] == "model.lrn: true → false"
  pool = _row(rep["ablations"], run="pool_2x2")
  assert pool["switch"] == "non-overlapping pooling" and pool["paper_d_top1"] == 0.4
  assert pool["d_top1_center_n"] == 1 and pool["d_top1_center_mean"] == pytest.approx(1.0)
  assert pool["d_top1_center_p"] is None  # One seed: no noise estimate, no p.
  assert _row(rep["ablations"], run="one_tower")["paper_d_top1"] == 1.7
  crops = _row(rep["ablations"], switch="center crop instead of 10 crops")
  assert crops["d_top1_center_mean"] == pytest.approx(1.0)

  md = (out / "report.md").read_text()
  assert md == rep["markdown"]
  assert "| full | fashion_mnist_offline † | 2 | done | 11.00 ± 1.41 |" in md
  # Mean [95% t-interval]: 2.5 ± t(0.975, 1) * sqrt(0.5) / sqrt(2) = 2.5 ± 12.706 * 0.5.
  assert "+2.50 [-3.85, +8.85]" in md and "+3.00, +2.00" in md and "+1.4 / +1.2" in md and "| 0.13 |" in md
  assert "different dataset" in md
  assert "40.7 / 18.2" in md and "37.5 / 17.0" in md  # The paper's Table 2 and Table 1 rows.
  for name in ("results.csv", "ablations.csv", "runs.csv", "speedup.csv"):
    assert (out / name).stat().st_size > 100
  for name in ("curves_epoch.png", "curves_walltime.png", "curves_delta.png", "figure1.png", "claims.png"):
    _check_png(out / name)
    assert (out / name).with_suffix(".svg").read_text().lstrip().startswith("<?xml")


def test_report_on_unfinished_run(ablation_sweep):
  rep = report.make_report([str(ablation_sweep)], runs="one_tower*,full")
  assert set(rep["groups"]) == {"full", "one_tower"}
  tower = _row(rep["results"], run="one_tower")
  assert tower["finished"] == 0 and tower["top1_center_mean"] is None
  assert tower["val_top1_latest_mean"] == pytest.approx(100 * (0.10 + 0.1 / 2))
  planned = sweep.load_config(FMNIST).num_epochs  # The status counts against config.json's epochs.
  assert f"epoch 2.20/{planned}" in tower["status"]
  assert _row(rep["ablations"], run="one_tower")["d_top1_center_n"] == 0
  run = report.read_run(ablation_sweep / "one_tower.s0")
  steps = [r["step"] for r in run.rows["train"]]
  assert steps == sorted(set(steps))  # Duplicated (resumed) and half-written rows are dropped.


def test_report_cli_several_workdirs_and_filters(ablation_sweep, tmp_path, capsys):
  out = tmp_path / "cmp"
  rc = report.main([str(ablation_sweep / "full.s0"), str(ablation_sweep / "no_lrn.s0"),
                    f"--out={out}", "--no_plots"])
  assert rc == 0
  printed = capsys.readouterr().out
  assert "| full | fashion_mnist_offline †" in printed and "| no LRN | no_lrn |" in printed
  assert not (out / "curves_epoch.png").exists()
  assert report.main([str(ablation_sweep), "--runs=nothing*"]) == 2
  # Linear error axes on request (log is the default, see test_report_tables_deltas_and_seeds).
  lin = tmp_path / "linear"
  assert report.main([str(ablation_sweep), f"--out={lin}", "--yscale=linear"]) == 0
  _check_png(lin / "curves_epoch.png")
  with pytest.raises(SystemExit):
    report.main([str(ablation_sweep), "--yscale=logit"])


def test_relu_vs_tanh_speedup(tmp_path):
  root = tmp_path / "rt"
  variant = "dropout=0,aug=0,pca=0,seed={}"
  # exp(-e / tau) * 0.9 = 0.25 at e = 1.28 tau; train_epoch rows sit half an epoch behind.
  for s in (0, 1):
    fake_run(root, f"relu.s{s}", "act=relu," + variant.format(s), tau=1.5, epochs=20)
    fake_run(root, f"tanh.s{s}", "act=tanh," + variant.format(s), tau=4.5, epochs=20)
  rep = report.make_report([str(root)], threshold=0.25)
  assert rep["baseline"] == "relu"
  assert _row(rep["results"], run="relu")["paper_top1"] is None  # Not the paper's full model.
  (sp,) = rep["speedup"]
  assert not sp["fractional"]
  assert sp["ep_relu"].mean == 3.0 and sp["ep_tanh"].mean == 7.0  # First epochs at <= 25%.
  assert sp["ratio"] == pytest.approx(7 / 3)
  _check_png(rep["out"] / "figure1.png")
  assert "2.33×" in rep["markdown"] and "~6×" in rep["markdown"]

  # ReLU is below 70% after its first epoch: whole epochs cannot resolve the ratio, so the
  # report interpolates between train rows instead, and says so.
  rep = report.make_report([str(root)], threshold=0.7, plots=False)
  (sp,) = rep["speedup"]
  assert sp["fractional"]
  assert sp["ep_relu"].mean == pytest.approx(1.5 * math.log(0.9 / 0.7), abs=0.02)
  assert sp["ratio"] == pytest.approx(3.0, rel=0.1)
  assert "interpolated between `train` rows" in rep["markdown"]


def test_speedup_lower_bound_when_tanh_never_gets_there(tmp_path):
  fake_run(tmp_path / "s", "relu", "act=relu", tau=1.0, epochs=5)
  fake_run(tmp_path / "s", "tanh", "act=tanh", tau=1.0, floor=0.3, epochs=5)
  (sp,) = report.make_report([str(tmp_path / "s")], plots=False)["speedup"]
  assert sp["lower_bound"] and sp["ratio"] == pytest.approx(5 / 2)


def test_speedup_pairs_runs_of_different_lengths(tmp_path):
  # A short ReLU run and a longer tanh run (constant LR): the shorter is a prefix of a longer
  # one, so they still pair. A cosine schedule depends on the length, and then they do not.
  for wd in (fake_run(tmp_path / "a", "relu", "act=relu,epochs=3", tau=1.0, epochs=3),
             fake_run(tmp_path / "a", "tanh", "act=tanh,epochs=8", tau=3.0, epochs=8)):
    cfg = json.loads((wd / "config.json").read_text())
    # The Fashion-MNIST config's fixed drop sits at 3/4 of each run: a constant LR instead.
    cfg["optim"]["schedule"] = "constant"  # its step_epochs, unused, still differ
    (wd / "config.json").write_text(json.dumps(cfg))
  (sp,) = report.make_report([str(tmp_path / "a")], plots=False)["speedup"]
  assert (sp["relu"], sp["tanh"]) == ("relu", "tanh") and not sp["lower_bound"]
  for name, variant in (("relu", "act=relu,epochs=3"), ("tanh", "act=tanh,epochs=8")):
    wd = fake_run(tmp_path / "b", name, variant, epochs=3)
    cfg = json.loads((wd / "config.json").read_text())
    cfg["optim"]["schedule"] = "cosine"
    (wd / "config.json").write_text(json.dumps(cfg))
  assert report.make_report([str(tmp_path / "b")], plots=False)["speedup"] == []


# ---------------------------------------------------------------------------------------------
# Sweeps.


@pytest.mark.parametrize("spec,n", [
    ("experiments/paper_ablations.py", 9),
    ("experiments/relu_vs_tanh.py", 2),
    ("experiments/fmnist_paper_ablations.py:seeds=2,middle=3+4", 20),
    ("experiments/fmnist_relu_vs_tanh.py:seeds=3,lr_tanh=0.02", 6),
])
def test_shipped_sweeps_resolve(spec, n):
  runs = sweep.load_sweep(str(REPO / spec))
  assert len(runs) == n
  configs = {r.name: sweep.resolve(r) for r in runs}
  if "seeds" in spec:
    assert all(sweep.split_name(r.name)[1] is not None for r in runs)
  if "ablations" in spec:
    full = configs["full.s0" if "seeds" in spec else "full"]
    assert full.data.eval_crops == "ten"
    assert not configs[next(k for k in configs if k.startswith("no_lrn"))].model.lrn
    assert configs[next(k for k in configs if k.startswith("pool_2x2"))].model.pool_window == 2
  else:
    tanh = configs[next(k for k in configs if k.startswith("tanh"))]
    assert tanh.model.activation == "tanh" and tanh.optim.weight_decay == 0 and tanh.model.dropout == 0
  if "lr_tanh" in spec:
    assert configs["tanh.s2"].optim.lr == 0.02 and configs["relu.s2"].optim.lr != 0.02


def test_drops_gives_every_run_the_same_fixed_lr_drop():
  runs = sweep.load_sweep(str(REPO / "experiments/fmnist_paper_ablations.py:seeds=2,epochs=4,drops=3"))
  configs = [sweep.resolve(r) for r in runs]
  assert len(configs) == 18
  for c in configs:
    assert c.optim.schedule == "steps" and tuple(c.optim.step_epochs) == (3.0,) and c.num_epochs == 4
  policy = optim.make_lr_policy(configs[0].optim, configs[0].num_epochs)
  assert policy.lr(3 * 100 - 1, 100) == pytest.approx(0.01)
  assert policy.lr(3 * 100, 100) == pytest.approx(0.001)
  # The same overrides travel to worker processes as config_flags.
  assert "--config.optim.step_epochs=(3.0,)" in sweep.override_flags(runs[0].overrides)
  with pytest.raises(SweepError, match="drops='x'.*joined by"):
    sweep.load_sweep(str(REPO / "experiments/fmnist_paper_ablations.py:drops=x"))
  # A drop at or after the last epoch is caught before any run starts.
  with pytest.raises(SweepError, match="step_epochs"):
    [sweep.resolve(r) for r in sweep.load_sweep(str(REPO / "experiments/fmnist_paper_ablations.py:epochs=3,drops=3"))]


def test_sweep_argument_errors():
  with pytest.raises(SweepError, match="unknown sweep argument 'seed'.*seeds"):
    sweep.load_sweep(str(REPO / "experiments/fmnist_paper_ablations.py:seed=2"))
  with pytest.raises(SweepError, match="middle"):
    sweep.load_sweep(str(REPO / "experiments/paper_ablations.py:middle=7"))


def test_override_errors_name_the_field():
  with pytest.raises(SweepError, match=r"run 'x'.*'config.optim.lrr'.*Fields under config.optim: .*lr"):
    sweep.resolve(Run("x", FMNIST, {"optim.lrr": 0.1}))
  with pytest.raises(SweepError, match=r"config.model.lrn is a value"):
    sweep.resolve(Run("x", FMNIST, {"model.lrn.size": 3}))
  with pytest.raises(SweepError, match="wrong type"):
    sweep.resolve(Run("x", FMNIST, {"model.lrn": "maybe"}))
  with pytest.raises(SweepError, match="bad config argument 'lrm=0'"):
    sweep.resolve(Run("x", FMNIST + ":lrm=0"))
  with pytest.raises(SweepError, match="towers"):  # config.validate runs on the result.
    sweep.resolve(Run("x", FMNIST, {"model.towers": 3}))
  c = sweep.resolve(Run("x", FMNIST, {"optim.lr": 0.02, "model.conv_layers": [1, 2, 4, 5]}))
  assert c.optim.lr == 0.02 and c.model.conv_layers == (1, 2, 4, 5)


# ---------------------------------------------------------------------------------------------
# Launcher.


SWEEP_FILE = '''
from alexnet_jax import sweep
def get_sweep(arg=None):
  return [sweep.Run("a", "configs/small_fashion_mnist.py:runlocal", {"optim.lr": 0.02}),
          {"name": "b", "config": "configs/small_fashion_mnist.py:lrn=0,runlocal"},
          sweep.Run("c", "configs/small_fashion_mnist.py:towers=1,runlocal")]
'''


@pytest.fixture
def sweep_file(tmp_path):
  p = tmp_path / "mysweep.py"
  p.write_text(SWEEP_FILE)
  return str(p)


class StubTrain:
  """Stands in for train_and_evaluate: writes what the launcher and report read."""

  def __init__(self, fail=()):
    self.calls, self.fail = [], set(fail)

  def __call__(self, config, workdir):
    name = pathlib.Path(workdir).name
    self.calls.append((name, config))
    print(f"training {name}")
    if name in self.fail:
      raise RuntimeError(f"boom in {name}")
    test = {"center": dict(loss=1.0, top1_err=0.25, top5_err=0.05)}
    pathlib.Path(workdir, "final.json").write_text(json.dumps(dict(step=5, epoch=1.0, wall_time=3.0, test=test)))


def test_dry_run_prints_runs_and_commands(sweep_file, tmp_path):
  out = io.StringIO()
  wd = tmp_path / "runs"
  assert launch.main([sweep_file, f"--workdir={wd}", "--dry_run"], out=out) == 0
  text = out.getvalue()
  assert "3 runs (3 to run, 0 finished)" in text
  assert (f"python -m alexnet_jax.main --config=configs/small_fashion_mnist.py:runlocal "
          f"--workdir={wd}/a --config.optim.lr=0.02") in text
  assert text.count("  start\n") == 3
  assert not wd.exists()


def test_flags_have_one_spelling_and_errors_one_line(sweep_file, tmp_path, capsys):
  wd = tmp_path / "runs"
  for hyphenated, fix in (("--dry-run", "--dry_run"), ("--in-process", "--in_process")):
    with pytest.raises(SystemExit) as e:
      launch.main([sweep_file, f"--workdir={wd}", hyphenated], out=io.StringIO())
    assert e.value.code == 2
    assert f"spelt with underscores here: {fix}" in capsys.readouterr().err
  bad = str(REPO / "experiments/fmnist_paper_ablations.py:nope=1")
  assert launch.main([bad, f"--workdir={wd}", "--dry_run"], out=io.StringIO()) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and "'nope'" in err and "Traceback" not in err
  assert len(err.strip().splitlines()) == 1
  with pytest.raises(SweepError, match="'nope'"):
    launch.main([bad, f"--workdir={wd}", "--dry_run", "--traceback"], out=io.StringIO())
  assert not wd.exists()


def test_skips_finished_runs_and_resumes_others(sweep_file, tmp_path):
  wd = tmp_path / "runs"
  fake_run(wd, "b", "lrn=0,runlocal")  # Finished already.
  (wd / "c").mkdir()
  (wd / "c" / "metrics.jsonl").write_text("")  # Interrupted: train_and_evaluate resumes it.
  stub = StubTrain()
  out = io.StringIO()
  assert launch.main([sweep_file, f"--workdir={wd}", "--in_process"], train_fn=stub, out=out) == 0
  assert [n for n, _ in stub.calls] == ["a", "c"]
  assert stub.calls[0][1].optim.lr == 0.02 and stub.calls[1][1].model.towers == 1
  text = out.getvalue()
  for line in (r"a\s+done", r"b\s+finished \(skipped\)\s+4\.00\s+10\.00", r"c\s+done"):
    assert re.search("^" + line, text, re.M), line
  assert "25.00" in text  # top-1 from final.json in the summary.
  assert "training a" in (wd / "a" / "log.txt").read_text()

  stub2 = StubTrain()
  assert launch.main([sweep_file, f"--workdir={wd}", "--in_process"], train_fn=stub2, out=io.StringIO()) == 0
  assert stub2.calls == []
  dry = io.StringIO()
  launch.main([sweep_file, f"--workdir={wd}", "--dry_run"], out=dry)
  assert dry.getvalue().count("skip (finished)") == 3


def test_failed_run_is_reported_and_others_continue(sweep_file, tmp_path):
  wd = tmp_path / "runs"
  stub = StubTrain(fail={"b"})
  out = io.StringIO()
  assert launch.main([sweep_file, f"--workdir={wd}", "--in_process"], train_fn=stub, out=out) == 1
  assert [n for n, _ in stub.calls] == ["a", "b", "c"]
  assert "failed (RuntimeError)" in out.getvalue() and "1 failed: b" in out.getvalue()
  log = (wd / "b" / "log.txt").read_text()
  assert "RuntimeError: boom in b" in log and "Traceback" in log
  assert not (wd / "b" / "final.json").exists() and (wd / "c" / "final.json").exists()


def test_only_selects_by_name_and_group(tmp_path):
  runs = sweep.load_sweep(str(REPO / "experiments/fmnist_paper_ablations.py:seeds=2"))
  assert [r.name for r in launch.select(runs, "no_lrn,full.s1")] == ["full.s1", "no_lrn.s0", "no_lrn.s1"]
  with pytest.raises(SweepError, match="no run named 'no_lrm'"):
    launch.select(runs, "no_lrm")


def test_bad_override_stops_before_any_run(tmp_path, capsys):
  p = tmp_path / "bad.py"
  p.write_text(SWEEP_FILE.replace('"optim.lr"', '"optim.learning_rate"'))
  stub = StubTrain()
  assert launch.main([str(p), f"--workdir={tmp_path / 'runs'}", "--in_process"], train_fn=stub) == 2
  assert stub.calls == []
  assert "'config.optim.learning_rate'" in capsys.readouterr().err


def test_subprocess_runs_in_parallel_keep_logs_and_report_failures(sweep_file, tmp_path):
  wd = tmp_path / "runs"
  fake_child = ("import json, pathlib, sys; wd = pathlib.Path(sys.argv[1]); print('child', wd.name); "
                "sys.exit(3) if wd.name == 'b' else (wd / 'final.json').write_text(json.dumps("
                "{'epoch': 1.0, 'test': {'center': {'top1_err': 0.5, 'top5_err': 0.1}}}))")
  command_fn = lambda spec, workdir, name: [sys.executable, "-c", fake_child, str(workdir / name)]
  out = io.StringIO()
  results = launch.launch(sweep_file, wd, parallel=2, out=out, command_fn=command_fn)
  status = {r.name: r.status for r in results}
  assert status == {"a": "done", "b": "failed (exit 3)", "c": "done"}
  assert "child b" in (wd / "b" / "log.txt").read_text()
  assert "last lines of" in out.getvalue()
  assert "50.00" in launch.summary_table(results)


def test_parallel_runs_wait_for_the_first_to_prepare_the_data(sweep_file, tmp_path):
  # The first run logs a metric after a while; the others must not start before it does.
  child = ("import json, pathlib, sys, time; wd = pathlib.Path(sys.argv[1]); "
           "(wd / 'started').write_text(str(time.time())); time.sleep(1.0 if wd.name == 'a' else 0); "
           "(wd / 'metrics.jsonl').write_text('{}\\n'); time.sleep(0.5); "
           "(wd / 'final.json').write_text('{}')")
  command_fn = lambda spec, workdir, name: [sys.executable, "-c", child, str(workdir / name)]
  wd = tmp_path / "runs"
  results = launch.launch(sweep_file, wd, parallel=3, out=io.StringIO(), command_fn=command_fn)
  assert [r.status for r in results] == ["done"] * 3
  ready = (wd / "a" / "metrics.jsonl").stat().st_mtime
  assert float((wd / "b" / "started").read_text()) >= ready - 0.05
  assert float((wd / "c" / "started").read_text()) >= ready - 0.05


def test_worker_command_runs_one_run_in_process(sweep_file, tmp_path):
  cmd = launch.worker_command(sweep_file, tmp_path, "b")
  assert cmd[1:] == ["-m", "alexnet_jax.launch", sweep_file, f"--workdir={tmp_path}", "--only=b",
                     "--in_process", "--log=inherit"]


def test_slurm_without_submitit_says_how_to_install(sweep_file, tmp_path, monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, "submitit", None)  # Makes `import submitit` fail.
  assert launch.main([sweep_file, f"--workdir={tmp_path}", "--slurm"]) == 2
  assert "pip install -e '.[slurm]'" in capsys.readouterr().err


def test_slurm_path_through_submitit_debug_executor(sweep_file, tmp_path):
  pytest.importorskip("submitit")
  stub = StubTrain()
  opts = launch.SlurmOptions(cluster="debug", wait=True)
  results = launch.launch(sweep_file, tmp_path / "runs", slurm=opts, train_fn=stub, only="a",
                          out=io.StringIO())
  assert [(r.name, r.status) for r in results] == [("a", "done")]
  assert (tmp_path / "runs" / "a" / "final.json").exists()
