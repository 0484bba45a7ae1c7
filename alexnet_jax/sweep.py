"""Sweeps declared in code: a sweep file lists named runs as (config file, variant, overrides).

A sweep file (see `experiments/`) defines `get_sweep(arg=None)` returning a list of `Run`s
(or plain dicts with the same keys). `arg` is the text after `:` on the command line,
`experiments/fmnist_paper_ablations.py:seeds=2,epochs=10`, parsed with `parse_arg`.

    Run(name="no_lrn.s0", config="configs/small_fashion_mnist.py:lrn=0,seed=0",
        overrides={"optim.lr": 0.02})

`resolve` turns a run into the ConfigDict that `train_and_evaluate` gets: the config file's
`get_config(variant)`, then the overrides, then `config.validate`, so a typo in any run of a
sweep is reported before the first run starts.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import pathlib
import re
from typing import Any

import ml_collections

from alexnet_jax import config as C
from alexnet_jax import variants

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")
_SEED_RE = re.compile(r"^(?P<group>.+)\.s(?P<seed>\d+)$")
_module_ids = itertools.count()


class SweepError(ValueError):
  """A sweep or run that cannot be launched; the message names the run and the fix."""


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  config: str  # "configs/<file>.py" or "configs/<file>.py:<variant string>"
  overrides: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def config_file(self) -> str:
    return self.config.partition(":")[0]

  @property
  def variant(self) -> str:
    return self.config.partition(":")[2]


def split_name(name: str) -> tuple[str, int | None]:
  """`no_lrn.s1` -> ("no_lrn", 1); names without a seed suffix are their own group."""
  m = _SEED_RE.match(name)
  if m:
    return m.group("group"), int(m.group("seed"))
  return name, None


def seeded(name: str, seed: int, seeds: int) -> str:
  """The run name for one seed; a one-seed sweep keeps plain names."""
  return f"{name}.s{seed}" if seeds > 1 else name


def join_variant(*parts: str | None) -> str:
  return ",".join(p for p in parts if p)


def parse_arg(arg: str | None, defaults: dict[str, Any], where: str) -> dict[str, Any]:
  """Reads a sweep argument `seeds=2,epochs=10,runlocal` (`config.parse_kv`) against typed defaults.

  A bare key sets a boolean default to True. Values take the type of their default
  (a default of None keeps the value as text).
  """
  out = dict(defaults)
  for key, value in C.parse_kv(arg):
    if key not in defaults:
      raise SweepError(
          f"{where}: unknown sweep argument {key!r}. Known: "
          + ", ".join(f"{k} (default {v!r})" for k, v in defaults.items()))
    default = defaults[key]
    try:
      if isinstance(default, bool):
        out[key] = variants.parse_bool(value)
      elif value is None:
        raise ValueError("needs a value")
      elif isinstance(default, (int, float)):
        out[key] = type(default)(value)
      else:
        out[key] = value
    except ValueError as e:
      item = key if value is None else f"{key}={value}"
      raise SweepError(f"{where}: sweep argument {item!r}: {e} (default is {default!r}).") from None
  return out


def _load_module(path: pathlib.Path, what: str):
  if not path.is_file():
    raise SweepError(f"{what} {str(path)!r} does not exist.")
  spec = importlib.util.spec_from_file_location(f"_alexnet_jax_file_{next(_module_ids)}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def find_file(path: str) -> pathlib.Path:
  """Relative paths are tried from the working directory, then from the repository root,
  so sweeps launched from anywhere find `configs/...`."""
  p = pathlib.Path(path).expanduser()
  if p.is_absolute() or p.exists():
    return p.resolve()
  in_repo = REPO_ROOT / p
  return in_repo.resolve() if in_repo.exists() else p


def load_sweep(spec: str) -> list[Run]:
  """Loads `experiments/<sweep>.py[:arg]` into a list of Runs with unique names."""
  path, _, arg = spec.partition(":")
  module = _load_module(find_file(path), "sweep file")
  if not hasattr(module, "get_sweep"):
    raise SweepError(f"sweep file {path!r} has no get_sweep(arg=None) function.")
  runs = [as_run(r, path) for r in module.get_sweep(arg or None)]
  if not runs:
    raise SweepError(f"sweep {spec!r} has no runs.")
  seen = set()
  for r in runs:
    if r.name in seen:
      raise SweepError(f"sweep {spec!r} has two runs named {r.name!r}; names become workdirs, so make them unique.")
    seen.add(r.name)
  return runs


def as_run(r, where: str) -> Run:
  if isinstance(r, dict):
    unknown = set(r) - {"name", "config", "overrides"}
    if unknown or "name" not in r or "config" not in r:
      raise SweepError(
          f"{where}: a run must be {{'name', 'config', 'overrides'}}; got keys {sorted(r)}.")
    r = Run(r["name"], r["config"], dict(r.get("overrides") or {}))
  if not isinstance(r, Run):
    raise SweepError(f"{where}: get_sweep must return Runs or dicts, got {type(r).__name__}.")
  if not _NAME_RE.match(r.name):
    raise SweepError(
        f"{where}: run name {r.name!r} must be a plain directory name "
        "(letters, digits, and _ . + = -, no slashes).")
  return r


def load_config(config: str) -> ml_collections.ConfigDict:
  """`configs/x.py:variant` -> the config file's get_config(variant)."""
  path, _, variant = config.partition(":")
  module = _load_module(find_file(path), "config file")
  if not hasattr(module, "get_config"):
    raise SweepError(f"config file {path!r} has no get_config(arg=None) function.")
  return module.get_config(variant or None)


