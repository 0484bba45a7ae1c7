"""Markdown tables (printed and in report.md) and their CSV twins, from runs and comparisons."""

from __future__ import annotations

import csv
import io
import pathlib

from alexnet_jax import files
from alexnet_jax.report import stats
from alexnet_jax.report.claims import PAPER_DATASET
from alexnet_jax.report.runs import CROP_LABEL, CROPS, RunData, test_by_seed

# Published numbers (Krizhevsky, Sutskever & Hinton, 2012), top-1 / top-5 error in %.
PAPER_ROWS = (
    ("Paper: 1 CNN (Table 2, ILSVRC-2012 val, 10 crops)", "imagenet2012", 40.7, 18.2),
    ("Paper: CNN (Table 1, ILSVRC-2010 test)", "imagenet2010", 37.5, 17.0),
)
BASELINE_PAPER = PAPER_ROWS[0]


def md_table(header: list[str], rows: list[list[str]]) -> str:
  def esc(s):
    return str(s).replace("|", "\\|")

  lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
  return "\n".join(lines)


def write_csv(path: pathlib.Path, rows: list[dict]) -> None:
  buf = io.StringIO()
  if rows:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
      w.writerow({k: ("" if v is None else round(v, 6) if isinstance(v, float) else v) for k, v in r.items()})
  files.write_text(path, buf.getvalue())


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


def _errors(runs, crops, metric) -> stats.Summary:
  return stats.summarize(list(test_by_seed(runs, crops, metric).values()))


def latest_val(runs: list[RunData], metric: str = "top1_err") -> stats.Summary:
  return stats.summarize([100.0 * r.val_rows()[-1][metric] for r in runs if r.val_rows()])


def results_table(groups, baseline):
  has_ten = any(r.test("ten") for g in groups.values() for r in g)
  header = ["Model", "Dataset", "Seeds", "Status", "Top-1 (center)", "Top-5 (center)"]
  if has_ten:
    header += ["Top-1 (10 crops)", "Top-5 (10 crops)"]
  has_fit = any("train-center" in r.evals for g in groups.values() for r in g)
  if has_fit:
    header += ["Train top-1 (eval mode)"]
  header += ["Val top-1 (latest)", "Paper top-1 / top-5"]
  md_rows, csv_rows, other_dataset = [], [], False
  for g, runs in groups.items():
    ds_cell, differs = _dataset_cell(runs[0].dataset)
    other_dataset |= differs
    done = sum(r.finished for r in runs)
    status = "done" if done == len(runs) else (
        f"{done}/{len(runs)} done; " + ", ".join(r.status() for r in runs if not r.finished))
    errs = {(c, m): _errors(runs, c, m) for c in CROPS for m in ("top1_err", "top5_err")}
    paper = ""
    if g == baseline and _is_full_model(runs[0]):
      paper = f"{BASELINE_PAPER[2]} / {BASELINE_PAPER[3]} (Table 2, 1 CNN)" + (" †" if differs else "")
    row = [g, ds_cell, str(len(runs)), status, errs["center", "top1_err"].fmt(), errs["center", "top5_err"].fmt()]
    if has_ten:
      row += [errs["ten", "top1_err"].fmt(), errs["ten", "top5_err"].fmt()]
    fit = stats.summarize([100.0 * r.evals["train-center"]["top1_err"] for r in runs if "train-center" in r.evals])
    if has_fit:
      row += [fit.fmt()]
    v = latest_val(runs)
    row += [v.fmt(), paper]
    md_rows.append(row)
    c = dict(run=g, dataset=runs[0].dataset, paper_dataset=runs[0].dataset == PAPER_DATASET,
             seeds=len(runs), finished=done, status=status)
    for (crops, m), s in errs.items():
      key = f"{m.replace('_err', '')}_{crops}"
      c.update({f"{key}_mean": s.mean, f"{key}_std": s.std, f"{key}_min": s.min, f"{key}_max": s.max,
                f"{key}_ci_low": s.ci and s.ci[0], f"{key}_ci_high": s.ci and s.ci[1]})
    c.update(train_eval_top1_mean=fit.mean, train_eval_top1_std=fit.std, train_eval_seeds=fit.n,
             val_top1_latest_mean=v.mean, val_top1_latest_std=v.std,
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
           "with several seeds, mean ± sample std (min/max and the 95% CI of the mean in results.csv). "
           "Val top-1 is the latest validation error, on the views the run validates with "
           "(`data.val_crops`, else `data.eval_crops`), also for unfinished runs."]
  if has_fit:
    notes.append("Train top-1 (eval mode): the final checkpoint on its own training images, center crop, "
                 "dropout off (`python -m alexnet_jax.evaluate <runs> --split=train`); below the val "
                 "error, the net fits its training set better than unseen images.")
  if other_dataset:
    notes.append("† Run on a different dataset than the paper's (ILSVRC-2012, `imagenet2012`): "
                 "compare the direction and rough size of differences, not the absolute errors.")
  return md_table(header, md_rows), csv_rows, notes


