"""make_report: reads the runs, computes every table, writes report.md, the CSVs and the figures."""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import sys

from alexnet_jax import files
from alexnet_jax.report import claims as claims_lib
from alexnet_jax.report import plots as plots_lib, runs as runs_lib, speedup as speedup_lib, tables


def _unregularised(run) -> bool:
  """Figure 1's nets had no regularisation: no dropout, weight decay or augmentation."""
  cfg = run.config
  if cfg is None:
    return run.group.startswith("relu")
  m, d, o = cfg.get("model") or {}, cfg.get("data") or {}, cfg.get("optim") or {}
  return not (m.get("dropout") or o.get("weight_decay") or d.get("random_crop") or d.get("flip")
              or d.get("pca_noise"))


def make_report(paths: list[str], out: str | None = None, runs: str | None = None,
                baseline: str | None = None, threshold: float = 0.25, plots: bool = True,
                yscale: str = "log", export: str | None = None) -> dict:
  """Writes the report; returns {"markdown", "out", "files", ...} for callers and tests."""
  all_runs = runs_lib.select(runs_lib.discover(paths), runs)
  if not all_runs:
    hint = ""
    if any((pathlib.Path(p) / "report.md").is_file() for p in paths):
      hint = (": this folder holds a report but not the runs it came from; commit the raw runs with "
              "`python -m alexnet_jax.report RUNS --export=FOLDER`")
    raise ValueError(f"no runs (folders with metrics.jsonl) under {paths}" + (f" matching {runs!r}" if runs else "")
                     + hint)
  out_dir = pathlib.Path(out) if out else (
      pathlib.Path(paths[0]) / "report" if len(paths) == 1 else pathlib.Path(os.path.commonpath(paths)) / "report")
  out_dir.mkdir(parents=True, exist_ok=True)
  if baseline is None:
    names = {r.group for r in all_runs}
    baseline = "full" if "full" in names else "relu" if "relu" in names else "full"
  groups = runs_lib.group_runs(all_runs, baseline)
  written: list[pathlib.Path] = []
  if export:
    written += runs_lib.export(all_runs, export)

  res_md, res_csv, res_notes = tables.results_table(groups, baseline)
  pairs = speedup_lib.relu_tanh_pairs(groups, threshold)
  sp = speedup_lib.speedup(groups, pairs, threshold)
  apart = claims_lib.other_protocol(groups, baseline) if baseline in groups else {}
  # The ablation table, its Δ curves and the error curves hold the baseline's own experiment.
  comparable = {g: rs for g, rs in groups.items() if g not in apart}
  comparisons = claims_lib.compare(comparable, baseline) if baseline in groups else []
  view = claims_lib.primary_view(groups, baseline)
  # Figure 1's protocol is ReLU vs tanh without regularisation; an ablation sweep's `tanh` group
  # (regularised, shared LR) is compared on test error in its own row instead.
  claim_rows = claims_lib.claims_rows(comparisons, sp, view)
  for r in claim_rows:
    r["expected"] = claims_lib.expected_here(r["key"], r["dataset"])
    if r.get("speedup") and not _unregularised(groups[r["speedup"]["relu"]][0]):
      r["expected"] = "not Figure 1's protocol: these nets are regularised (see experiments/fmnist_figure1.py)"
  abl_md, abl_csv, abl_notes = tables.ablation_table(comparisons, baseline) if comparisons else (
      None, [], [f"No baseline run `{baseline}` here, so no ablation table (pass --baseline=NAME)."])

  finished = sum(r.finished for r in all_runs)
  md = [f"# Report: {', '.join(paths)}", "",
        f"{len(all_runs)} runs in {len(groups)} groups, {finished} finished. Generated "
        f"{datetime.datetime.now():%Y-%m-%d %H:%M} by `python -m alexnet_jax.report "
        f"{' '.join(paths)}{' --runs=' + runs if runs else ''}`.", ""]

  def section(title, table, csv_name):
    """A titled table with its notes in report.md, and its rows in `csv_name`."""
    table_md, rows, notes = table
    md.extend(["## " + title, "", table_md, ""] + [f"- {n}" for n in notes] + [""])
    tables.write_csv(out_dir / csv_name, rows)
    written.append(out_dir / csv_name)

  if claim_rows:
    section("The paper's claims", tables.claims_table(claim_rows), "claims.csv")
    if plots:
      got = plots_lib.plot_claims(claim_rows, out_dir)
      written += got
      if got:
        md += [f"![Δ beside the paper's]({got[0].name})", ""]
  md += ["## Results (the paper's Tables 1 and 2: top-1 / top-5 test error, %)", "", res_md, ""]
  md += [f"- {n}" for n in res_notes] + [""]
  md += [f"## Ablations: each switch against `{baseline}`", ""]
  if abl_md:
    md += [abl_md, ""]
  if apart:
    by_fields = {}
    for g, fields in apart.items():
      by_fields.setdefault(", ".join(fields), []).append(g)
    abl_notes = abl_notes + [f"Not compared with `{baseline}` (trained under another protocol: {f}): "
                             + ", ".join(gs) for f, gs in by_fields.items()]
  md += [f"- {n}" for n in abl_notes] + [""]
  if sp:
    section("ReLU vs tanh (the paper's Figure 1)", tables.speedup_table(sp), "speedup.csv")
  if plots:
    md += ["## Curves", ""]
    for axis in ("epoch", "wall_time"):
      got = plots_lib.plot_curves(comparable, baseline, out_dir, axis, yscale)
      written += got
      md.append(f"![error vs {axis}]({got[0].name})")
    got = plots_lib.plot_delta_curves(comparable, baseline, out_dir)
    written += got
    if got:
      md.append(f"![validation error against {baseline}]({got[0].name})")
    if sp:
      got = plots_lib.plot_figure1(groups, sp, out_dir)
      written += got
      md.append(f"![Figure 1]({got[0].name})")
    md += ["", "Each figure is also written as SVG beside its PNG. Seed means are taken on a grid every "
           "seed covers (up to the shortest seed), bands are the min–max over seeds. Wall time is the "
           "time spent in training steps (`wall_time` in metrics.jsonl); evaluation, checkpoints and "
           "start-up are left out. Runs that shared a machine with other work are slower in it, so "
           "compare wall times only between runs that ran alike."]
    md.append("")
  md.append(f"Every logged number, one per row, is in `metrics_long.csv` (run, group, seed, kind, step, epoch, "
            f"crops, wall_time, metric, value). TensorBoard: `tensorboard --logdir {paths[0]}`.")
  markdown = "\n".join(md) + "\n"
  for name, rows in (("results.csv", res_csv), ("ablations.csv", abl_csv),
                     ("runs.csv", tables.runs_csv_rows(all_runs))):
    tables.write_csv(out_dir / name, rows)
    written.append(out_dir / name)
  with files.atomic_write(out_dir / "metrics_long.csv") as f:
    runs_lib.tidy_frame(all_runs).to_csv(f, index=False)
  written.append(out_dir / "metrics_long.csv")
  files.write_text(out_dir / "report.md", markdown)
  written.append(out_dir / "report.md")
  return dict(markdown=markdown, out=out_dir, files=written, groups=groups, results=res_csv,
              ablations=abl_csv, speedup=sp, baseline=baseline, claims=claim_rows, comparisons=comparisons)


