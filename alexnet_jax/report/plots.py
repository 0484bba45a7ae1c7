"""Figures: error curves, Δ curves against the baseline, the Δ plot beside the paper's, Figure 1.

Every figure is saved as PNG (for report.md and quick looks) and SVG (for papers and zooming),
both through `files.atomic_write`, so a reader never sees half a file while a sweep runs.
Errors are in % everywhere.
"""

from __future__ import annotations

import pathlib

import numpy as np

from alexnet_jax import files
from alexnet_jax.report.claims import PAPER_DATASET

OFF_SCALE = 10.0  # Points: a Δ curve beyond this (tanh at chance) would flatten every other one.


def _plt():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def save(fig, path: pathlib.Path) -> list[pathlib.Path]:
  """Writes `path` (PNG) and the same figure as SVG beside it; returns both paths."""
  out = []
  for p, fmt in ((path, "png"), (path.with_suffix(".svg"), "svg")):
    with files.atomic_write(p, binary=True) as f:
      fig.savefig(f, dpi=110, format=fmt)
    out.append(p)
  _plt().close(fig)
  return out


def series(rows: list[dict], x: str, y: str):
  pts = sorted({r[x]: r[y] for r in rows if r.get(x) is not None and r.get(y) is not None}.items())
  if not pts:
    return None
  xs, ys = zip(*pts)
  return np.asarray(xs, float), np.asarray(ys, float)


def group_curve(curves: list):
  """(x, mean, min, max) over seeds, on a common grid the seeds all cover.

  Each seed is interpolated onto the union of the seeds' x values, cut to the span every seed
  has logged (up to the shortest). A mean over whichever seeds happen to reach a point would
  jump where one stops: on wall-time axes seeds end at different times even when finished.
  """
  curves = [c for c in curves if c is not None]
  if not curves:
    return None
  if len(curves) == 1:
    xs, ys = curves[0]
    return xs, ys, ys, ys
  lo = max(c[0][0] for c in curves)
  hi = min(c[0][-1] for c in curves)
  grid = np.unique(np.concatenate([c[0] for c in curves]))
  grid = grid[(grid >= lo) & (grid <= hi)]
  if grid.size == 0:
    return None
  stack = np.stack([np.interp(grid, xs, ys) for xs, ys in curves])
  return grid, stack.mean(0), stack.min(0), stack.max(0)


def _colors(groups, baseline):
  import matplotlib

  cmap = matplotlib.colormaps["tab10" if len(groups) <= 10 else "tab20"]
  others = [g for g in groups if g != baseline]
  colors = {g: cmap(i % cmap.N) for i, g in enumerate(others)}
  colors[baseline] = "black"
  return colors


def title_suffix(groups):
  datasets = sorted({r.dataset for g in groups.values() for r in g if r.dataset})
  if datasets and datasets != [PAPER_DATASET]:
    return f" — {', '.join(datasets)} (paper: {PAPER_DATASET})"
  return ""


def _time_unit(groups):
  longest = max((r.wall_time or 0) for g in groups.values() for r in g)
  return (3600.0, "h") if longest > 2 * 3600 else (60.0, "min")


def _log_axis(ax) -> bool:
  """Puts the panel on a log axis with readable % ticks; False (stays linear) if it cannot."""
  from matplotlib import ticker

  # A zero error (a tiny net's top-5) has no place on a log axis.
  if not ax.has_data() or ax.dataLim.y0 <= 0:
    return False
  ax.set_yscale("log")
  lo, hi = ax.get_ylim()
  subs = (1, 1.5, 2, 3, 5, 7) if np.log10(hi / lo) <= 1.5 else (1, 2, 5)
  ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
  ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
  ax.yaxis.set_minor_formatter(ticker.NullFormatter())
  return True


