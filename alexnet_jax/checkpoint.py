"""Checkpoints: the train state as arrays plus the host-side state as JSON, via orbax.

Orbax writes each step into a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous checkpoint as the latest one; `restore` then ignores the
unfinished directory. Restoring takes an abstract target whose shardings say where each array
goes, which is what lets a checkpoint written on one mesh be read on another.

Damage after the save (a truncated or overwritten file, a lost folder) is caught by a digest:
once orbax has finished a step, the SHA-256 of every file in it goes to `<step>/digest.json`.
`restore` walks back from the newest step to the newest intact one, moving each damaged step
aside to `<directory>.damaged/` (renamed, never deleted) with one log line. A step without a
digest (written by an older version, or killed between orbax's rename and the digest) is
trusted if orbax can read it. A step whose digest matches but which does not fit the target
is not damage but a config mismatch, and raises.

The training data iterator's position is a third item, `data`, written by grain's own orbax
handler (one small JSON file per process), so a resumed run continues at the very batch.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import os
import shutil
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging

DIGEST_FILE = "digest.json"


class CheckpointError(RuntimeError):
  """A checkpoint could not be written or read; the message names the path and the fix."""


class Checkpointer:
  """Saves and restores `(TrainState, host_state_dict)` pairs under `directory`."""

  def __init__(self, directory: str, *, keep: int = 2, async_save: bool = True):
    if keep < 1:
      raise ValueError(f"keep={keep}: at least one checkpoint must be kept")
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    self._undigested: set[int] = set()

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, host_state: dict, *, force: bool = False,
           data_iterator: Any = None) -> bool:
    """Starts saving `step` unless it is already on disk (an epoch end and a signal can coincide).

    Returns whether a save was started; with async saving it is on disk after `wait()`.
    `data_iterator`: a grain DatasetIterator whose position is saved with the state.
    """
    if self._manager.latest_step() == int(step):
      return False
    self._finish_pending()  # Orbax would wait for the previous save here anyway.
    with _disk_errors(self.directory):
      items = {"state": ocp.args.StandardSave(state), "host": ocp.args.JsonSave(host_state)}
      if data_iterator is not None:
        items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
      started = self._manager.save(int(step), args=ocp.args.Composite(**items), force=force)
    if started:
      self._undigested.add(int(step))
    return started

  def on_disk(self, step: int) -> bool:
    """Whether `step` is a finished checkpoint in the directory (not just a save in flight)."""
    self._manager.reload()
    return os.path.isdir(os.path.join(self.directory, str(int(step)))) and \
        int(step) in self._manager.all_steps()

  def restore(self, abstract_state: Any, step: int | None = None, data_iterator: Any = None):
    """Returns (state, host_state) of the newest intact step (or of `step`), or None if none.

    `abstract_state` is a pytree of `jax.ShapeDtypeStruct` (with `.sharding`) or of arrays
    whose shapes, dtypes and shardings the restored arrays should take.
    """
    target = jax.tree.map(_as_abstract, abstract_state)
    self._manager.reload()
    steps = [step] if step is not None else sorted(self._manager.all_steps(), reverse=True)
    for s in steps:
      verdict = _agree(verify(os.path.join(self.directory, str(s))))
      if verdict == "damaged":
        self._set_aside(s, "its files do not match its digest")
        continue
      try:
        items = {"state": ocp.args.StandardRestore(target), "host": ocp.args.JsonRestore()}
        if data_iterator is not None:  # moved to the position saved with this step
          items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self._manager.restore(s, args=ocp.args.Composite(**items))
      except Exception as e:  # noqa: BLE001 - orbax raises many types for unreadable files.
        if verdict == "intact":
          raise CheckpointError(
              f"checkpoint {self.directory}/{s} is intact but does not fit this run "
              f"({type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}); was the "
              "model or optimizer config changed? Use the workdir's config.json.") from None
        self._set_aside(s, f"orbax cannot read it ({type(e).__name__})")
        continue
      return restored["state"], restored["host"]
    return None

  def _set_aside(self, step: int, why: str) -> None:
    src = os.path.join(self.directory, str(step))
    dst = os.path.join(f"{self.directory}.damaged",
                       f"{step}-{datetime.datetime.now():%Y%m%dT%H%M%S}")
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(dst), exist_ok=True)
      os.replace(src, dst)
    _barrier(f"set_aside_{step}")
    self._manager.reload()
    logging.warning("Checkpoint step %d in %s is damaged (%s); moved it to %s and falling back "
                    "to the previous one", step, self.directory, why, dst)

  def _finish_pending(self) -> None:
    with _disk_errors(self.directory):
      self._manager.wait_until_finished()
    done, self._undigested = self._undigested, set()
    if jax.process_index() != 0:
      return
    for s in sorted(done):
      path = os.path.join(self.directory, str(s))
      if os.path.isdir(path):  # Orbax may already have deleted it (max_to_keep).
        with _disk_errors(self.directory):
          write_digest(path)

  def wait(self) -> None:
    self._finish_pending()

  def close(self) -> None:
    try:
      self._finish_pending()
    finally:
      self._manager.close()


def _digests(path: str) -> dict[str, str]:
  out = {}
  for root, dirs, names in os.walk(path):
    dirs.sort()
    for name in sorted(names):
      full = os.path.join(root, name)
      rel = os.path.relpath(full, path)
      if rel in (DIGEST_FILE, f".{DIGEST_FILE}.tmp"):
        continue
      with open(full, "rb") as f:
        out[rel] = hashlib.file_digest(f, "sha256").hexdigest()
  return out


def write_digest(path: str) -> None:
  digests = _digests(path)
  tmp = os.path.join(path, f".{DIGEST_FILE}.tmp")
  with open(tmp, "w") as f:
    json.dump({"sha256": digests}, f, indent=1, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, os.path.join(path, DIGEST_FILE))


def verify(path: str) -> str:
  """'intact', 'damaged' or 'unverified' (no digest, or the digest itself is unreadable)."""
  if not os.path.isdir(path):
    return "damaged"
  digest_path = os.path.join(path, DIGEST_FILE)
  if not os.path.exists(digest_path):
    return "unverified"
  try:
    with open(digest_path) as f:
      expected = json.load(f)["sha256"]
  except (OSError, ValueError, KeyError, TypeError):
    return "damaged"  # Written last and atomically: unreadable means damaged after the fact.
  try:
    actual = _digests(path)
  except OSError:
    return "damaged"
  # Orbax may add files after its own finalisation (none today); only the listed ones count.
  return "intact" if all(actual.get(k) == v for k, v in expected.items()) else "damaged"


def _agree(verdict: str) -> str:
  """Every process must take the same branch of `restore`, or the collective restore hangs."""
  if jax.process_count() == 1:
    return verdict
  from jax.experimental import multihost_utils
  import numpy as np

  order = ("intact", "unverified", "damaged")
  worst = multihost_utils.process_allgather(np.int32(order.index(verdict)))
  return order[int(np.max(worst))]


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


class _disk_errors:
  """Turns a full disk into one line naming the path and the free space."""

  def __init__(self, directory: str):
    self.directory = directory

  def __enter__(self):
    return self

  def __exit__(self, kind, exc, tb):
    if exc is None:
      return False
    cause = exc
    while cause is not None and not (isinstance(cause, OSError) and cause.errno in (
        errno.ENOSPC, errno.EDQUOT)):
      cause = cause.__cause__ or cause.__context__
    if cause is None:
      return False
    try:
      free = f"{shutil.disk_usage(self.directory).free / 2**20:.0f} MiB free"
    except OSError:
      free = "free space unknown"
    raise CheckpointError(f"cannot write checkpoint in {self.directory}: {os.strerror(cause.errno)} "
                          f"({free}); free some space and rerun the same command to resume") from None


def _as_abstract(x):
  if isinstance(x, jax.ShapeDtypeStruct):
    return x
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
