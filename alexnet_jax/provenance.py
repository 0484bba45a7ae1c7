"""What produced a workdir: code revision, package versions, devices and the command line.

`record(workdir)` appends one entry to `<workdir>/provenance.json` each time training starts
(a resumed run gets a second entry, so a run that was continued under other code says so).
The file is rewritten whole through `files.atomic_write`, never left half-written.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
from importlib import metadata

from alexnet_jax import files

FILE = "provenance.json"
PACKAGES = ("alexnet-jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "ml-collections",
            "numpy", "pillow", "simplejpeg", "tensorflow-datasets", "tensorboardX", "torch")
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
  try:
    out = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10)
  except (OSError, subprocess.SubprocessError):
    return None  # No git here (an installed wheel, a container without it).
  return out.stdout if out.returncode == 0 else None


def git_state() -> dict:
  """{"commit", "dirty", "branch"}: None where the code is not in a git checkout."""
  commit = _git("rev-parse", "HEAD")
  if commit is None:
    return {"commit": None, "dirty": None, "branch": None}
  # Untracked files count: a new module the run imported is as much a change as an edit.
  status = _git("status", "--porcelain")
  branch = _git("rev-parse", "--abbrev-ref", "HEAD")
  return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip()),
          "branch": None if branch is None else branch.strip()}


def package_versions(names=PACKAGES) -> dict[str, str | None]:
  out = {}
  for name in names:
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      out[name] = None
  return out


def device_info() -> dict:
  """Device kind and count as JAX sees them (all processes), and this process's share."""
  import jax  # Deferred: `provenance` is importable for reading without JAX set up.

  devices = jax.devices()
  kinds = sorted({d.device_kind for d in devices})
  return {"backend": jax.default_backend(), "kind": kinds[0] if len(kinds) == 1 else kinds,
          "count": len(devices), "local_count": jax.local_device_count(),
          "process_index": jax.process_index(), "process_count": jax.process_count()}


def collect(argv: list[str] | None = None) -> dict:
  return {
      "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "command": [sys.executable, *(sys.argv if argv is None else argv)],
      "cwd": os.getcwd(),
      "host": platform.node(),
      "python": platform.python_version(),
      "platform": platform.platform(),
      "git": git_state(),
      "packages": package_versions(),
      "devices": device_info(),
  }


def read(workdir: str | os.PathLike) -> list[dict]:
  """The entries recorded so far, oldest first (empty if none or unreadable)."""
  try:
    with open(pathlib.Path(workdir) / FILE) as f:
      data = json.load(f)
  except (OSError, ValueError):
    return []
  return list(data.get("starts", [])) if isinstance(data, dict) else []


def record(workdir: str | os.PathLike, argv: list[str] | None = None) -> dict:
  """Appends this process's provenance to `<workdir>/provenance.json` and returns it."""
  entry = collect(argv)
  files.write_json(pathlib.Path(workdir) / FILE, {"starts": read(workdir) + [entry]})
  return entry