def apply_overrides(c: ml_collections.ConfigDict, overrides: dict[str, Any], where: str) -> None:
  """Sets dotted fields that must already exist, so a misspelt override fails loudly."""
  for key, value in overrides.items():
    parts = key.split(".")
    node = c
    for i, p in enumerate(parts):
      if not isinstance(node, ml_collections.ConfigDict) or p not in node:
        parent = ".".join(["config"] + parts[:i])
        if isinstance(node, ml_collections.ConfigDict):
          hint = f"Fields under {parent}: {', '.join(sorted(node.keys()))}."
        else:
          hint = f"{parent} is a value ({node!r}), not a group of fields."
        raise SweepError(
            f"{where}: override {key!r}: the config has no field "
            f"{'config.' + '.'.join(parts[:i + 1])!r}. {hint}")
      if i < len(parts) - 1:
        node = node[p]
    leaf = parts[-1]
    if isinstance(value, list):
      value = tuple(value)  # Sweep files are Python; configs hold tuples.
    try:
      node[leaf] = value
    except TypeError as e:
      raise SweepError(f"{where}: override {key}={value!r} has the wrong type: {e}") from None


def resolve(run: Run, where: str | None = None) -> ml_collections.ConfigDict:
  where = where or f"run {run.name!r}"
  try:
    c = load_config(run.config)
  except ValueError as e:
    raise SweepError(f"{where}: config {run.config!r}: {e}") from None
  apply_overrides(c, run.overrides, where)
  try:
    C.validate(c)
  except C.ConfigError as e:
    raise SweepError(f"{where}: {e}") from None
  return c


