"""The CPU XLA default: importing the package sets nothing; the programs set it as they start,
only when the user set no XLA_FLAGS, and it takes convolutions out of YNNPACK."""

import os
import subprocess
import sys

import alexnet_jax

# A conv that XLA:CPU does give to YNNPACK by default (a 3-channel 11x11/4 conv1 of this size
# is not, whatever the flags, so it could not show the flag's effect).
CONV = """
import jax, jax.numpy as jnp
conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
    x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")))
lowered = conv.lower(jnp.ones((1, 27, 27, 16)), jnp.ones((5, 5, 16, 32)))
"""
PROBE = """
import os, alexnet_jax
before = os.environ.get("XLA_FLAGS")
alexnet_jax.use_default_xla_flags()
""" + CONV + """
print(repr(before), repr(os.environ.get("XLA_FLAGS")), alexnet_jax.DEFAULT_XLA_FLAGS_SET is not None,
      "__ynn_fusion" in lowered.compile().as_text())
"""


def _run(code, env_updates=None):
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", "ALEXNET_JAX_DEFAULT_XLA_FLAGS")}
  env.update(env_updates or {})
  env["JAX_PLATFORMS"] = "cpu"
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  return out.stdout.strip().splitlines()[-1]


def test_importing_the_package_changes_no_environment_variable():
  code = ("import os; before = dict(os.environ)\n"
          "import alexnet_jax, alexnet_jax.main, alexnet_jax.launch, alexnet_jax.metrics\n"
          "print(sorted(set(os.environ.items()) ^ set(before.items())))")
  assert _run(code) == "[]"


def test_default_flags_take_convolutions_out_of_ynnpack():
  # Without the flag, XLA:CPU does hand this convolution to YNNPACK (the control).
  assert _run(CONV + "print('__ynn_fusion' in lowered.compile().as_text())") == "True"
  assert _run(PROBE) == f"None {alexnet_jax.CPU_XLA_FLAGS!r} True False"


def test_compiler_options_do_the_same_per_executable():
  code = CONV + ("import alexnet_jax\n"
                 "print('__ynn_fusion' in lowered.compile(alexnet_jax.CPU_COMPILER_OPTIONS).as_text())")
  assert _run(code) == "False"


def test_users_xla_flags_are_left_alone():
  line = _run(PROBE, {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"})
  assert line.startswith("'--xla_cpu_enable_fast_math=false' '--xla_cpu_enable_fast_math=false' False")


def test_opt_out():
  assert _run(PROBE, {"ALEXNET_JAX_DEFAULT_XLA_FLAGS": "0"}) == "None None False True"


def test_too_late_once_a_backend_runs():
  code = ("import jax; jax.numpy.ones(1).block_until_ready(); import os, alexnet_jax; "
          "print(alexnet_jax.use_default_xla_flags(), os.environ.get('XLA_FLAGS'))")
  assert _run(code) == "None None"


def test_the_programs_set_it_as_they_start():
  # The entry points of `python -m alexnet_jax.main` / `alexnet-train` and of the launcher,
  # stopped just before they would parse flags and train.
  code = ("import os, sys, absl.app, alexnet_jax.main, alexnet_jax.launch\n"
          "absl.app.run = lambda *a, **k: None\n"
          "alexnet_jax.main.run(); main_flags = os.environ.pop('XLA_FLAGS', None)\n"
          "alexnet_jax.launch.main = lambda *a, **k: 0\n"
          "try:\n  alexnet_jax.launch.run()\nexcept SystemExit:\n  pass\n"
          "print(main_flags == os.environ.get('XLA_FLAGS') == alexnet_jax.CPU_XLA_FLAGS)")
  assert _run(code) == "True"