def main(argv=None) -> int:
  from alexnet_jax import report

  p = argparse.ArgumentParser(prog="python -m alexnet_jax.report", description=report.__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("paths", nargs="+", help="sweep folders and/or run workdirs")
  p.add_argument("--runs", help="comma-separated globs on run or group names; '!glob' excludes")
  p.add_argument("--baseline", help="group the ablation Δs are taken against (default: full, else relu)")
  p.add_argument("--out", help="output folder (default: <path>/report)")
  p.add_argument("--export", help="also copy every run's config.json, metrics.jsonl, final.json and "
                 "provenance.json to EXPORT/<run>/ (a result folder the report can be rerun on)")
  p.add_argument("--threshold", type=float, default=0.25,
                 help="training error for the ReLU/tanh speed-up, as a fraction (paper: 0.25)")
  p.add_argument("--no_plots", dest="plots", action="store_false", help="tables only")
  p.add_argument("--yscale", choices=("log", "linear"), default="log", help="error axes of the curves")
  a = p.parse_args(argv)
  if not 0 < a.threshold < 1:
    p.error(f"--threshold={a.threshold}: give a fraction in (0, 1), e.g. 0.25 for 25%.")
  try:
    rep = make_report(a.paths, a.out, a.runs, a.baseline, a.threshold, a.plots, a.yscale, a.export)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(rep["markdown"])
  print(f"Wrote {len(rep['files'])} files to {rep['out']}/" + (f" and {a.export}/" if a.export else ""),
        file=sys.stderr)
  return 0