def override_flags(overrides: dict[str, Any]) -> list[str]:
  """The overrides as `--config.a.b=value` flags for `alexnet_jax.main` (config_flags)."""
  flags = []
  for key, value in overrides.items():
    if isinstance(value, (list, tuple)):
      value = "(" + ",".join(repr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    flags.append(f"--config.{key}={value}")
  return flags



# The paper's design decisions, one switch each, as variant strings of config.apply_variant.
# Shared by the ImageNet and Fashion-MNIST sweeps so both ablate exactly the same things.
PAPER_SWITCHES = (
    ("full", ""),
    ("no_lrn", "lrn=0"),  # 3.3
    ("pool_2x2", "pool=2x2"),  # 3.4
    ("one_tower", "towers=1"),  # 3.2
    ("no_pca", "pca=0"),  # 4.1
    ("no_dropout", "dropout=0"),  # 4.2
    ("no_aug", "aug=0"),  # 4.1
    ("tanh", "act=tanh"),  # 3.1
)


def ablation_sweep(config_file: str, arg: str | None, where: str, **extra_defaults) -> list[Run]:
  """Every paper switch against the full model, each with 10-crop and center-crop tests.

  Arguments: seeds=N (names gain `.s<seed>`), epochs=N, middle=3|4|3+4 (which middle conv
  layers to remove, one run each), drops=E[+E...] (divide the LR by 10 at these epochs instead
  of on a plateau), runlocal (tiny runs for smoke tests).

  `drops` is for short budgets: the paper's plateau rule rarely fires within a few epochs, and
  where it does fire it fires at a different epoch in each run, so the runs would be compared
  at different points of their schedules. A fixed drop anneals every run at the same epoch,
  which also shrinks the seed-to-seed spread of the final error.
  """
  a = parse_arg(arg, {"seeds": 1, "epochs": 0, "middle": "4", "drops": "", "runlocal": False,
                      **extra_defaults}, where)
  middle = [m for m in a["middle"].split("+") if m]
  if any(m not in ("2", "3", "4") for m in middle):
    raise SweepError(f"{where}: middle={a['middle']!r}: give middle conv layers 2, 3 or 4, joined by '+'.")
  switches = list(PAPER_SWITCHES) + [(f"no_conv{m}", f"drop_conv={m}") for m in middle]
  # eval_crops=ten makes train.py write test rows for both the center crop and the 10 crops,
  # so "center vs 10 crops" needs no runs of its own.
  common = join_variant("crops=ten", f"epochs={a['epochs']}" if a["epochs"] else "",
                        "runlocal" if a["runlocal"] else "")
  overrides = {}
  if a["drops"]:
    try:
      drops = tuple(float(e) for e in a["drops"].split("+"))
    except ValueError:
      raise SweepError(f"{where}: drops={a['drops']!r}: give epochs joined by '+', e.g. drops=3 or drops=4+6.") from None
    overrides = {"optim.schedule": "steps", "optim.step_epochs": drops}
  return [
      Run(seeded(name, s, a["seeds"]), f"{config_file}:{join_variant(variant, common, f'seed={s}')}",
          dict(overrides))
      for name, variant in switches for s in range(a["seeds"])
  ]


def relu_tanh_sweep(config_file: str, arg: str | None, where: str, epochs: int = 0) -> list[Run]:
  """Figure 1: the same net with ReLU and with tanh, without any regularisation.

  Arguments: seeds=N, epochs=N, lr_relu=X and lr_tanh=X (the paper tuned each net's learning
  rate separately), runlocal.
  """
  a = parse_arg(arg, {"seeds": 1, "epochs": epochs, "lr_relu": "", "lr_tanh": "", "runlocal": False}, where)
  # "No regularization of any kind was employed" (Figure 1 caption); a constant learning rate
  # keeps plateau drops, which fire at different times for the two nets, out of the comparison.
  common = join_variant("dropout=0,aug=0,pca=0", f"epochs={a['epochs']}" if a["epochs"] else "",
                        "runlocal" if a["runlocal"] else "")
  runs = []
  for act in ("relu", "tanh"):
    overrides = {"optim.weight_decay": 0.0, "optim.schedule": "constant"}
    if a[f"lr_{act}"]:
      try:
        overrides["optim.lr"] = float(a[f"lr_{act}"])
      except ValueError:
        raise SweepError(f"{where}: lr_{act}={a[f'lr_{act}']!r} is not a number.") from None
    for s in range(a["seeds"]):
      runs.append(Run(seeded(act, s, a["seeds"]), f"{config_file}:{join_variant(f'act={act}', common, f'seed={s}')}",
                      overrides))
  return runs
