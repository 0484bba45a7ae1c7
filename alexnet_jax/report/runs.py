"""Reading run workdirs: config.json, metrics.jsonl and final.json, live or finished.

A run is any folder holding `metrics.jsonl` (or `final.json`); see docs/DESIGN.md for the
formats. Runs named `x.s0`, `x.s1` ... are seeds of the group `x`. `export` copies just these
files (and provenance.json) of every run, so a committed result folder can be re-reported
without the checkpoints.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import pathlib
import shutil
import warnings

from alexnet_jax import files
from alexnet_jax.sweep import split_name

CROPS = ("center", "ten")
CROP_LABEL = {"center": "center", "ten": "10 crops"}
SKIP_DIRS = {"checkpoints", "tb", "report"}
RAW_FILES = ("config.json", "metrics.jsonl", "final.json", "provenance.json")
EVAL_DIR = "eval"  # alexnet_jax.evaluate's results, exported with the raw files
# Groups in the order the paper discusses them; others follow by name.
GROUP_ORDER = ("full", "relu", "no_lrn", "pool_2x2", "one_tower", "no_pca", "no_dropout", "no_aug",
               "no_conv2", "no_conv3", "no_conv4", "tanh")


@dataclasses.dataclass
class RunData:
  name: str
  path: pathlib.Path
  config: dict | None
  final: dict | None
  rows: dict  # kind -> list of rows, sorted by step
  # "<split>-<crops>" -> a post-hoc evaluation of the run's checkpoint (alexnet_jax.evaluate),
  # e.g. "train-center": the training error in eval mode, which says whether a net overfits.
  evals: dict = dataclasses.field(default_factory=dict)

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

  def _latest(self, key: str) -> float | None:
    """final.json's value, else the largest a logged row has (an unfinished run)."""
    if self.final and self.final.get(key) is not None:
      return self.final[key]
    values = [r[key] for rows in self.rows.values() for r in rows if r.get(key) is not None]
    return max(values) if values else None

  @property
  def epoch(self) -> float | None:
    return self._latest("epoch")

  @property
  def wall_time(self) -> float | None:
    return self._latest("wall_time")

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


_METRICS = ("loss", "top1_err", "top5_err")


def _number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def _final_ok(final) -> bool:
  """final.json as train.py writes it: {"step": int, "test": {crops: {metric: number}}, ...}."""
  if not isinstance(final, dict):
    return False
  test = final.get("test", {})
  val = final.get("val")
  return (isinstance(test, dict)
          and all(isinstance(m, dict) and all(_number(m.get(k, 0.0)) for k in _METRICS)
                  for m in test.values())
          and (val is None or (isinstance(val, dict) and all(_number(val.get(k, 0.0)) for k in _METRICS)))
          and _number(final.get("step", 0)))


def _row_ok(row: dict) -> bool:
  return all(_number(row[k]) for k in _METRICS + ("step", "epoch", "wall_time", "lr") if k in row
             and row[k] is not None)


def _checked(path: pathlib.Path, value, ok: bool):
  """`value` if it has the shape the report reads, else None with a warning naming the file."""
  if value is not None and not ok:
    warnings.warn(f"{path}: valid JSON but not the shape train.py writes; the report leaves it out",
                  stacklevel=2)
    return None
  return value


def read_rows(path: pathlib.Path) -> list[dict]:
  """metrics.jsonl's rows, one per (kind, step, crops): a resumed run's repeats, later wins."""
  latest = {}
  try:
    with open(path) as f:
      for line in f:
        try:
          row = json.loads(line)
        except ValueError:
          continue  # A live run's half-written last line.
        if not isinstance(row, dict) or not isinstance(row.get("kind"), str):
          continue
        if not _row_ok(row):
          warnings.warn(f"{path}: a {row['kind']} row with non-numeric values; left out",
                        stacklevel=2)
          continue
        latest[(row["kind"], row.get("step"), row.get("crops"))] = row
  except OSError:
    pass
  return list(latest.values())


def read_run(path: str | os.PathLike, name: str | None = None) -> RunData:
  path = pathlib.Path(path)
  rows: dict[str, list] = {}
  for row in read_rows(path / "metrics.jsonl"):
    rows.setdefault(row["kind"], []).append(row)
  for kind in rows:
    rows[kind].sort(key=lambda r: (r.get("step") or 0, r.get("wall_time") or 0))
  config = _read_json(path / "config.json")
  final = _read_json(path / "final.json")
  evals = {}
  for f in sorted((path / EVAL_DIR).glob("*.json")):
    got = _read_json(f)
    if _checked(f, got, isinstance(got, dict) and _number(got.get("top1_err"))) is not None:
      evals[f.stem] = got
  return RunData(name or path.name, path,
                 _checked(path / "config.json", config, isinstance(config, dict)),
                 _checked(path / "final.json", final, _final_ok(final)), rows, evals)


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


def test_by_seed(runs: list[RunData], crops: str, metric: str) -> dict:
  """{seed: test error in %} of the runs that have that test."""
  out = {}
  for r in runs:
    t = r.test(crops)
    if t and t.get(metric) is not None:
      out[r.seed] = 100.0 * t[metric]
  return out


def tidy_frame(runs: list[RunData]):
  """Every logged number as one row: run, group, seed, kind, step, epoch, crops, wall_time,
  metric, value (errors stay fractions, as logged). The shape pandas, R or a spreadsheet
  pivot directly; `final.json` adds nothing new, its numbers are the `test` rows."""
  import pandas as pd  # Deferred: only the report's CSV needs it.

  ids = ["kind", "step", "epoch", "crops", "wall_time"]
  frames = []
  for r in runs:
    rows = [row for kind in r.rows.values() for row in kind]
    if not rows:
      continue
    df = pd.DataFrame(rows)
    for col in ids:
      if col not in df:
        df[col] = None
    values = [c for c in df.columns if c not in ids and pd.api.types.is_numeric_dtype(df[c])]
    long = df.melt(id_vars=ids, value_vars=values, var_name="metric", value_name="value").dropna(subset=["value"])
    long.insert(0, "seed", r.seed)
    long.insert(0, "group", r.group)
    long.insert(0, "run", r.name)
    frames.append(long)
  cols = ["run", "group", "seed", *ids, "metric", "value"]
  if not frames:
    return pd.DataFrame(columns=cols)
  out = pd.concat(frames, ignore_index=True)[cols]
  return out.sort_values(["run", "kind", "metric", "step"], kind="stable").reset_index(drop=True)


def export(runs: list[RunData], dest: str | os.PathLike) -> list[pathlib.Path]:
  """Copies each run's raw files (not checkpoints or TensorBoard) to `dest/<run name>/`."""
  written = []
  for r in runs:
    for name in (*RAW_FILES, *(f"{EVAL_DIR}/{k}.json" for k in sorted(r.evals))):
      src = r.path / name
      if src.is_file():
        target = pathlib.Path(dest) / r.name / name
        with open(src, "rb") as f, files.atomic_write(target, binary=True) as out:
          shutil.copyfileobj(f, out)
        written.append(target)
  return written
