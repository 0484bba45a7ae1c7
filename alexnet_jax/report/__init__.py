r"""Tables and figures from any set of run workdirs, beside the paper's own numbers.

    python -m alexnet_jax.report runs/fmnist_paper_ablations [--runs=no_lrn*,full] [--baseline=full]
    python -m alexnet_jax.report runs/a runs/b --out=runs/compare    # any workdirs, not only sweeps
    python -m alexnet_jax.report runs/study --export=experiments/results/study   # commit the raw runs
    python -m alexnet_jax.report experiments/results/study          # regenerate from the repository
    python -m alexnet_jax.report.kernels runs/study/full.s0          # Figure 3: first-layer kernels
    tensorboard --logdir runs/fmnist_paper_ablations                 # every run's tb/ side by side

A run is any folder holding `metrics.jsonl` (or `final.json`); see docs/DESIGN.md for the
formats. Runs still training are reported from what they have logged so far. Runs named
`x.s0`, `x.s1` ... are seeds of `x`: Δs are paired by seed, with mean, 95% CI, every seed's
value and a paired t-test, Holm-adjusted over the claims.

Written to `<folder>/report/` (or --out):
  report.md         claims table (claim | paper Δ | ours Δ [95% CI] | verdict), results table
                    (paper Tables 1/2 shape), ablation table, ReLU-vs-tanh speed-up; also printed
  claims.csv        one row per claim: Δ, CI, per-seed values, p, Holm p, verdict
  results.csv       one row per run group (errors in %, mean/std/min/max/CI over seeds)
  runs.csv          one row per run (each seed)
  ablations.csv     one row per switch: Δtop-1/Δtop-5 on each view, CI, seeds, p; the paper's Δ
  speedup.csv       epochs (and wall time) to the training-error threshold, tanh/ReLU ratio
  metrics_long.csv  every logged number, one per row (tidy, long format)
  claims.png        each Δtop-1 with its CI beside the paper's Δ
  curves_epoch.png, curves_walltime.png   train/val top-1 and top-5 error vs epoch / wall time
  curves_delta.png  validation error minus the baseline's, per epoch, paired by seed
  figure1.png       the paper's Figure 1 (training error vs epoch, ReLU solid, tanh dashed)
  (every .png has an .svg beside it)

Modules: `runs` reads workdirs, `stats` does the statistics, `claims` maps runs to the paper's
claims and judges them, `speedup` measures Figure 1, `tables` and `plots` render, `make` ties
them together, `kernels` draws Figure 3.
"""

from __future__ import annotations

from alexnet_jax.report.claims import CLAIMS, config_diff, describe_diff, match_claim
from alexnet_jax.report.make import main, make_report
from alexnet_jax.report.runs import CROPS, RunData, discover, read_run, select

__all__ = ["CLAIMS", "CROPS", "RunData", "config_diff", "describe_diff", "discover", "main", "make_report",
           "match_claim", "read_run", "select"]