def ablation_table(comparisons, baseline):
  """Every switch's Δ on each view: mean [95% CI], per-seed values, paired p (and Holm's)."""
  has_ten = any(c.deltas["ten", "top1_err"].n for c in comparisons)
  views = [v for v in CROPS if v == "center" or has_ten]
  header = ["Switch (vs " + baseline + ")", "Run", "Dataset", "Config change"]
  for v in views:
    header += [f"Δtop-1 ({CROP_LABEL[v]}) [95% CI]", f"per seed ({CROP_LABEL[v]})", f"p ({CROP_LABEL[v]})"]
  header += ["Δtop-5 (" + CROP_LABEL[views[-1]] + ")", "p Holm (claims)", "Paper Δtop-1 / Δtop-5", "Paper §"]
  md_rows, csv_rows, other_dataset = [], [], False
  for c in comparisons:
    ds_cell, differs = _dataset_cell(c.dataset)
    other_dataset |= differs
    row = [c.switch, c.group, ds_cell, c.change]
    for v in views:
      s = c.deltas[v, "top1_err"]
      row += [s.fmt_ci(), s.fmt_values(), stats.fmt_p(s.p)]
    t5 = c.deltas[views[-1], "top5_err"]
    if not t5.n:
      t5 = c.deltas["center", "top5_err"]
    text = c.claim.text if c.claim else ("worse: the paper tests on 10 crops" if c.key == "crops" else "-")
    section = c.claim.section if c.claim else ("4.1" if c.key == "crops" else "")
    row += [t5.fmt_ci(), stats.fmt_p(c.p_holm),
            text + (" †" if differs and c.claim and c.claim.d_top1 is not None else ""), section]
    md_rows.append(row)
    out = dict(switch=c.switch, run=c.group, dataset=c.dataset, paper_dataset=c.dataset == PAPER_DATASET,
               config_change=c.change)
    for (crops, m), s in c.deltas.items():
      key = f"d_{m.replace('_err', '')}_{crops}"
      out.update({f"{key}_mean": s.mean, f"{key}_std": s.std, f"{key}_n": s.n,
                  f"{key}_ci_low": s.ci and s.ci[0], f"{key}_ci_high": s.ci and s.ci[1],
                  f"{key}_t": s.t, f"{key}_p": s.p, f"{key}_seeds": " ".join(map(str, c.seeds[crops, m])),
                  f"{key}_values": " ".join(f"{x:.4f}" for x in s.values)})
    out.update(p_holm_claims=c.p_holm, paper_d_top1=c.claim.d_top1 if c.claim else None,
               paper_d_top5=c.claim.d_top5 if c.claim else None, paper_text=text, paper_section=section)
    csv_rows.append(out)
  notes = ["Δ = run − baseline in percentage points of test error (positive: the switch costs accuracy), "
           "taken per seed (same seed index in both groups); the table gives the mean Δ with the 95% "
           "t-interval of the mean, and every seed's Δ. The paper's Δ is what removing each feature "
           "cost it, as stated in the cited section.",
           "p: two-sided paired t-test (scipy.stats.ttest_1samp on the per-seed Δs) that Δ is 0, "
           "unadjusted. 'p Holm' is the same test adjusted by Holm's method over the family of the "
           "claims table (one test per claim), which is what its verdicts use. '-': one seed, or "
           "seeds that all gave the same Δ, where no spread is left to test against."]
  if other_dataset:
    notes.append("† Measured on a different dataset than the paper's ILSVRC-2012 numbers.")
  return md_table(header, md_rows), csv_rows, notes


