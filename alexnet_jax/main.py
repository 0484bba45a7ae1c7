r"""Trains one config in one workdir (also installed as the command `alexnet-train`).

    python -m alexnet_jax.main --config=configs/small_fashion_mnist.py --workdir=runs/fmnist
    python -m alexnet_jax.main --config=configs/alexnet_imagenet.py:lrn=0 --workdir=runs/no_lrn \
        --config.batch_size=256 --config.optim.lr=0.02

Rerunning the same command resumes from the workdir's latest checkpoint.

Any config field can be set with --config.<field>=<value> (--config.optim.lr=0.02); the
fields and their defaults are in alexnet_jax/config.py. After the config file, `:` and a
comma-separated list picks the paper's variants (configs/alexnet_imagenet.py:lrn=0,towers=1):
{variants}

Flags are spelt with underscores, as everywhere in this project (--config.batch_size,
--dry_run). A wrong field, value or flag stops with a one-line message and exit status 2;
--traceback shows the full Python traceback instead.
"""

from __future__ import annotations

import logging as std_logging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

import alexnet_jax
from alexnet_jax import config as config_lib


def _variant_lines() -> str:
  width = max(len(k) for k in config_lib.VARIANT_HELP)
  return "\n".join(f"    {k.ljust(width)}  {v}" for k, v in config_lib.VARIANT_HELP.items())


__doc__ = __doc__.format(variants=_variant_lines())  # pylint: disable=redefined-builtin

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, optionally with :variants.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and reports go.")
_TRACEBACK = flags.DEFINE_bool("traceback", False, "On an error, show the Python traceback.")
_FORCE = flags.DEFINE_bool(
    "force_config_change", False,
    "Resume even though fields that shape the train state or the data order changed.")
flags.mark_flags_as_required(["config", "workdir"])

USAGE_ERROR = 2  # What argparse and the launcher exit with on bad input.


class _QuietLibraries(std_logging.Filter):
  """Orbax and TFDS log every file they touch at INFO; keep their warnings only."""

  def filter(self, record):
    noisy = "/orbax/" in record.pathname or "/tensorflow_datasets/" in record.pathname
    return not noisy or record.levelno >= std_logging.WARNING


def _wants_traceback(argv) -> bool:
  # Read before flag parsing succeeds, since the parse itself may be what failed.
  return any(a in ("--traceback", "--traceback=true", "--traceback=1") for a in argv)


def _last_line(text: str) -> str:
  # config_flags folds a config file's own error, traceback and all, into its message: the
  # last line is that error ("ValueError: bad config argument 'lnr=0': ...").
  line = text.strip().splitlines()[-1].strip()
  for prefix in ("ValueError: ", "TypeError: ", "KeyError: ", "OSError: "):
    line = line.removeprefix(prefix)
  return line


def _config_flag(argv, field: str) -> str:
  for a in argv:
    path = a.partition("=")[0]
    if path.startswith("--config.") and field in path.split(".")[1:]:
      return path
  return "--config." + field


def _short_message(error: Exception, argv) -> str:
  """One line naming the flag or field at fault, for the errors config_flags and absl raise."""
  if isinstance(error, AttributeError) and isinstance(error.__context__, KeyError):
    # A misspelt `--config.a.b`: ConfigDict's KeyError reads "'lrr'\nDid you mean "lr" ...?".
    lines = str(error.__context__.args[0]).splitlines()
    field = lines[0].strip("'\"")
    hint = " ".join(lines[1:]) or "alexnet_jax/config.py lists the fields."
    return f"{_config_flag(argv, field)}: the config has no field {field!r}. {hint}"
  if isinstance(error, OSError):  # A missing config file, reported when first touched.
    return f"--config: {_last_line(str(error))}"
  return _last_line(str(error))


def _parse_flags(argv):
  """absl's flag parsing, but a bad flag or config ends like every other input error here."""
  try:
    try:
      argv = flags.FLAGS(argv)
    except SystemExit:
      # absl's help flags print the help and exit with 1; asking for help is no failure.
      if any(a.split("=")[0] in ("--help", "-help", "-h", "-?", "--helpshort", "--helpfull",
                                 "--helpxml") for a in argv[1:]):
        sys.exit(0)
      raise
    config = _CONFIG.value
    if config is not None:
      config.keys()  # config_flags defers a missing file's error to the first access.
      config_lib.validate(config)
    return argv
  except (flags.Error, ValueError, TypeError, AttributeError, OSError) as e:
    if _wants_traceback(argv):
      raise
    sys.stderr.write(f"error: {_short_message(e, argv)}\n")
    sys.exit(USAGE_ERROR)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  std_logging.getLogger("absl").addFilter(_QuietLibraries())
  from alexnet_jax import train  # Here, not at the top: --help must not wait for JAX.
  from alexnet_jax.checkpoint import CheckpointError
  from alexnet_jax.workdir import WorkdirError

  try:
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                             force_config_change=_FORCE.value)
  except config_lib.ConfigError as e:  # Found only against the data (e.g. num_classes).
    if _TRACEBACK.value:
      raise
    logging.error("Config error: %s", e)
    sys.exit(USAGE_ERROR)
  except (WorkdirError, CheckpointError) as e:
    if _TRACEBACK.value:
      raise
    logging.error("%s", e)
    sys.exit(1)
  except train.Interrupted as e:
    logging.warning("%s", e)
    sys.exit(e.exit_code)


def run():
  """The program's start: the CPU XLA default goes in before anything can start JAX."""
  alexnet_jax.use_default_xla_flags()
  # absl prints __main__'s docstring for --help; the `alexnet-train` script has none of its own.
  sys.modules["__main__"].__doc__ = __doc__
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
