"""Numbers over seeds: mean, 95% confidence interval, paired t-test, Holm's adjustment, p as text.

Every Δ of the report is a set of per-seed differences (same seed index in both arms), so
one-sample t statistics on those differences are the paired t-test. scipy.stats does the
arithmetic; this module decides what to do where the test has nothing to say (one seed, or
seeds that all gave the same Δ) so that no table shows an infinite or rounding-noise t.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

CONFIDENCE = 0.95
ALPHA = 0.05
# Relative spread below which the values count as equal. Deltas of errors stored as fractions
# and taken in % carry ~1e-15 of rounding: three "equal" deltas then have a sample std of 1e-16
# and a t of 1e15, which is float noise, not evidence.
_ZERO_SPREAD = 1e-9


@dataclasses.dataclass(frozen=True)
class Summary:
  """Per-seed values and what a t-test over them can say; None where it can say nothing."""
  values: tuple[float, ...]
  mean: float | None = None
  std: float | None = None  # Sample std (ddof=1).
  ci: tuple[float, float] | None = None  # t-interval of the mean at CONFIDENCE.
  t: float | None = None
  p: float | None = None  # Two-sided, H0: mean = 0.
  note: str = ""  # Why ci/p are missing.

  @property
  def n(self) -> int:
    return len(self.values)

  @property
  def min(self):
    return min(self.values) if self.values else None

  @property
  def max(self):
    return max(self.values) if self.values else None

  def fmt(self, signed: bool = False, digits: int = 2) -> str:
    """`mean ± std` (the spread of the seeds)."""
    if not self.values:
      return "-"
    spec = f"{'+' if signed else ''}.{digits}f"
    s = format(self.mean, spec)
    if self.std is not None:
      s += f" ± {self.std:.{digits}f}"
    return s

  def fmt_ci(self, signed: bool = True, digits: int = 2) -> str:
    """`mean [lo, hi]` (where the mean lies), or why there is no interval."""
    if not self.values:
      return "-"
    spec = f"{'+' if signed else ''}.{digits}f"
    s = format(self.mean, spec)
    if self.ci is None:
      return f"{s} ({self.note})" if self.note else s
    return f"{s} [{format(self.ci[0], spec)}, {format(self.ci[1], spec)}]"

  def fmt_values(self, signed: bool = True, digits: int = 2) -> str:
    spec = f"{'+' if signed else ''}.{digits}f"
    return ", ".join(format(v, spec) for v in self.values) if self.values else "-"


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
  """Mean, sample std, t-interval and one-sample t-test (H0: mean 0) of `values`."""
  v = np.asarray([float(x) for x in values], dtype=float)
  vals = tuple(float(x) for x in v)
  if v.size == 0:
    return Summary(vals, note="no runs")
  mean = float(v.mean())
  if v.size < 2:
    return Summary(vals, mean, note="n=1")
  std = float(v.std(ddof=1))
  if std <= _ZERO_SPREAD * max(1.0, float(np.abs(v).max())):
    # Every seed gave the same value: the t-test divides by a zero spread. There is no honest p
    # or interval from n equal numbers, so say that instead of printing t = ±inf (or 1e15).
    return Summary(vals, mean, 0.0, note=f"no spread: all {v.size} equal")
  from scipy import stats as sps  # Deferred: the launcher imports the report and needs no scipy.

  res = sps.ttest_1samp(v, 0.0)
  ci = res.confidence_interval(confidence)
  return Summary(vals, mean, std, (float(ci.low), float(ci.high)), float(res.statistic), float(res.pvalue))


def paired(a: dict, b: dict) -> tuple[Summary, list]:
  """a - b over the keys (seeds) both have: (summary, those keys in order)."""
  common = sorted(set(a) & set(b), key=lambda s: (s is None, s or 0))
  if common:
    return summarize([a[s] - b[s] for s in common]), common
  if a and b:
    # No seed in common: only the difference of the means, one number, no test.
    return summarize([float(np.mean(list(a.values())) - np.mean(list(b.values())))]), []
  return summarize([]), []


def ratio_summary(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
  """Geometric mean of positive ratios with its t-interval, tested against a ratio of 1.

  Speed-ups are multiplicative (2x and 0.5x are opposite and equal), so the test and the
  interval are taken on log ratios and mapped back.
  """
  vals = [float(x) for x in values]
  if any(not x > 0 for x in vals):
    raise ValueError(f"ratios must be positive, got {vals}")
  logs = summarize([math.log(x) for x in vals], confidence)
  if logs.mean is None:
    return Summary(tuple(vals), note=logs.note)
  ci = None if logs.ci is None else (math.exp(logs.ci[0]), math.exp(logs.ci[1]))
  return Summary(tuple(vals), math.exp(logs.mean), logs.std, ci, logs.t, logs.p, logs.note)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
  """Holm's step-down adjusted p-values, in input order; None (no test) stays None.

  Controls the chance of any false "held" over the family at ALPHA without assuming the tests
  independent. scipy.stats only adjusts for the false discovery rate
  (`false_discovery_control`: Benjamini-Hochberg/Yekutieli), and statsmodels'
  `multipletests` is not worth a dependency for five lines.
  """
  idx = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
  m = len(idx)
  out: list[float | None] = [None] * len(pvalues)
  running = 0.0
  for rank, i in enumerate(idx):
    # The k-th smallest p (k from 0) is compared with alpha / (m - k): scale it up instead,
    # and never let an adjusted p fall below an earlier one (step-down).
    running = max(running, min(1.0, (m - rank) * pvalues[i]))
    out[i] = running
  return out


def fmt_p(p: float | None) -> str:
  """p as a reader should see it: '<0.001' rather than '0.00', two significant digits otherwise."""
  if p is None or (isinstance(p, float) and math.isnan(p)):
    return "-"
  if p < 0.001:
    return "<0.001"
  return f"{p:.2g}"  # Fixed-point from 0.001 up: 0.0042, 0.013, 0.34, 1.
