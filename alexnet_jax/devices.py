"""Which GPU(s) each run of a local sweep gets, decided without starting JAX.

`launch --parallel=N` keeps N runs going, each in its own process. On a machine with GPUs
those processes would otherwise all see every GPU, each JAX process would preallocate 75% of
the first one's memory, and the second would fail to start. So the launcher gives each child
an environment:

  no GPU visible, or N = 1   the launcher's own environment, unchanged;
  at least N GPUs            each run its own GPU(s): CUDA_VISIBLE_DEVICES set to one share
                             of len(gpus) // N of them (a run's data axis takes them all);
  fewer GPUs than N runs     runs share GPUs round-robin, each capped at its share of the
                             memory (XLA_PYTHON_CLIENT_MEM_FRACTION) and allocating on
                             demand (XLA_PYTHON_CLIENT_PREALLOCATE=false): many small
                             Fashion-MNIST runs can then fill one GPU.

Variables the user set themselves are kept (an explicit memory fraction wins).
GPUs are read off CUDA_VISIBLE_DEVICES when set, else off `nvidia-smi -L`: initialising JAX
in the launcher would itself take GPU memory and fix the devices for good.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from typing import Iterable, Mapping

# Memory left to the driver, cuDNN workspaces and fragmentation when runs share a GPU.
SHARED_MEMORY_HEADROOM = 0.9


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
  """Ids of the GPUs a child may use (as CUDA_VISIBLE_DEVICES would name them); [] if none."""
  environ = os.environ if environ is None else environ
  listed = environ.get("CUDA_VISIBLE_DEVICES")
  if listed is not None:
    ids = [d.strip() for d in listed.split(",") if d.strip()]
    # CUDA stops at the first invalid entry; "-1" is the usual way to hide every GPU.
    return [] if not ids or ids[0].startswith("-") else ids
  try:
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
  except (OSError, subprocess.SubprocessError):
    return []
  if out.returncode != 0:
    return []
  return [m.group(1) for m in re.finditer(r"^GPU (\d+):", out.stdout, re.M)]


def child_env(slot: int, parallel: int, devices: list[str],
              base: Mapping[str, str] | None = None) -> dict[str, str] | None:
  """Environment of the run in `slot` (0..parallel-1); None means "inherit unchanged"."""
  if not 0 <= slot < parallel:
    raise ValueError(f"slot {slot} is outside 0..{parallel - 1}")
  if not devices or parallel == 1:
    return None
  env = dict(os.environ if base is None else base)
  if len(devices) >= parallel:
    share = len(devices) // parallel
    env["CUDA_VISIBLE_DEVICES"] = ",".join(devices[slot * share:(slot + 1) * share])
    return env
  env["CUDA_VISIBLE_DEVICES"] = devices[slot % len(devices)]
  sharing = math.ceil(parallel / len(devices))  # Runs on the busiest GPU.
  env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION",
                 f"{math.floor(100 * SHARED_MEMORY_HEADROOM / sharing) / 100:.2f}")
  env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  return env


class DeviceSlots:
  """Hands each started run a free slot (and so its GPU share); a slot frees when its run
  is no longer among the running ones."""

  def __init__(self, parallel: int, devices: list[str] | None = None):
    self.parallel = parallel
    self.devices = visible_gpus() if devices is None and parallel > 1 else (devices or [])
    self.slots: dict[str, int] = {}

  def env_for(self, name: str, running: Iterable[str]) -> dict[str, str] | None:
    running = set(running)
    self.slots = {k: v for k, v in self.slots.items() if k in running}
    slot = min(set(range(self.parallel)) - set(self.slots.values()))
    self.slots[name] = slot
    return child_env(slot, self.parallel, self.devices)
