"""The report's statistics against closed forms and scipy's distributions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from alexnet_jax.report import claims, stats


def _closed_form(values, confidence=0.95):
  v = np.asarray(values, float)
  n = v.size
  mean, sd = v.mean(), math.sqrt(((v - v.mean()) ** 2).sum() / (n - 1))
  se = sd / math.sqrt(n)
  t = mean / se
  q = sps.t.ppf(0.5 + confidence / 2, n - 1)
  return mean, sd, (mean - q * se, mean + q * se), t, 2 * sps.t.sf(abs(t), n - 1)


@pytest.mark.parametrize("values", [[0.5, 1.2, -0.3], [2.0, 2.5, 1.0, 3.2, 2.2], [-0.4, -0.9],
                                    list(np.random.default_rng(0).normal(0.3, 0.5, 10))])
def test_summary_matches_the_t_interval_and_paired_t_test(values):
  s = stats.summarize(values)
  mean, sd, ci, t, p = _closed_form(values)
  assert s.n == len(values) and s.mean == pytest.approx(mean) and s.std == pytest.approx(sd)
  assert s.ci == pytest.approx(ci) and s.t == pytest.approx(t) and s.p == pytest.approx(p)
  # The paired test of two arms is the one-sample test of their per-seed differences.
  a = {k: 10 + x for k, x in enumerate(values)}
  b = {k: 10.0 for k in range(len(values))}
  b[99] = 3.0  # A seed only one arm has is left out.
  got, seeds = stats.paired(a, b)
  assert seeds == list(range(len(values)))
  assert got.p == pytest.approx(sps.ttest_rel(list(a.values()), [10.0] * len(values)).pvalue)


def test_two_seeds_give_the_cauchy_p():
  # With 1 degree of freedom Student's t is the Cauchy distribution: p = 1 - (2/pi) atan(|t|).
  s = stats.summarize([3.0, 2.0])
  assert s.t == pytest.approx(5.0) and s.p == pytest.approx(1 - 2 / math.pi * math.atan(5.0))
  # And the interval is mean ± tan(pi * 0.475) * se.
  half = math.tan(math.pi * 0.475) * 0.5
  assert s.ci == pytest.approx((2.5 - half, 2.5 + half))


def test_degenerate_cases_give_no_test_instead_of_absurd_numbers():
  assert stats.summarize([]).mean is None and stats.summarize([]).fmt() == "-"
  one = stats.summarize([1.5])
  assert one.mean == 1.5 and one.std is None and one.ci is None and one.p is None and one.note == "n=1"
  # Three "equal" deltas as the report computes them: errors stored as fractions, Δ in %.
  # Rounding leaves a std of ~1e-15, which a plain t-test turns into |t| ~ 1e15.
  deltas = [100 * a - 100 * b for a, b in ((0.13, 0.10), (0.14, 0.11), (0.12, 0.09))]
  assert np.std(deltas, ddof=1) > 0  # The trap is real.
  s = stats.summarize(deltas)
  assert s.mean == pytest.approx(3.0) and s.std == 0.0
  with pytest.warns(RuntimeWarning, match="Precision loss"):
    assert abs(sps.ttest_1samp(deltas, 0.0).statistic) > 1e15  # What a plain t-test would print.
  assert s.t is None and s.p is None and s.ci is None and "no spread" in s.note
  assert "no spread" in s.fmt_ci()
  zeros = stats.summarize([0.0, 0.0, 0.0])
  assert zeros.p is None and zeros.mean == 0.0


def _rejects(ps, alpha):
  """Holm's procedure as stated: reject in order of p while p_(k) <= alpha / (m - k)."""
  out = set()
  for k, i in enumerate(sorted(range(len(ps)), key=lambda i: ps[i])):
    if ps[i] > alpha / (len(ps) - k):
      break
    out.add(i)
  return out