def plot_curves(groups, baseline, out: pathlib.Path, xaxis: str, yscale: str = "log") -> list[pathlib.Path]:
  plt = _plt()
  wall = xaxis == "wall_time"
  scale, unit = _time_unit(groups)
  colors = _colors(groups, baseline)
  fig, axes = plt.subplots(2, 2, figsize=(15, 9.5), sharex=True)
  panels = [("train", "top1_err", "Train top-1 error"), ("val", "top1_err", "Validation top-1 error"),
            ("train", "top5_err", "Train top-5 error"), ("val", "top5_err", "Validation top-5 error")]
  for ax, (split, metric, title) in zip(axes.flat, panels):
    for g, runs in groups.items():
      curve = group_curve([series(r.train_rows() if split == "train" else r.val_rows(), xaxis, metric)
                           for r in runs])
      if curve is None:
        continue
      xs, mean, lo, hi = curve
      xs = xs / scale if wall else xs
      label = g + (f" (n={len(runs)})" if len(runs) > 1 else "")
      ax.plot(xs, 100 * mean, color=colors[g], lw=2.2 if g == baseline else 1.4,
              marker="o" if split == "val" else None, ms=3, label=label)
      if len(runs) > 1:
        ax.fill_between(xs, 100 * lo, 100 * hi, color=colors[g], alpha=0.15, lw=0)
    ax.set_title(title, fontsize=12)
    # Errors span 90% (a tanh net at chance) to under 1% (top-5): on a linear axis the slow
    # run flattens every other curve. The label says which axis the panel really got.
    is_log = yscale == "log" and _log_axis(ax)
    ax.set_ylabel("error (%)" + (", log scale" if is_log else ""), fontsize=11)
    ax.grid(alpha=0.3, which="both")
  for ax in axes[1]:
    ax.set_xlabel(f"wall time ({unit})" if wall else "epoch", fontsize=11)
  handles, labels = axes[0, 0].get_legend_handles_labels()
  if not handles:
    handles, labels = axes[0, 1].get_legend_handles_labels()
  fig.legend(handles, labels, loc="center right", fontsize=10,
             title="run (band: min–max over seeds,\nup to the shortest seed)", title_fontsize=9, frameon=False)
  fig.suptitle(f"Error vs {'wall time' if wall else 'epoch'}{title_suffix(groups)}", fontsize=14)
  fig.tight_layout(rect=(0, 0, 0.82, 0.96))
  return save(fig, out / f"curves_{'walltime' if wall else 'epoch'}.png")


def delta_curves(groups, baseline):
  """{group: (epochs, mean Δ, min Δ, max Δ)} of validation top-1 error − the baseline's, in
  points, paired by seed at each validation epoch."""
  base = {r.seed: series(r.val_rows(), "epoch", "top1_err") for r in groups.get(baseline, [])}
  out = {}
  for g, runs in groups.items():
    if g == baseline:
      continue
    diffs = []
    for r in runs:
      b, s = base.get(r.seed), series(r.val_rows(), "epoch", "top1_err")
      if b is None or s is None:
        continue
      ep = np.intersect1d(b[0], s[0])
      if ep.size:
        diffs.append((ep, 100 * (np.interp(ep, *s) - np.interp(ep, *b))))
    curve = group_curve(diffs)
    if curve is not None:
      out[g] = curve
  return out


def plot_delta_curves(groups, baseline, out: pathlib.Path) -> list[pathlib.Path]:
  """Validation Δtop-1 against the baseline per epoch: the ~0.5-point effects at a scale that
  shows them. Groups whose Δ leaves ±OFF_SCALE are named instead of drawn."""
  curves = delta_curves(groups, baseline)
  if not curves:
    return []
  plt = _plt()
  colors = _colors(groups, baseline)
  fig, ax = plt.subplots(figsize=(13, 6.5))
  off = []
  for g, (xs, mean, lo, hi) in curves.items():
    if np.nanmax(np.abs(mean)) > OFF_SCALE:
      off.append(g)
      continue
    n = len(groups[g])
    ax.plot(xs, mean, color=colors[g], lw=1.6, marker="o", ms=3, label=g + (f" (n={n})" if n > 1 else ""))
    if n > 1:
      ax.fill_between(xs, lo, hi, color=colors[g], alpha=0.15, lw=0)
  ax.axhline(0, color="black", lw=1.2, label=f"{baseline} (Δ = 0)")
  ax.set_xlabel("epoch", fontsize=11)
  ax.set_ylabel(f"validation top-1 error − {baseline}'s (points of %)", fontsize=11)
  ax.grid(alpha=0.3)
  if off:
    ax.plot([], [], " ", label=f"off scale (|Δ| > {OFF_SCALE:g}): {', '.join(off)}")
  ax.legend(fontsize=9, title="band: min–max of per-seed Δ", title_fontsize=9, loc="center left",
            bbox_to_anchor=(1.01, 0.5), frameon=False)
  ax.set_title(f"Validation error against `{baseline}`, paired by seed{title_suffix(groups)}", fontsize=12)
  fig.tight_layout()
  return save(fig, out / "curves_delta.png")


