"""The paper's Figure 1 measurement: epochs until training error first reaches a threshold
(25% in the paper), ReLU against tanh, each net at its own fastest learning rate."""

from __future__ import annotations

import json

from alexnet_jax import config as config_lib
from alexnet_jax.report import stats
from alexnet_jax.report.runs import RunData

# What may differ between the ReLU and the tanh arm of one comparison: the activation, and the
# learning rate, which the paper chose separately for each net.
PAIR_FIELDS = {"model.activation", "optim.lr"}


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


def _activation(group: str, runs: list[RunData]) -> str | None:
  cfg = runs[0].config
  if cfg is None:  # No config.json yet: go by the sweep files' names.
    return "tanh" if group.startswith("tanh") else ("relu" if group.startswith(("relu", "full")) else None)
  return (cfg.get("model") or {}).get("activation")


def _pair_key(runs: list[RunData]) -> str | None:
  """What must be equal for two groups to be arms of one ReLU/tanh comparison."""
  cfg = runs[0].config
  if cfg is None:
    return None
  ignore = set(PAIR_FIELDS) | {"seed"}
  # Without a cosine schedule a longer run is the shorter one plus more epochs (same data order
  # and learning rates up to there), so run length alone does not keep two groups apart.
  schedule = (cfg.get("optim") or {}).get("schedule")
  if schedule != "cosine":
    ignore.add("num_epochs")
  if schedule != "steps":  # Unused by the other schedules (and moved by `epochs=N` variants).
    ignore.add("optim.step_epochs")
  return json.dumps(config_lib.diff({}, cfg, ignore=ignore), sort_keys=True, default=str)


def _mean_epochs(runs: list[RunData], threshold: float, seeds: set | None = None) -> float:
  """Mean epochs to the threshold over seeds (only `seeds`, if given), counting a seed that
  never got there as infinite."""
  got = []
  for r in runs:
    if seeds is not None and r.seed not in seeds:
      continue
    e = epochs_to_threshold(r, threshold, True)[0]
    got.append(float("inf") if e is None else e)
  return sum(got) / len(got)


def relu_tanh_pairs(groups: dict[str, list[RunData]], threshold: float = 0.25) -> list[tuple[str, str]]:
  """(relu group, tanh group) pairs whose configs differ only in activation and learning rate.

  Where several learning rates were run for the same net (the Figure 1 sweep's grid), each
  activation keeps the rate that reached the threshold in the fewest epochs, as the paper
  picked "the learning rates for each network ... to make training as fast as possible".
  Rates are compared on the seeds every candidate has: with a grid on seed 0 and more seeds
  at the chosen rate only, a one-seed rate must not win on a lucky seed against a mean.
  """
  clusters: dict[str, dict[str, list[str]]] = {}
  for g, runs in groups.items():
    act = _activation(g, runs)
    if act not in ("relu", "tanh"):
      continue
    key = _pair_key(runs)
    if key is None:  # Unconfigured (just started) runs pair by the sweep files' names.
      key = "names"
      if g not in ("relu", "full", "tanh"):
        continue
    clusters.setdefault(key, {}).setdefault(act, []).append(g)
  pairs = []
  for arms in clusters.values():
    if "relu" in arms and "tanh" in arms:
      fastest = {}
      for act, gs in arms.items():
        shared = set.intersection(*({r.seed for r in groups[g]} for g in gs))
        fastest[act] = min(gs, key=lambda g: (_mean_epochs(groups[g], threshold, shared or None),
                                              g != "relu", g))
      pairs.append((fastest["relu"], fastest["tanh"]))
  return pairs


def lr_grid(groups, pair) -> dict[str, list[tuple[str, float | None]]]:
  """For each arm of a pair, the groups of its cluster that were candidates (group, lr)."""
  out = {}
  key = _pair_key(groups[pair[0]])
  for arm, g0 in zip(("relu", "tanh"), pair):
    cands = [g for g, runs in groups.items() if _activation(g, runs) == arm and (key is None or _pair_key(runs) == key)]
    out[arm] = [(g, ((groups[g][0].config or {}).get("optim") or {}).get("lr")) for g in cands]
  return out


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
      got = {r.seed: epochs_to_threshold(r, threshold, fractional) for r in groups[g]}
      ep = stats.summarize([e for e, _ in got.values() if e is not None])
      wall = stats.summarize([w for e, w in got.values() if e is not None and w is not None])
      last = max((r.epoch or 0) for r in groups[g])
      return got, ep, wall, sum(e is None for e, _ in got.values()), last

    got_r, ep_r, wall_r, miss_r, last_r = measure(relu)
    got_t, ep_t, wall_t, miss_t, last_t = measure(tanh)
    ratio = ratio_t = None
    per_seed = stats.summarize([])
    note = ""
    if ep_r.n and ep_t.n and not miss_r and not miss_t:
      ratio = ep_t.mean / ep_r.mean
      ratio_t = wall_t.mean / wall_r.mean if wall_r.n and wall_t.n else None
      common = [s for s in got_r if s in got_t and got_r[s][0] and got_t[s][0]]
      if common:
        per_seed = stats.ratio_summary([got_t[s][0] / got_r[s][0] for s in common])
    elif ep_r.n and not miss_r and miss_t:
      ratio = last_t / ep_r.mean
      note = f"tanh not below {threshold:.0%} by epoch {last_t:.2f}: ratio is a lower bound"
    else:
      note = "not reached by every run yet"
    out.append(dict(relu=relu, tanh=tanh, threshold=threshold, fractional=fractional, ep_relu=ep_r,
                    ep_tanh=ep_t, wall_relu=wall_r, wall_tanh=wall_t, ratio=ratio, ratio_time=ratio_t,
                    per_seed=per_seed, lower_bound=bool(note and ratio), note=note,
                    lr_grid=lr_grid(groups, (relu, tanh))))
  return out
