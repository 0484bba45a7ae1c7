"""Reliability: what a crash, a signal, a damaged checkpoint or a second run does to a workdir.

Unit-level cases (config checks, the workdir lock, config history, checkpoint damage) run
without training; the end-to-end ones train the tiny net of test_train.py.
"""

from __future__ import annotations

import pytest

from alexnet_jax import config as config_lib


@pytest.mark.parametrize("field", ["log_every_steps", "checkpoint_every_steps", "keep_checkpoints"])
def test_counters_below_one_are_config_errors(field):
  c = config_lib.base_config()
  c[field] = 0
  with pytest.raises(config_lib.ConfigError, match=f"config.{field}=0"):
    config_lib.validate(c)
  c[field] = 1
  config_lib.validate(c)
