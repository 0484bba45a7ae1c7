"""The paper's claims, which runs test each, and what our numbers say about them.

A claim is a design decision the paper measured (or argued for): what removing it cost. Each
ablation group is matched to a claim by the fields its config changes against the baseline;
the claims table then gives per claim: the paper's Δ, ours with its 95% CI, the Holm-adjusted
paired p over the table's family of tests, and a verdict.
"""

from __future__ import annotations

import dataclasses
import json

from alexnet_jax import config as config_lib
from alexnet_jax.report import stats
from alexnet_jax.report.runs import CROPS, RunData, test_by_seed

PAPER_DATASET = "imagenet2012"
IGNORED_DIFF = {"seed"}  # Seeds are aggregated, not a switch.


@dataclasses.dataclass(frozen=True)
class Claim:
  """One design decision the paper measured: what removing it cost (test error, points)."""
  key: str
  fields: frozenset
  switch: str
  section: str
  d_top1: float | None  # The paper's size; None where it gave a direction only.
  d_top5: float | None
  text: str  # The paper's Δ as the paper states it.
  subset_ok: bool = False  # A config change of only some of `fields` counts too.


CLAIMS = (
    Claim("towers", frozenset({"model.towers", "model.conv_features"}), "one tower, half the kernels", "3.2",
          1.7, 1.2, "+1.7 / +1.2"),
    Claim("lrn", frozenset({"model.lrn"}), "no LRN", "3.3", 1.4, 1.2, "+1.4 / +1.2"),
    # pool=2x2 changes only the window (the stride is 2 either way).
    Claim("pool", frozenset({"model.pool_window", "model.pool_stride"}), "non-overlapping pooling", "3.4",
          0.4, 0.3, "+0.4 / +0.3", subset_ok=True),
    Claim("pca", frozenset({"data.pca_noise"}), "no PCA colour noise", "4.1", 1.0, None, "> +1 / -"),
    Claim("dropout", frozenset({"model.dropout"}), "no dropout", "4.2", None, None,
          "worse: 'substantial overfitting'"),
    Claim("aug", frozenset({"data.random_crop", "data.flip"}), "no random crops / flips", "4.1", None, None,
          "worse: 'substantial overfitting'"),
    # Removing conv3 also moves the towers' exchange to conv4 (variants._remove_conv).
    Claim("middle", frozenset({"model.conv_layers", "model.cross_tower"}), "a middle conv layer removed", "7",
          2.0, None, "~ +2 / -", subset_ok=True),
    Claim("activation", frozenset({"model.activation"}), "tanh instead of ReLU", "3.1, Fig. 1", None, None,
          "no error Δ: ReLU trains ~6× faster"),
)
CLAIM_BY_KEY = {c.key: c for c in CLAIMS}
# Used when a run has no config.json yet (it has just started): the sweep files' names.
CLAIM_BY_NAME = {
    "no_lrn": "lrn", "pool_2x2": "pool", "one_tower": "towers", "no_pca": "pca", "no_conv2": "middle",
    "no_conv3": "middle", "no_conv4": "middle", "no_dropout": "dropout", "no_aug": "aug", "tanh": "activation",
}
CROPS_CLAIM = ("crops", "center crop instead of 10 crops", "4.1", "worse: the paper tests on 10 crops")
FIGURE1 = ("figure1", "tanh instead of ReLU: epochs to 25% train error", "3.1, Fig. 1", 6.0, "~6× slower")


def config_diff(a: dict | None, b: dict | None) -> dict[str, tuple] | None:
  """Fields whose values differ between two config.json dicts, or None if one is missing."""
  if a is None or b is None:
    return None
  return config_lib.diff(a, b, ignore=IGNORED_DIFF)


def match_claim(diff: dict | None, group: str) -> Claim | None:
  if diff is None:
    key = CLAIM_BY_NAME.get(group)
    return CLAIM_BY_KEY[key] if key else None
  keys = frozenset(diff)
  for c in CLAIMS:
    if keys and keys <= c.fields and (keys == c.fields or c.subset_ok):
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


@dataclasses.dataclass
class Comparison:
  """One switch against the baseline: per-seed Δs (in points) for each test view and metric."""
  switch: str
  group: str
  dataset: str | None
  change: str
  claim: Claim | None
  deltas: dict  # (crops, metric) -> stats.Summary
  seeds: dict  # (crops, metric) -> seeds paired
  key: str  # Claim key, "crops", or the group's own name.
  p_holm: float | None = None  # Of the primary Δtop-1, when it is in the claims family.


# What makes two groups different experiments rather than a switch and its baseline: a report
# over several studies (the like-for-like ablations beside Figure 1's ReLU/tanh grid) compares
# each group only with a baseline trained under the same protocol.
PROTOCOL_FIELDS = ("data.dataset", "data.train_examples", "num_epochs", "optim.schedule")


def other_protocol(groups: dict[str, list[RunData]], baseline: str) -> dict[str, list[str]]:
  """{group: the protocol fields in which it differs from the baseline}, for groups that do."""
  base = groups[baseline][0].config
  out = {}
  for g, runs in groups.items():
    diff = config_diff(base, runs[0].config)
    fields = [f for f in PROTOCOL_FIELDS if diff and f in diff]
    if fields:
      out[g] = fields
  return out


