"""alexnet-jax: a faithful, ablation-friendly JAX/Flax reproduction of AlexNet (2012).

Importing the package changes nothing outside it (no environment variables, no JAX backend).
The programs (`alexnet_jax.main`, `alexnet_jax.launch`) call `use_default_xla_flags()` as
they start; a library user who wants the same CPU speed-up calls it before JAX starts, or
passes `CPU_COMPILER_OPTIONS` to the executables they compile.
"""

from __future__ import annotations

import os as _os
import sys as _sys

# XLA:CPU hands convolutions to YNNPACK by default; for AlexNet's convs (3-channel
# 11x11/4 conv1, and every weight gradient, which XLA expresses as a conv with a
# 27x27-55x55 window) YNNPACK is 2-4x slower than XLA's own Eigen convolutions, while
# its matmuls are faster than Eigen's. Measured on the paper config's train step (2-core
# Xeon, batch 32, benchmarks/RESULTS.md): 1.4x faster with convolutions taken out of
# YNNPACK. The flag only affects CPU compilation.
CPU_XLA_FLAGS = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
# The same as per-executable options, for `jax.jit(..., compiler_options=...)` or
# `.lower(...).compile(...)`, which do not depend on import order: XLA 0.10's default
# YNNPACK set {individual_dot, individual_convolution, reduce} without the convolutions.
CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type":
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}

# What `use_default_xla_flags` set in this process (None: nothing), for benchmark headers.
DEFAULT_XLA_FLAGS_SET: str | None = None


def _jaxlib_knows_flag() -> bool:
  # XLA aborts the process on an unknown flag; YNNPACK fusions arrived with jaxlib 0.10.
  try:
    from jaxlib import version
    major, minor = (int(p) for p in version.__version__.split(".")[:2])
  except Exception:  # pylint: disable=broad-except
    return False
  return (major, minor) >= (0, 10)


def _backend_started() -> bool:
  if "jax" not in _sys.modules:
    return False
  try:
    from jax._src import xla_bridge
    return bool(xla_bridge.backends_are_initialized())
  except Exception:  # pylint: disable=broad-except
    return True


def use_default_xla_flags() -> str | None:
  """Sets XLA_FLAGS to `CPU_XLA_FLAGS` if that is safe and wanted; returns what it set.

  Only when the user has not set XLA_FLAGS at all (their flags win, untouched), JAX has not
  started a backend yet (XLA reads its flags once) and jaxlib knows the flag;
  ALEXNET_JAX_DEFAULT_XLA_FLAGS=0 turns it off.
  """
  global DEFAULT_XLA_FLAGS_SET
  if _os.environ.get("ALEXNET_JAX_DEFAULT_XLA_FLAGS", "1") == "0":
    return None
  if "XLA_FLAGS" in _os.environ or _backend_started() or not _jaxlib_knows_flag():
    return None
  _os.environ["XLA_FLAGS"] = CPU_XLA_FLAGS
  DEFAULT_XLA_FLAGS_SET = CPU_XLA_FLAGS
  return CPU_XLA_FLAGS