def test_holm_is_the_smallest_alpha_at_which_the_step_down_procedure_rejects():
  ps = [0.01, 0.04, 0.03, 0.005, 0.2]
  # By hand: sorted 0.005, 0.01, 0.03, 0.04, 0.2 times 5, 4, 3, 2, 1 = 0.025, 0.04, 0.09, 0.08 -> 0.09
  # (step-down keeps it monotone), 0.2.
  assert stats.holm(ps) == pytest.approx([0.04, 0.09, 0.09, 0.025, 0.2])
  rng = np.random.default_rng(1)
  for _ in range(50):
    ps = list(rng.uniform(0, 0.3, 6) ** 2)
    for i, a in enumerate(stats.holm(ps)):
      if a < 1.0:
        assert i in _rejects(ps, a * (1 + 1e-9)) and i not in _rejects(ps, a * (1 - 1e-6))
      else:
        assert i not in _rejects(ps, 0.999)
  # Tests without a p (one seed) are left out of the family, not counted as p = 1.
  assert stats.holm([0.01, None, 0.02]) == pytest.approx([0.02, None, 0.02])
  assert stats.holm([]) == [] and stats.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])


def test_p_is_printed_properly():
  assert stats.fmt_p(None) == "-" and stats.fmt_p(float("nan")) == "-"
  assert stats.fmt_p(1e-12) == "<0.001" and stats.fmt_p(0.0004) == "<0.001"
  assert stats.fmt_p(0.0042) == "0.0042" and stats.fmt_p(0.013) == "0.013" and stats.fmt_p(0.34) == "0.34"
  for p in np.logspace(-8, 0, 200):
    text = stats.fmt_p(p)
    assert text != "0.00" and "e" not in text and not text.startswith("0.000")
    if text != "<0.001":
      assert float(text) == pytest.approx(p, rel=0.1, abs=0.005)


def test_ratio_summary_is_geometric_with_an_interval_on_logs():
  ratios = [2.0, 3.0, 2.5, 4.0]
  s = stats.ratio_summary(ratios)
  mean, _, ci, _, p = _closed_form(np.log(ratios))
  assert s.mean == pytest.approx(math.exp(mean)) and s.ci == pytest.approx((math.exp(ci[0]), math.exp(ci[1])))
  assert s.p == pytest.approx(p) and s.values == tuple(ratios)
  with pytest.raises(ValueError, match="positive"):
    stats.ratio_summary([1.0, 0.0])


@pytest.mark.parametrize("values,p_holm,paper,want,size", [
    ([1.0, 1.2, 0.9, 1.1, 1.0], 0.001, 1.4, "held", "smaller"),
    ([-1.0, -1.2, -0.9, -1.1, -1.0], 0.001, None, "reversed", ""),
    ([0.1, -0.2, 0.2, 0.0, -0.05], 0.9, 1.4, "refuted", "smaller"),
    ([0.3, -0.5, 1.9, 0.4, 0.8], 0.4, 1.4, "same direction, not resolved", "consistent"),
    ([-0.3, 0.2, -0.5, -0.1, 0.1], 0.4, None, "opposite direction, not resolved", ""),
    # Significant before adjustment, not after: a positive but smaller effect is not "refuted".
    ([0.4, 0.5, 0.3, 0.45, 0.5], 0.08, 1.4, "same direction, not resolved", "smaller"),
])
def test_verdicts(values, p_holm, paper, want, size):
  assert claims.verdict(stats.summarize(values), p_holm, paper) == (want, size)


def test_verdict_without_a_test_says_why():
  assert claims.verdict(stats.summarize([]), None, 1.4) == ("not run", "")
  assert claims.verdict(stats.summarize([0.5]), None, 1.4)[0] == "not resolved (n=1)"
  # A ratio claim is judged against 1, not 0.
  got = claims.verdict(stats.ratio_summary([2.0, 2.4, 1.9, 2.2]), 0.01, 6.0, null=1.0)
  assert got == ("held", "smaller")


def test_seed_sets_of_several_sizes_pair_only_common_seeds():
  for na, nb in itertools.product((1, 3, 5), repeat=2):
    a = {s: float(s) for s in range(na)}
    b = {s: 0.5 * s for s in range(nb)}
    s, seeds = stats.paired(a, b)
    assert seeds == list(range(min(na, nb))) and s.values == tuple(0.5 * k for k in seeds)
  s, seeds = stats.paired({1: 3.0}, {2: 1.0})  # No seed in common: the means' difference, untested.
  assert seeds == [] and s.values == (2.0,) and s.p is None