def claims_table(rows):
  header = ["Claim", "Paper §", "Paper Δ", "Ours Δ [95% CI]", "Seeds", "p (Holm)", "Verdict", "vs paper's size",
            "Expected here"]
  md_rows, csv_rows = [], []
  for r in rows:
    s = r["summary"]
    sp = r.get("speedup")
    if sp and sp["lower_bound"]:
      ours = f"≥ {sp['ratio']:.2f}× (ratio of means)"
    elif r["unit"] == "×":
      ours = "-" if s.mean is None else f"{s.mean:.2f}×" + (
          f" [{s.ci[0]:.2f}, {s.ci[1]:.2f}]" if s.ci else (f" ({s.note})" if s.note else ""))
    else:
      ours = s.fmt_ci() + ("" if r["view"] == "ten" or r["key"] == "crops" else " (center crop)")
    md_rows.append([r["claim"], r["section"], r["paper"], ours, str(s.n), stats.fmt_p(r["p_holm"]),
                    r["verdict"], r["size"] or "-", r.get("expected", "")])
    csv_rows.append(dict(claim=r["claim"], key=r["key"], section=r["section"], paper=r["paper"],
                         paper_value=r["paper_value"], unit=r["unit"], view=r["view"], n=s.n, mean=s.mean,
                         ci_low=s.ci and s.ci[0], ci_high=s.ci and s.ci[1],
                         values=" ".join(f"{x:.4f}" for x in s.values), p=s.p, p_holm=r["p_holm"],
                         verdict=r["verdict"], size=r["size"], expected=r.get("expected", "")))
  notes = ["Δ in points of top-1 test error (10 crops where the runs have them, as the paper's numbers are); "
           "the ReLU/tanh row is the geometric mean over seeds of tanh's epochs ÷ ReLU's epochs to the "
           "training-error threshold, each net at the fastest learning rate of its grid.",
           "Verdict, from the Holm-adjusted paired p at 0.05 over this table's rows: **held** (significant, the "
           "paper's direction), **reversed** (significant, the other direction), **refuted** (not significant, "
           "the 95% CI reaches no effect, 0 or a ratio of 1, and excludes one as large as the paper's), "
           "otherwise **same/opposite direction, not resolved**. The CIs are per row, not adjusted; "
           "'vs paper's size' compares them with the paper's number."]
  return md_table(header, md_rows), csv_rows, notes


def speedup_table(results):
  header = ["ReLU run", "tanh run", "LR grid (chosen in bold)", "Threshold", "Measured on", "ReLU epochs",
            "tanh epochs", "tanh/ReLU (epochs)", "per-seed ratio [95% CI]", "tanh/ReLU (wall time)", "Paper"]
  md_rows, csv_rows, notes = [], [], []
  for s in results:
    basis = "train rows (fractional epochs)" if s["fractional"] else "train_epoch rows (whole epochs)"
    ratio = "-" if s["ratio"] is None else (("≥ " if s["lower_bound"] else "") + f"{s['ratio']:.2f}×")
    ratio_t = "-" if s["ratio_time"] is None else f"{s['ratio_time']:.2f}×"
    ps = s["per_seed"]
    per_seed = "-" if ps.mean is None else f"{ps.mean:.2f}×" + (
        f" [{ps.ci[0]:.2f}, {ps.ci[1]:.2f}]" if ps.ci else f" ({ps.note})")
    grid = "; ".join(
        f"{act}: " + ", ".join((f"**{lr}**" if g in (s["relu"], s["tanh"]) else str(lr)) for g, lr in cands)
        for act, cands in s["lr_grid"].items())
    md_rows.append([s["relu"], s["tanh"], grid, f"{s['threshold']:.0%}", basis, s["ep_relu"].fmt(),
                    s["ep_tanh"].fmt(), ratio, per_seed, ratio_t, "~6× (Figure 1, CIFAR-10, 25%)"])
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
                         ratio_per_seed_geomean=ps.mean, ratio_ci_low=ps.ci and ps.ci[0],
                         ratio_ci_high=ps.ci and ps.ci[1], ratio_p=ps.p,
                         ratio_is_lower_bound=s["lower_bound"], paper_ratio=6.0, note=s["note"]))
  notes.append("Training error is the top-1 error on training batches as trained (with dropout and "
               "augmentation where the config has them). The paper's ratio is for a four-layer CNN on "
               "CIFAR-10, each net at the learning rate that trained it fastest; where several rates were "
               "run here, each net keeps its fastest (mean epochs to the threshold over the seeds every "
               "candidate rate has: with experiments/fmnist_figure1.py's two stages, the grid's seed 0 only, "
               "so the other seeds measure the ratio without having chosen the rate).")
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