def compare(groups: dict[str, list[RunData]], baseline: str) -> list[Comparison]:
  """Every group against the baseline, plus what 10-crop testing buys the baseline."""
  base = groups[baseline]
  out = []
  for g, runs in groups.items():
    if g == baseline:
      continue
    diff = config_diff(base[0].config, runs[0].config)
    claim = match_claim(diff, g)
    deltas, seeds = {}, {}
    for c in CROPS:
      for m in ("top1_err", "top5_err"):
        deltas[c, m], seeds[c, m] = stats.paired(test_by_seed(runs, c, m), test_by_seed(base, c, m))
    out.append(Comparison(claim.switch if claim else g, g, runs[0].dataset, describe_diff(diff), claim,
                          deltas, seeds, claim.key if claim else g))
  if any(r.test("ten") and r.test("center") for r in base):
    # The paper tests on 10 crops; this row is what that buys the baseline (center - 10 crops).
    deltas, seeds = {}, {}
    for m in ("top1_err", "top5_err"):
      deltas["center", m], seeds["center", m] = stats.paired(test_by_seed(base, "center", m),
                                                             test_by_seed(base, "ten", m))
      deltas["ten", m], seeds["ten", m] = stats.summarize([]), []
    out.append(Comparison(CROPS_CLAIM[1], baseline, base[0].dataset, "test views: 10 crops → center", None,
                          deltas, seeds, "crops"))
  return out


def primary_view(groups: dict[str, list[RunData]], baseline: str) -> str:
  """The paper's numbers are 10-crop numbers (4.1): use those where the runs have them."""
  return "ten" if any(r.test("ten") for r in groups.get(baseline, [])) else "center"


def verdict(s: stats.Summary, p_holm: float | None, paper: float | None, null: float = 0.0) -> tuple[str, str]:
  """(verdict, size) of a measured effect against the paper's claim that it is above `null`.

  held / reversed: the Holm-adjusted p is below ALPHA, in the paper's direction or against it.
  refuted: not significant, and the 95% CI holds no effect (reaches `null`) but lies wholly below
  the paper's size, so an effect as large as the paper's is ruled out. Otherwise the direction
  of the mean, not resolved.
  size: how the CI stands to the paper's number (smaller / consistent / larger).
  """
  if s.n == 0:
    return "not run", ""
  size = ""
  if paper is not None and s.ci is not None:
    size = "smaller" if s.ci[1] < paper else "larger" if s.ci[0] > paper else "consistent"
  if s.ci is None or p_holm is None:
    return f"not resolved ({s.note})", size
  same = s.mean > null
  if p_holm < stats.ALPHA:
    return ("held" if same else "reversed"), size
  if paper is not None and s.ci[1] < paper and s.ci[0] <= null:
    return "refuted", size
  return ("same direction, not resolved" if same else "opposite direction, not resolved"), size


def expected_here(key: str, dataset: str | None) -> str:
  """What this setting predicts before looking, where it differs from the paper's."""
  if key == "pca" and dataset and "mnist" in dataset:  # The MNISTs are single-channel.
    return "null expected: grey images have one colour axis, so the noise is only a brightness shift"
  if key in ("dropout", "aug"):
    return "helps only where `full` overfits (train error well below test error)"
  return ""


def claims_rows(comparisons: list[Comparison], speedups: list[dict], view: str) -> list[dict]:
  """One row per claim tested here, Holm-adjusted over the rows' primary tests (in place on
  the comparisons too, so the ablation table shows the same adjusted p)."""
  rows = []
  for c in comparisons:
    if c.claim is None and c.key != "crops":
      continue
    if c.key == "activation":
      continue  # Test error is not what the paper claimed for tanh: see the Figure 1 row.
    v = "center" if c.key == "crops" else view
    s = c.deltas[v, "top1_err"]
    paper = c.claim.d_top1 if c.claim else None
    rows.append(dict(key=c.key, claim=c.switch + (f" ({c.group})" if c.key == "middle" else ""),
                     section=c.claim.section if c.claim else CROPS_CLAIM[2],
                     paper=c.claim.text.split(" / ")[0] if c.claim else CROPS_CLAIM[3], paper_value=paper,
                     summary=s, view=v, unit="points", null=0.0, comparison=c, dataset=c.dataset))
  for sp in speedups:
    rows.append(dict(key=FIGURE1[0], claim=f"{FIGURE1[1]} ({sp['relu']} vs {sp['tanh']})", section=FIGURE1[2],
                     paper=FIGURE1[4], paper_value=FIGURE1[3], summary=sp["per_seed"], view="train",
                     unit="×", null=1.0, comparison=None, dataset=None, speedup=sp))
  adjusted = stats.holm([r["summary"].p for r in rows])
  for r, p in zip(rows, adjusted):
    r["p_holm"] = p
    if r["comparison"] is not None:
      r["comparison"].p_holm = p
    r["verdict"], r["size"] = verdict(r["summary"], p, r["paper_value"], r["null"])
    if r.get("speedup") and r["speedup"]["lower_bound"]:
      r["verdict"] = "same direction, not resolved (tanh never reached the threshold: a lower bound)"
  return rows