def plot_claims(rows, out: pathlib.Path) -> list[pathlib.Path]:
  """Each claim's Δtop-1 with its 95% CI and per-seed values, beside the paper's Δ."""
  rows = [r for r in rows if r["unit"] == "points" and r["summary"].n]
  if not rows:
    return []
  plt = _plt()
  fig, ax = plt.subplots(figsize=(10, 1.8 + 0.65 * len(rows)))
  ys = np.arange(len(rows))[::-1]
  for y, r in zip(ys, rows):
    s = r["summary"]
    ax.scatter(s.values, [y + 0.12] * s.n, s=14, color="tab:blue", alpha=0.5, lw=0,
               label="ours, per seed" if y == ys[0] else None)
    if s.ci is not None:
      ax.errorbar([s.mean], [y], xerr=[[s.mean - s.ci[0]], [s.ci[1] - s.mean]], fmt="o", color="tab:blue",
                  capsize=4, lw=2, label="ours: mean, 95% CI" if y == ys[0] else None)
    else:
      ax.plot([s.mean], [y], "o", mfc="white", color="tab:blue", label="ours: mean (no CI)")
    if r["paper_value"] is not None:
      ax.plot([r["paper_value"]], [y - 0.15], "D", color="tab:red", ms=7,
              label="paper" if not any(h == "paper" for h in ax.get_legend_handles_labels()[1]) else None)
  ax.axvline(0, color="gray", lw=1)
  ax.set_yticks(ys, [f"{r['claim']} (§{r['section']})\n{r['verdict']}" for r in rows], fontsize=9)
  ax.set_xlabel("Δ top-1 test error (points of %): positive = removing the feature costs accuracy", fontsize=10)
  ax.grid(alpha=0.3, axis="x")
  handles, labels = ax.get_legend_handles_labels()
  uniq = dict(zip(labels, handles))
  # Below the axes: inside, it would cover a row's marks whichever corner it took.
  ax.legend(uniq.values(), uniq.keys(), fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.1 - 0.4 / len(rows)),
            ncol=4, frameon=False)
  ax.set_title("The paper's ablations: our Δ (95% CI) beside the paper's", fontsize=12)
  fig.tight_layout()
  return save(fig, out / "claims.png")


def plot_figure1(groups, results, out: pathlib.Path) -> list[pathlib.Path]:
  import matplotlib

  plt = _plt()
  fig, ax = plt.subplots(figsize=(8, 6))
  cmap = matplotlib.colormaps["tab10"]
  threshold = results[0]["threshold"]
  for i, res in enumerate(results):
    relu, tanh = res["relu"], res["tanh"]
    for g, style in ((relu, "-"), (tanh, "--")):
      # Fractional train rows when the crossing is inside the first epoch, else per-epoch rows.
      kind = "train" if res["fractional"] else "train_epoch"
      curve = group_curve([series(r.rows.get(kind) or r.rows.get("train", []), "epoch", "top1_err")
                           for r in groups[g]])
      if curve is None:
        continue
      xs, mean, lo, hi = curve
      act = "ReLU" if g == relu else "tanh"
      label = f"{act} ({g}" + (f", n={len(groups[g])}" if len(groups[g]) > 1 else "") + ")"
      ax.plot(xs, 100 * mean, style, color=cmap(i), lw=2, label=label)
      if len(groups[g]) > 1:
        ax.fill_between(xs, 100 * lo, 100 * hi, color=cmap(i), alpha=0.15, lw=0)
    for key in ("ep_relu", "ep_tanh"):
      if res[key].n:
        ax.axvline(res[key].mean, color=cmap(i), ls=":", lw=1)
    if res["ratio"] is not None:
      ax.plot([], [], " ", label=f"tanh/ReLU epochs to {threshold:.0%}: "
              f"{'≥ ' if res['lower_bound'] else ''}{res['ratio']:.2f}× (paper ~6×)")
  ax.axhline(100 * threshold, color="gray", ls="--", lw=1, label=f"{threshold:.0%} training error")
  ax.set_xlabel("Epochs", fontsize=12)
  ax.set_ylabel("Training error rate (%)", fontsize=12)
  ax.set_ylim(bottom=0)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=10)
  ax.set_title("Figure 1: ReLU (solid) vs tanh (dashed)" + title_suffix(groups), fontsize=12)
  fig.tight_layout()
  return save(fig, out / "figure1.png")
