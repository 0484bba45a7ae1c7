r"""Tables and curves from any set of run workdirs, beside the paper's own numbers.

    python -m alexnet_jax.report runs/fmnist_paper_ablations [--runs=no_lrn*,full] [--baseline=full]
    python -m alexnet_jax.report runs/a runs/b --out=runs/compare    # any workdirs, not only sweeps
    tensorboard --logdir runs/fmnist_paper_ablations                 # every run's tb/ side by side

A run is any folder holding `metrics.jsonl` (or `final.json`); see docs/DESIGN.md for the
formats. Runs still training are reported from what they have logged so far. Runs named
`x.s0`, `x.s1` ... are seeds of `x`: tables give mean ± sample std over seeds (min and max in
the CSVs), plots a mean line with the min-max band.

Written to `<folder>/report/` (or --out):
  report.md       results table (paper Tables 1/2 shape), ablation table (Δ vs the baseline with
                  the paper's Δ), ReLU-vs-tanh speed-up; also printed to stdout
  results.csv     one row per run group (errors in %, mean/std/min/max over seeds)
  runs.csv        one row per run (each seed)
  ablations.csv   one row per switch: Δtop-1/Δtop-5 (center and 10 crops) and the paper's Δ
  speedup.csv     epochs (and wall time) to the training-error threshold, tanh/ReLU ratio
  curves_epoch.png, curves_walltime.png   train/val top-1 and top-5 error vs epoch / wall time
  figure1.png     the paper's Figure 1 (training error vs epoch, ReLU solid, tanh dashed)
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import fnmatch
import io
import json
import os
import pathlib
import sys
from typing import Any

import numpy as np

from alexnet_jax import files
from alexnet_jax.sweep import split_name

PAPER_DATASET = "imagenet2012"
CROPS = ("center", "ten")
CROP_LABEL = {"center": "center", "ten": "10 crops"}
SKIP_DIRS = {"checkpoints", "tb", "report"}
IGNORED_DIFF = {"seed"}  # Seeds are aggregated, not a switch.

# Published numbers (Krizhevsky, Sutskever & Hinton, 2012), top-1 / top-5 error in %.
PAPER_ROWS = (
    ("Paper: 1 CNN (Table 2, ILSVRC-2012 val, 10 crops)", "imagenet2012", 40.7, 18.2),
    ("Paper: CNN (Table 1, ILSVRC-2010 test)", "imagenet2010", 37.5, 17.0),
)
BASELINE_PAPER = PAPER_ROWS[0]


@dataclasses.dataclass(frozen=True)
class Claim:
  """One design decision the paper measured: what removing it cost."""
  fields: frozenset
  switch: str
  section: str
  d_top1: float | None
  d_top5: float | None
  text: str  # The paper's Δ as the paper states it.


CLAIMS = (
    Claim(frozenset({"model.lrn"}), "no LRN", "3.3", 1.4, 1.2, "+1.4 / +1.2"),
    Claim(frozenset({"model.pool_window", "model.pool_stride"}), "non-overlapping pooling", "3.4", 0.4, 0.3,
          "+0.4 / +0.3"),
    Claim(frozenset({"model.towers", "model.conv_features"}), "one tower, half the kernels", "3.2", 1.7, 1.2,
          "+1.7 / +1.2"),
    Claim(frozenset({"data.pca_noise"}), "no PCA colour noise", "4.1", 1.0, None, "> +1 / -"),
    Claim(frozenset({"model.conv_layers"}), "a middle conv layer removed", "7", 2.0, None, "~ +2 / -"),
    Claim(frozenset({"model.dropout"}), "no dropout", "4.2", None, None, "no number: 'substantial overfitting'"),
    Claim(frozenset({"data.random_crop", "data.flip"}), "no random crops / flips", "4.1", None, None,
          "no number: 'substantial overfitting'"),
    Claim(frozenset({"model.activation"}), "tanh instead of ReLU", "3.1, Fig. 1", None, None,
          "no error Δ: ReLU trains ~6x faster (see speed-up)"),
)
# Used when a run has no config.json yet (it has just started): the sweep files' names.
CLAIM_BY_NAME = {
    "no_lrn": CLAIMS[0], "pool_2x2": CLAIMS[1], "one_tower": CLAIMS[2], "no_pca": CLAIMS[3],
    "no_conv2": CLAIMS[4], "no_conv3": CLAIMS[4], "no_conv4": CLAIMS[4], "no_dropout": CLAIMS[5],
    "no_aug": CLAIMS[6], "tanh": CLAIMS[7],
}
GROUP_ORDER = ("full", "relu", "no_lrn", "pool_2x2", "one_tower", "no_pca", "no_dropout", "no_aug",
               "no_conv2", "no_conv3", "no_conv4", "tanh")


# ---------------------------------------------------------------------------------------------
# Reading workdirs.


@dataclasses.dataclass
class RunData:
  name: str
  path: pathlib.Path
  config: dict | None
  final: dict | None
  rows: dict  # kind -> list of rows, sorted by step

  @property
  def group(self) -> str:
    return split_name(self.name)[0]

  @property
  def seed(self) -> int | None:
    return split_name(self.name)[1]

  @property
  def finished(self) -> bool:
    return self.final is not None

  @property
  def dataset(self) -> str | None:
    return ((self.config or {}).get("data") or {}).get("dataset")

  @property
  def num_epochs(self) -> float | None:
    return (self.config or {}).get("num_epochs")

  @property
  def epoch(self) -> float | None:
    if self.final and self.final.get("epoch") is not None:
      return self.final["epoch"]
    epochs = [r["epoch"] for rows in self.rows.values() for r in rows if r.get("epoch") is not None]
    return max(epochs) if epochs else None

  @property
  def wall_time(self) -> float | None:
    if self.final and self.final.get("wall_time") is not None:
      return self.final["wall_time"]
    times = [r["wall_time"] for rows in self.rows.values() for r in rows if r.get("wall_time") is not None]
    return max(times) if times else None

  def test(self, crops: str) -> dict | None:
    """{"top1_err", "top5_err", ...} of the final test on these crops, if it ran."""
    if self.final:
      got = (self.final.get("test") or {}).get(crops)
      if got:
        return got
    rows = [r for r in self.rows.get("test", []) if r.get("crops", "center") == crops]
    return rows[-1] if rows else None

  def val_rows(self) -> list[dict]:
    rows = self.rows.get("val", [])
    center = [r for r in rows if r.get("crops", "center") == "center"]
    return center or rows

  def train_rows(self) -> list[dict]:
    return self.rows.get("train") or self.rows.get("train_epoch", [])

  def status(self) -> str:
    if self.finished:
      return "done"
    ep, total = self.epoch, self.num_epochs
    if ep is None:
      return "started"
    return f"epoch {ep:.2f}/{total}" if total else f"epoch {ep:.2f}"


def _read_json(path: pathlib.Path) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None  # Missing, or being written by a live run: report what exists.


def read_run(path: str | os.PathLike, name: str | None = None) -> RunData:
  path = pathlib.Path(path)
  latest = {}
  try:
    with open(path / "metrics.jsonl") as f:
      for line in f:
        try:
          row = json.loads(line)
        except ValueError:
          continue  # A live run's half-written last line.
        if not isinstance(row, dict) or "kind" not in row:
          continue
        # A resumed run logs again the steps after its last checkpoint: the later row wins.
        latest[(row["kind"], row.get("step"), row.get("crops"))] = row
  except OSError:
    pass
  rows: dict[str, list] = {}
  for (kind, _, _), row in latest.items():
    rows.setdefault(kind, []).append(row)
  for kind in rows:
    rows[kind].sort(key=lambda r: (r.get("step") or 0, r.get("wall_time") or 0))
  return RunData(name or path.name, path, _read_json(path / "config.json"), _read_json(path / "final.json"), rows)


def _is_run(p: pathlib.Path) -> bool:
  return (p / "metrics.jsonl").is_file() or (p / "final.json").is_file()


def discover(paths: list[str]) -> list[RunData]:
  """Every run under the given folders (or the given run folders themselves)."""
  runs = []
  for root in map(pathlib.Path, paths):
    if not root.exists():
      raise FileNotFoundError(f"{root}: no such folder.")
    if _is_run(root):
      runs.append(read_run(root, root.resolve().name))
      continue
    for dirpath, dirnames, _ in os.walk(root):
      dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
      p = pathlib.Path(dirpath)
      if p != root and _is_run(p):
        runs.append(read_run(p, p.relative_to(root).as_posix()))
        dirnames[:] = []  # A run's subfolders are its own, not more runs.
  names = [r.name for r in runs]
  dup = {n for n in names if names.count(n) > 1}
  if dup:
    raise ValueError(f"several runs are named {sorted(dup)}; report those folders separately.")
  return runs


def select(runs: list[RunData], patterns: str | None) -> list[RunData]:
  """Keeps runs whose name or group matches any comma-separated glob; `!glob` drops."""
  if not patterns:
    return runs
  pats = [p.strip() for p in patterns.split(",") if p.strip()]
  keep = [p for p in pats if not p.startswith("!")]
  drop = [p[1:] for p in pats if p.startswith("!")]

  def hit(r, ps):
    return any(fnmatch.fnmatchcase(r.name, p) or fnmatch.fnmatchcase(r.group, p) for p in ps)

  return [r for r in runs if (not keep or hit(r, keep)) and not hit(r, drop)]


def group_runs(runs: list[RunData], baseline: str | None) -> dict[str, list[RunData]]:
  groups: dict[str, list[RunData]] = {}
  for r in runs:
    groups.setdefault(r.group, []).append(r)
  for g in groups.values():
    g.sort(key=lambda r: (r.seed is None, r.seed or 0))

  def order(g):
    known = GROUP_ORDER.index(g) if g in GROUP_ORDER else len(GROUP_ORDER)
    return (g != baseline, known, g)

  return {g: groups[g] for g in sorted(groups, key=order)}


# ---------------------------------------------------------------------------------------------
# Numbers.


@dataclasses.dataclass
class Stat:
  values: list[float]

  @property
  def n(self):
    return len(self.values)

  @property
  def mean(self):
    return float(np.mean(self.values)) if self.values else None

  @property
  def std(self):
    return float(np.std(self.values, ddof=1)) if self.n > 1 else None

  @property
  def min(self):
    return min(self.values) if self.values else None

  @property
  def max(self):
    return max(self.values) if self.values else None

  def t_test(self) -> tuple[float, float] | None:
    """(t, two-sided p) of a one-sample t-test that the mean is 0; None below 2 values.

    For paired per-seed deltas this asks whether a switch's effect stands out from the
    seed-to-seed noise of the same comparison.
    """
    if self.n < 2:
      return None
    se = self.std / np.sqrt(self.n)
    if se == 0:
      return (float("inf") if self.mean else 0.0), (0.0 if self.mean else 1.0)
    from scipy import stats as sps  # Deferred: only reports with seeds need it.
    t = self.mean / se
    return float(t), float(2 * sps.t.sf(abs(t), df=self.n - 1))

  def fmt_p(self):
    tt = self.t_test()
    return "-" if tt is None else f"{tt[1]:.2f} (n={self.n})"

  def fmt(self, signed=False, digits=2):
    if not self.values:
      return "-"
    spec = f"{'+' if signed else ''}.{digits}f"
    s = format(self.mean, spec)
    if self.n > 1:
      s += f" ± {self.std:.{digits}f}"
    return s


def pct(runs: list[RunData], crops: str, metric: str) -> Stat:
  vals = []
  for r in runs:
    t = r.test(crops)
    if t and t.get(metric) is not None:
      vals.append(100.0 * t[metric])
  return Stat(vals)


def latest_val(runs: list[RunData], metric: str = "top1_err") -> Stat:
  return Stat([100.0 * r.val_rows()[-1][metric] for r in runs if r.val_rows()])


def paired_delta(a: list[RunData], b: list[RunData], crops_a: str, crops_b: str, metric: str) -> Stat:
  """a - b in %, per seed where both groups have that seed, else difference of the means."""
  def by_seed(runs, crops):
    out = {}
    for r in runs:
      t = r.test(crops)
      if t and t.get(metric) is not None:
        out[r.seed] = 100.0 * t[metric]
    return out

  va, vb = by_seed(a, crops_a), by_seed(b, crops_b)
  common = sorted(set(va) & set(vb), key=lambda s: (s is None, s or 0))
  if common:
    return Stat([va[s] - vb[s] for s in common])
  if va and vb:
    return Stat([float(np.mean(list(va.values())) - np.mean(list(vb.values())))])
  return Stat([])


def flatten(d: Any, prefix="") -> dict[str, Any]:
  if isinstance(d, dict):
    out = {}
    for k, v in d.items():
      out.update(flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: d}


def config_diff(a: dict | None, b: dict | None) -> dict[str, tuple] | None:
  """Fields whose values differ between two config.json dicts: {field: (a, b)}."""
  if a is None or b is None:
    return None
  fa, fb = flatten(a), flatten(b)
  return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb))
          if k not in IGNORED_DIFF and fa.get(k) != fb.get(k)}


def match_claim(diff: dict | None, group: str) -> Claim | None:
  if diff is None:
    return CLAIM_BY_NAME.get(group)
  keys = frozenset(diff)
  for c in CLAIMS:
    # pool=2x2 changes only the window (stride is 2 either way), so a subset counts.
    if keys and keys <= c.fields and (keys == c.fields or c.switch == "non-overlapping pooling"):
      return c
  return None


def describe_diff(diff: dict | None) -> str:
  if diff is None:
    return "(no config.json yet)"
  if not diff:
    return "(same config)"

  def short(v):
    return json.dumps(v) if not isinstance(v, str) else v

  return "; ".join(f"{k}: {short(a)} → {short(b)}" for k, (a, b) in diff.items())


def epochs_to_threshold(run: RunData, threshold: float, fractional: bool) -> tuple[float | None, float | None]:
  """(epoch, wall_time) at which training top-1 error first reaches `threshold`.

  Whole epochs from `train_epoch` rows (the paper's per-epoch curve), or, with `fractional`,
  the crossing interpolated between `train` rows. None when not reached yet.
  """
  rows = run.rows.get("train" if fractional else "train_epoch", [])
  prev = None
  for r in rows:
    if r.get("top1_err") is None or r.get("epoch") is None:
      continue
    if r["top1_err"] <= threshold:
      if not fractional or prev is None or prev["top1_err"] == r["top1_err"]:
        return r["epoch"], r.get("wall_time")
      f = (prev["top1_err"] - threshold) / (prev["top1_err"] - r["top1_err"])
      wall = None
      if r.get("wall_time") is not None and prev.get("wall_time") is not None:
        wall = prev["wall_time"] + f * (r["wall_time"] - prev["wall_time"])
      return prev["epoch"] + f * (r["epoch"] - prev["epoch"]), wall
    prev = r
  return None, None


def relu_tanh_pairs(groups: dict[str, list[RunData]], baseline: str | None) -> list[tuple[str, str]]:
  """(relu group, tanh group) pairs whose configs differ only in the activation."""
  def act(g):
    cfg = groups[g][0].config
    if cfg is None:
      return "tanh" if g == "tanh" else ("relu" if g in ("relu", "full") else None)
    return (cfg.get("model") or {}).get("activation")

  relus = [g for g in groups if act(g) == "relu"]
  relus.sort(key=lambda g: (g != "relu", g != baseline))
  pairs = []
  for t in (g for g in groups if act(g) == "tanh"):
    for r in relus:
      diff = config_diff(groups[r][0].config, groups[t][0].config)
      if diff is not None and (groups[r][0].config.get("optim") or {}).get("schedule") != "cosine":
        # Without a cosine schedule a longer run is the shorter one plus more epochs (same
        # data order and learning rates up to there), so run length alone does not unpair them.
        diff = {k: v for k, v in diff.items() if k != "num_epochs"}
      only_activation = set(diff) == {"model.activation"} if diff is not None else (r, t) in (
          ("relu", "tanh"), ("full", "tanh"))
      if only_activation:
        pairs.append((r, t))
        break
  return pairs


def speedup(groups, pairs, threshold):
  """Per pair: epochs and wall time to the threshold, and the tanh/ReLU ratios."""
  out = []
  for relu, tanh in pairs:
    runs = groups[relu] + groups[tanh]
    # The paper counts whole epochs; if a net is already below the threshold after its first
    # epoch, whole epochs cannot tell the two apart, so both are measured on train rows.
    whole = [epochs_to_threshold(r, threshold, False)[0] for r in runs]
    fractional = any(e is not None and e <= 1.0 + 1e-6 for e in whole) or all(
        not r.rows.get("train_epoch") for r in runs)

    def measure(g):
      got = [epochs_to_threshold(r, threshold, fractional) for r in groups[g]]
      ep = Stat([e for e, _ in got if e is not None])
      wall = Stat([w for e, w in got if e is not None and w is not None])
      last = max((r.epoch or 0) for r in groups[g])
      return ep, wall, len(got) - ep.n, last

    ep_r, wall_r, miss_r, last_r = measure(relu)
    ep_t, wall_t, miss_t, last_t = measure(tanh)
    ratio = ratio_t = None
    note = ""
    if ep_r.n and ep_t.n and not miss_r and not miss_t:
      ratio = ep_t.mean / ep_r.mean
      ratio_t = wall_t.mean / wall_r.mean if wall_r.n and wall_t.n else None
    elif ep_r.n and not miss_r and miss_t:
      ratio = last_t / ep_r.mean
      note = f"tanh not below {threshold:.0%} by epoch {last_t:.2f}: ratio is a lower bound"
    else:
      note = "not reached by every run yet"
    out.append(dict(relu=relu, tanh=tanh, threshold=threshold, fractional=fractional, ep_relu=ep_r,
                    ep_tanh=ep_t, wall_relu=wall_r, wall_tanh=wall_t, ratio=ratio, ratio_time=ratio_t,
                    lower_bound=bool(note and ratio), note=note))
  return out


# ---------------------------------------------------------------------------------------------
# Tables.


def md_table(header: list[str], rows: list[list[str]]) -> str:
  def esc(s):
    return str(s).replace("|", "\\|")

  lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
  return "\n".join(lines)


def _dataset_cell(ds: str | None) -> tuple[str, bool]:
  if ds is None:
    return "?", False
  return (ds, False) if ds == PAPER_DATASET else (f"{ds} †", True)


def _is_full_model(run: RunData) -> bool:
  """Table 2's number belongs beside a full, regularised model, not e.g. Figure 1's ReLU net."""
  if run.config is None:
    return run.group == "full"
  m, d = run.config.get("model") or {}, run.config.get("data") or {}
  return bool(m.get("dropout")) and bool(d.get("random_crop")) and m.get("activation") == "relu"


def results_table(groups, baseline):
  has_ten = any(r.test("ten") for g in groups.values() for r in g)
  header = ["Model", "Dataset", "Seeds", "Status", "Top-1 (center)", "Top-5 (center)"]
  if has_ten:
    header += ["Top-1 (10 crops)", "Top-5 (10 crops)"]
  header += ["Val top-1 (latest)", "Paper top-1 / top-5"]
  md_rows, csv_rows, other_dataset = [], [], False
  for g, runs in groups.items():
    ds_cell, differs = _dataset_cell(runs[0].dataset)
    other_dataset |= differs
    done = sum(r.finished for r in runs)
    status = "done" if done == len(runs) else (
        f"{done}/{len(runs)} done; " + ", ".join(r.status() for r in runs if not r.finished))
    stats = {(c, m): pct(runs, c, m) for c in CROPS for m in ("top1_err", "top5_err")}
    paper = ""
    if g == baseline and _is_full_model(runs[0]):
      paper = f"{BASELINE_PAPER[2]} / {BASELINE_PAPER[3]} (Table 2, 1 CNN)" + (" †" if differs else "")
    row = [g, ds_cell, str(len(runs)), status, stats["center", "top1_err"].fmt(), stats["center", "top5_err"].fmt()]
    if has_ten:
      row += [stats["ten", "top1_err"].fmt(), stats["ten", "top5_err"].fmt()]
    row += [latest_val(runs).fmt(), paper]
    md_rows.append(row)
    c = dict(run=g, dataset=runs[0].dataset, paper_dataset=runs[0].dataset == PAPER_DATASET,
             seeds=len(runs), finished=done, status=status)
    for (crops, m), s in stats.items():
      key = f"{m.replace('_err', '')}_{crops}"
      c.update({f"{key}_mean": s.mean, f"{key}_std": s.std, f"{key}_min": s.min, f"{key}_max": s.max})
    v = latest_val(runs)
    c.update(val_top1_latest_mean=v.mean, val_top1_latest_std=v.std,
             paper_top1=BASELINE_PAPER[2] if paper else None,
             paper_top5=BASELINE_PAPER[3] if paper else None)
    csv_rows.append(c)
  for label, ds, t1, t5 in PAPER_ROWS:
    row = [f"*{label}*", ds, "", "published", "", ""]
    if has_ten:
      row += ["", ""]
    row += ["", f"{t1} / {t5}"]
    md_rows.append(row)
  notes = ["Errors in %, on the test split (`final.json`, or the test rows of `metrics.jsonl`); "
           "with several seeds, mean ± sample std (min/max in results.csv). "
           "Val top-1 is the latest validation error, on the views the run validates with "
           "(`data.eval_crops`: center or 10 crops), also for unfinished runs."]
  if other_dataset:
    notes.append("† Run on a different dataset than the paper's (ILSVRC-2012, `imagenet2012`): "
                 "compare the direction and rough size of differences, not the absolute errors.")
  return md_table(header, md_rows), csv_rows, notes


def ablation_table(groups, baseline):
  if baseline not in groups:
    return None, [], [f"No baseline run `{baseline}` here, so no ablation table (pass --baseline=NAME)."]
  base = groups[baseline]
  has_ten = any(r.test("ten") for g in groups.values() for r in g)
  header = ["Switch (vs " + baseline + ")", "Run", "Dataset", "Config change", "Δtop-1 (center)", "Δtop-5 (center)"]
  if has_ten:
    header += ["Δtop-1 (10 crops)", "Δtop-5 (10 crops)"]
  header += ["p (Δtop-1 center)"] + (["p (Δtop-1 10 crops)"] if has_ten else [])
  header += ["Paper Δtop-1 / Δtop-5", "Paper §"]
  md_rows, csv_rows, other_dataset = [], [], False

  def add(switch, run, ds, change, deltas, claim_text, section, claim):
    nonlocal other_dataset
    ds_cell, differs = _dataset_cell(ds)
    other_dataset |= differs
    row = [switch, run, ds_cell, change, deltas["center", "top1_err"].fmt(True), deltas["center", "top5_err"].fmt(True)]
    if has_ten:
      row += [deltas["ten", "top1_err"].fmt(True), deltas["ten", "top5_err"].fmt(True)]
    row += [deltas["center", "top1_err"].fmt_p()] + ([deltas["ten", "top1_err"].fmt_p()] if has_ten else [])
    row += [claim_text + (" †" if differs and claim and claim.d_top1 is not None else ""), section]
    md_rows.append(row)
    c = dict(switch=switch, run=run, dataset=ds, paper_dataset=ds == PAPER_DATASET, config_change=change)
    for (crops, m), s in deltas.items():
      key = f"d_{m.replace('_err', '')}_{crops}"
      c.update({f"{key}_mean": s.mean, f"{key}_std": s.std, f"{key}_n": s.n})
      tt = s.t_test()
      c.update({f"{key}_t": tt and tt[0], f"{key}_p": tt and tt[1]})
    c.update(paper_d_top1=claim.d_top1 if claim else None, paper_d_top5=claim.d_top5 if claim else None,
             paper_text=claim_text, paper_section=section)
    csv_rows.append(c)

  for g, runs in groups.items():
    if g == baseline:
      continue
    diff = config_diff(base[0].config, runs[0].config)
    claim = match_claim(diff, g)
    deltas = {(c, m): paired_delta(runs, base, c, c, m) for c in CROPS for m in ("top1_err", "top5_err")}
    add(claim.switch if claim else g, g, runs[0].dataset, describe_diff(diff), deltas,
        claim.text if claim else "-", claim.section if claim else "", claim)
  if any(r.test("ten") and r.test("center") for r in base):
    # The paper tests on 10 crops; this row is what that buys the baseline (center - 10 crops).
    deltas = {("center", m): paired_delta(base, base, "center", "ten", m) for m in ("top1_err", "top5_err")}
    deltas.update({("ten", m): Stat([]) for m in ("top1_err", "top5_err")})
    add("center crop instead of 10 crops", baseline, base[0].dataset, "test views: 10 crops → center",
        deltas, "no number (4.1: 10-crop averaging at test time)", "4.1", None)
  notes = ["Δ = run − baseline in percentage points of test error (positive: the switch costs accuracy). "
           "With seeds, Δ is taken per seed (same seed index) then mean ± sample std. The paper's Δ is "
           "what removing each feature cost it, as stated in the cited section.",
           "p: two-sided paired t-test over seeds that Δtop-1 (center crop, or 10 crops) is 0, i.e. whether the "
           "switch stands out from seed noise. With 2-3 seeds only a large and consistent Δ gets "
           "p < 0.05; '-' means a single seed, where noise cannot be told apart from the effect."]
  if other_dataset:
    notes.append("† Measured on a different dataset than the paper's ILSVRC-2012 numbers.")
  return md_table(header, md_rows), csv_rows, notes


def speedup_table(results):
  header = ["ReLU run", "tanh run", "Threshold", "Measured on", "ReLU epochs", "tanh epochs",
            "tanh/ReLU (epochs)", "tanh/ReLU (wall time)", "Paper"]
  md_rows, csv_rows, notes = [], [], []
  for s in results:
    basis = "train rows (fractional epochs)" if s["fractional"] else "train_epoch rows (whole epochs)"
    ratio = "-" if s["ratio"] is None else (("≥ " if s["lower_bound"] else "") + f"{s['ratio']:.2f}×")
    ratio_t = "-" if s["ratio_time"] is None else f"{s['ratio_time']:.2f}×"
    md_rows.append([s["relu"], s["tanh"], f"{s['threshold']:.0%}", basis, s["ep_relu"].fmt(),
                    s["ep_tanh"].fmt(), ratio, ratio_t, "~6× (Figure 1, CIFAR-10, 25%)"])
    if s["note"]:
      notes.append(f"{s['relu']} vs {s['tanh']}: {s['note']}.")
    if s["fractional"]:
      notes.append(f"{s['relu']} vs {s['tanh']}: a run was below {s['threshold']:.0%} training error "
                   "after its first epoch, so epochs are interpolated between `train` rows (every "
                   "log_every_steps) rather than counted per epoch; try a lower --threshold.")
    csv_rows.append(dict(relu=s["relu"], tanh=s["tanh"], threshold=s["threshold"],
                         basis="train" if s["fractional"] else "train_epoch",
                         epochs_relu_mean=s["ep_relu"].mean, epochs_relu_std=s["ep_relu"].std,
                         epochs_tanh_mean=s["ep_tanh"].mean, epochs_tanh_std=s["ep_tanh"].std,
                         wall_relu_mean=s["wall_relu"].mean, wall_tanh_mean=s["wall_tanh"].mean,
                         ratio_epochs=s["ratio"], ratio_wall_time=s["ratio_time"],
                         ratio_is_lower_bound=s["lower_bound"], paper_ratio=6.0, note=s["note"]))
  notes.append("Training error is the top-1 error on training batches as trained (with dropout and "
               "augmentation where the config has them). The paper's ratio is for a four-layer CNN on CIFAR-10.")
  return md_table(header, md_rows), csv_rows, notes


def runs_csv_rows(runs):
  out = []
  for r in runs:
    row = dict(run=r.name, group=r.group, seed=r.seed, path=str(r.path), dataset=r.dataset,
               status=r.status(), epoch=r.epoch, wall_time=r.wall_time)
    for crops in CROPS:
      t = r.test(crops) or {}
      for m in ("top1_err", "top5_err"):
        row[f"{m.replace('_err', '')}_{crops}"] = None if t.get(m) is None else 100.0 * t[m]
    v = r.val_rows()
    row["val_top1_latest"] = 100.0 * v[-1]["top1_err"] if v else None
    out.append(row)
  return out


# ---------------------------------------------------------------------------------------------
# Plots.


def _series(run: RunData, rows: list[dict], x: str, y: str):
  pts = sorted({r[x]: r[y] for r in rows if r.get(x) is not None and r.get(y) is not None}.items())
  if not pts:
    return None
  xs, ys = zip(*pts)
  return np.asarray(xs, float), np.asarray(ys, float)


def group_curve(series: list):
  """Mean and min-max band over seeds on the union of their x values (each seed only within
  the range it has logged, so a seed still running does not drag the mean to its end)."""
  series = [s for s in series if s is not None]
  if not series:
    return None
  if len(series) == 1:
    xs, ys = series[0]
    return xs, ys, ys, ys
  grid = np.unique(np.concatenate([s[0] for s in series]))
  stack = np.full((len(series), grid.size), np.nan)
  for i, (xs, ys) in enumerate(series):
    inside = (grid >= xs[0]) & (grid <= xs[-1])
    stack[i, inside] = np.interp(grid[inside], xs, ys)
  return grid, np.nanmean(stack, 0), np.nanmin(stack, 0), np.nanmax(stack, 0)


def _colors(groups, baseline):
  import matplotlib

  cmap = matplotlib.colormaps["tab10" if len(groups) <= 10 else "tab20"]
  others = [g for g in groups if g != baseline]
  colors = {g: cmap(i % cmap.N) for i, g in enumerate(others)}
  colors[baseline] = "black"
  return colors


def _title_suffix(groups):
  datasets = sorted({r.dataset for g in groups.values() for r in g if r.dataset})
  if datasets and datasets != [PAPER_DATASET]:
    return f" — {', '.join(datasets)} (paper: {PAPER_DATASET})"
  return ""


def plot_curves(groups, baseline, out: pathlib.Path, xaxis: str, yscale: str = "log") -> pathlib.Path:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib import ticker

  wall = xaxis == "wall_time"
  longest = max((r.wall_time or 0) for g in groups.values() for r in g)
  scale, unit = (3600.0, "h") if longest > 2 * 3600 else (60.0, "min")
  colors = _colors(groups, baseline)
  fig, axes = plt.subplots(2, 2, figsize=(15, 9.5), sharex=True)
  panels = [("train", "top1_err", "Train top-1 error"), ("val", "top1_err", "Validation top-1 error"),
            ("train", "top5_err", "Train top-5 error"), ("val", "top5_err", "Validation top-5 error")]
  for ax, (split, metric, title) in zip(axes.flat, panels):
    for g, runs in groups.items():
      curve = group_curve([_series(r, r.train_rows() if split == "train" else r.val_rows(), xaxis, metric)
                           for r in runs])
      if curve is None:
        continue
      xs, mean, lo, hi = curve
      xs = xs / scale if wall else xs
      label = g + (f" (n={len(runs)})" if len(runs) > 1 else "")
      marker = "o" if split == "val" else None
      ax.plot(xs, 100 * mean, color=colors[g], lw=2.2 if g == baseline else 1.4, marker=marker, ms=3,
              label=label)
      if len(runs) > 1:
        ax.fill_between(xs, 100 * lo, 100 * hi, color=colors[g], alpha=0.15, lw=0)
    ax.set_title(title, fontsize=12)
    ax.set_ylabel("error (%)" + (", log scale" if yscale == "log" else ""), fontsize=11)
    # A zero error (a tiny net's top-5) has no place on a log axis: that panel stays linear.
    if yscale == "log" and ax.has_data() and ax.dataLim.y0 > 0:
      # Errors span 90% (a tanh net at chance) to under 1% (top-5): on a linear axis the
      # slow run flattens every other curve into one line.
      ax.set_yscale("log")
      lo, hi = ax.get_ylim()
      # Labelled ticks at 1-2-5 per decade, denser when the panel spans little more than one.
      subs = (1, 1.5, 2, 3, 5, 7) if np.log10(hi / lo) <= 1.5 else (1, 2, 5)
      ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
      ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
      ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.grid(alpha=0.3, which="both")
  for ax in axes[1]:
    ax.set_xlabel(f"wall time ({unit})" if wall else "epoch", fontsize=11)
  handles, labels = axes[0, 0].get_legend_handles_labels()
  if not handles:
    handles, labels = axes[0, 1].get_legend_handles_labels()
  fig.legend(handles, labels, loc="center right", fontsize=10, title="run (band: min–max over seeds)",
             title_fontsize=9, frameon=False)
  fig.suptitle(f"Error vs {'wall time' if wall else 'epoch'}{_title_suffix(groups)}", fontsize=14)
  fig.tight_layout(rect=(0, 0, 0.82, 0.96))
  path = out / f"curves_{'walltime' if wall else 'epoch'}.png"
  _save(fig, path)
  plt.close(fig)
  return path


def plot_figure1(groups, pairs, results, out: pathlib.Path) -> pathlib.Path:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(8, 6))
  cmap = matplotlib.colormaps["tab10"]
  threshold = results[0]["threshold"]
  for i, ((relu, tanh), res) in enumerate(zip(pairs, results)):
    for g, style in ((relu, "-"), (tanh, "--")):
      # Fractional train rows when the crossing is inside the first epoch, else per-epoch rows.
      kind = "train" if res["fractional"] else "train_epoch"
      curve = group_curve([_series(r, r.rows.get(kind) or r.rows.get("train", []), "epoch", "top1_err")
                           for r in groups[g]])
      if curve is None:
        continue
      xs, mean, lo, hi = curve
      act = "ReLU" if g == relu else "tanh"
      label = f"{act} ({g}" + (f", n={len(groups[g])}" if len(groups[g]) > 1 else "") + ")"
      ax.plot(xs, mean, style, color=cmap(i), lw=2, label=label)
      if len(groups[g]) > 1:
        ax.fill_between(xs, lo, hi, color=cmap(i), alpha=0.15, lw=0)
    for key, g in (("ep_relu", relu), ("ep_tanh", tanh)):
      if res[key].n:
        ax.axvline(res[key].mean, color=cmap(i), ls=":", lw=1)
    if res["ratio"] is not None:
      ax.plot([], [], " ", label=f"tanh/ReLU epochs to {threshold:.0%}: "
              f"{'≥ ' if res['lower_bound'] else ''}{res['ratio']:.2f}× (paper ~6×)")
  ax.axhline(threshold, color="gray", ls="--", lw=1, label=f"{threshold:.0%} training error")
  ax.set_xlabel("Epochs", fontsize=12)
  ax.set_ylabel("Training error rate", fontsize=12)
  ax.set_ylim(bottom=0)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=10)
  ax.set_title("Figure 1: ReLU (solid) vs tanh (dashed)" + _title_suffix(groups), fontsize=12)
  fig.tight_layout()
  path = out / "figure1.png"
  _save(fig, path)
  plt.close(fig)
  return path


# ---------------------------------------------------------------------------------------------
# Writing.


def _save(fig, path: pathlib.Path):
  # A reader (or a browser refreshing report.md) never sees half a file while a sweep is running.
  with files.atomic_write(path, binary=True) as f:
    fig.savefig(f, dpi=110, format="png")


def _write_csv(path: pathlib.Path, rows: list[dict]):
  buf = io.StringIO()
  if rows:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
      w.writerow({k: ("" if v is None else round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
  files.write_text(path, buf.getvalue())


def make_report(paths: list[str], out: str | None = None, runs: str | None = None,
                baseline: str | None = None, threshold: float = 0.25, plots: bool = True,
                yscale: str = "log") -> dict:
  """Writes the report; returns {"markdown", "out", "files", ...} for callers and tests."""
  all_runs = select(discover(paths), runs)
  if not all_runs:
    raise ValueError(f"no runs (folders with metrics.jsonl) under {paths}" + (f" matching {runs!r}" if runs else ""))
  out_dir = pathlib.Path(out) if out else (
      pathlib.Path(paths[0]) / "report" if len(paths) == 1 else pathlib.Path(os.path.commonpath(paths)) / "report")
  out_dir.mkdir(parents=True, exist_ok=True)
  if baseline is None:
    names = {r.group for r in all_runs}
    baseline = "full" if "full" in names else "relu" if "relu" in names else "full"
  groups = group_runs(all_runs, baseline)

  res_md, res_csv, res_notes = results_table(groups, baseline)
  abl_md, abl_csv, abl_notes = ablation_table(groups, baseline)
  pairs = relu_tanh_pairs(groups, baseline)
  sp = speedup(groups, pairs, threshold)
  written = []
  finished = sum(r.finished for r in all_runs)
  md = [f"# Report: {', '.join(paths)}", "",
        f"{len(all_runs)} runs in {len(groups)} groups, {finished} finished. Generated "
        f"{datetime.datetime.now():%Y-%m-%d %H:%M} by `python -m alexnet_jax.report "
        f"{' '.join(paths)}{' --runs=' + runs if runs else ''}`.", "",
        "## Results (the paper's Tables 1 and 2: top-1 / top-5 test error, %)", "", res_md, ""]
  md += [f"- {n}" for n in res_notes] + [""]
  md += [f"## Ablations: each switch against `{baseline}`", ""]
  if abl_md:
    md += [abl_md, ""]
  md += [f"- {n}" for n in abl_notes] + [""]
  if sp:
    sp_md, sp_csv, sp_notes = speedup_table(sp)
    md += ["## ReLU vs tanh (the paper's Figure 1)", "", sp_md, ""] + [f"- {n}" for n in sp_notes] + [""]
    _write_csv(out_dir / "speedup.csv", sp_csv)
    written.append(out_dir / "speedup.csv")
  if plots:
    md += ["## Curves", ""]
    for axis in ("epoch", "wall_time"):
      p = plot_curves(groups, baseline, out_dir, axis, yscale)
      written.append(p)
      md.append(f"![error vs {axis}]({p.name})")
    if sp:
      p = plot_figure1(groups, pairs, sp, out_dir)
      written.append(p)
      md.append(f"![Figure 1]({p.name})")
    md += ["", "Wall time is the time spent in training steps (`wall_time` in metrics.jsonl); "
           "evaluation, checkpoints and start-up are left out. Runs that shared a machine with "
           "other work are slower in it, so compare wall times only between runs that ran alike."]
    md.append("")
  md.append(f"TensorBoard: `tensorboard --logdir {paths[0]}` shows every run's `tb/` side by side.")
  markdown = "\n".join(md) + "\n"
  for name, rows in (("results.csv", res_csv), ("ablations.csv", abl_csv), ("runs.csv", runs_csv_rows(all_runs))):
    _write_csv(out_dir / name, rows)
    written.append(out_dir / name)
  files.write_text(out_dir / "report.md", markdown)
  written.append(out_dir / "report.md")
  return dict(markdown=markdown, out=out_dir, files=written, groups=groups, results=res_csv,
              ablations=abl_csv, speedup=sp, baseline=baseline)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m alexnet_jax.report", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("paths", nargs="+", help="sweep folders and/or run workdirs")
  p.add_argument("--runs", help="comma-separated globs on run or group names; '!glob' excludes")
  p.add_argument("--baseline", help="group the ablation Δs are taken against (default: full, else relu)")
  p.add_argument("--out", help="output folder (default: <path>/report)")
  p.add_argument("--threshold", type=float, default=0.25,
                 help="training error for the ReLU/tanh speed-up, as a fraction (paper: 0.25)")
  p.add_argument("--no-plots", "--no_plots", dest="plots", action="store_false", help="tables only")
  p.add_argument("--yscale", choices=("log", "linear"), default="log", help="error axes of the curves")
  a = p.parse_args(argv)
  if not 0 < a.threshold < 1:
    p.error(f"--threshold={a.threshold}: give a fraction in (0, 1), e.g. 0.25 for 25%.")
  try:
    rep = make_report(a.paths, a.out, a.runs, a.baseline, a.threshold, a.plots, a.yscale)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(rep["markdown"])
  print(f"Wrote {', '.join(f.name for f in rep['files'])} to {rep['out']}/", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
