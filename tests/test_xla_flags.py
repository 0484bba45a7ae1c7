"""The package's default XLA:CPU flags: set only when the user set none, and effective."""

import os
import subprocess
import sys

import pytest

PROBE = """
import os, alexnet_jax, jax, jax.numpy as jnp
conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
    x, w, (4, 4), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")))
hlo = conv.lower(jnp.ones((1, 23, 23, 3)), jnp.ones((11, 11, 3, 8))).compile().as_text()
print(repr(os.environ.get("XLA_FLAGS")), alexnet_jax.DEFAULT_XLA_FLAGS_SET is not None,
      "__ynn_fusion" in hlo)
"""


def _probe(env_updates):
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", "ALEXNET_JAX_DEFAULT_XLA_FLAGS")}
  env.update(env_updates)
  env["JAX_PLATFORMS"] = "cpu"
  out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  return out.stdout.strip().splitlines()[-1]


def test_default_flags_take_convolutions_out_of_ynnpack():
  import alexnet_jax
  line = _probe({})
  assert line == f"{alexnet_jax.CPU_XLA_FLAGS!r} True False"


def test_users_xla_flags_are_left_alone():
  line = _probe({"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"})
  assert line.startswith("'--xla_cpu_enable_fast_math=false' False")


def test_opt_out():
  line = _probe({"ALEXNET_JAX_DEFAULT_XLA_FLAGS": "0"})
  assert line.startswith("None False")


def test_too_late_once_a_backend_runs():
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", "ALEXNET_JAX_DEFAULT_XLA_FLAGS")}
  code = ("import jax; jax.numpy.ones(1).block_until_ready(); import os, alexnet_jax; "
          "print(alexnet_jax.DEFAULT_XLA_FLAGS_SET, os.environ.get('XLA_FLAGS'))")
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
  assert out.stdout.strip().splitlines()[-1] == "None None"
