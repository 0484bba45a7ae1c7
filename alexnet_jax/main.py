r"""Command line: train one config in one workdir.

    python -m alexnet_jax.main --config=configs/small_fashion_mnist.py --workdir=runs/fmnist
    python -m alexnet_jax.main --config=configs/alexnet_imagenet.py:lrn=0 --workdir=runs/no_lrn \
        --config.batch_size=256 --config.optim.lr=0.02

Any config field can be overridden with --config.<path>=<value>; rerunning the same command
resumes from the workdir's latest checkpoint.
"""

import logging as std_logging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from alexnet_jax import train
from alexnet_jax.checkpoint import CheckpointError
from alexnet_jax.config import ConfigError
from alexnet_jax.workdir import WorkdirError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, optionally with :args.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and reports go.")
_FORCE = flags.DEFINE_bool(
    "force_config_change", False,
    "Resume even though fields that shape the train state or the data order changed.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(std_logging.Filter):
  """Orbax and TFDS log every file they touch at INFO; keep their warnings only."""

  def filter(self, record):
    noisy = "/orbax/" in record.pathname or "/tensorflow_datasets/" in record.pathname
    return not noisy or record.levelno >= std_logging.WARNING


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  std_logging.getLogger("absl").addFilter(_QuietLibraries())
  try:
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                             force_config_change=_FORCE.value)
  except ConfigError as e:
    logging.error("Config error: %s", e)
    sys.exit(2)
  except (WorkdirError, CheckpointError) as e:
    logging.error("%s", e)
    sys.exit(1)
  except train.Interrupted as e:
    logging.warning("%s", e)
    sys.exit(e.exit_code)


def run():
  app.run(main)


if __name__ == "__main__":
  run()
