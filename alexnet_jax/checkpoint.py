"""Checkpoints: the train state as arrays plus the host-side state as JSON, via orbax.

Orbax writes each step into a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous checkpoint as the latest one; `restore` then ignores the
unfinished directory. Restoring takes an abstract target whose shardings say where each array
goes, which is what lets a checkpoint written on one mesh be read on another.
The training data iterator's position is a third item, `data`, written by grain's own orbax
handler (one small JSON file per process), so a resumed run continues at the very batch.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores `(TrainState, host_state_dict)` pairs under `directory`."""

  def __init__(self, directory: str, *, keep: int = 2, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, host_state: dict, *, force: bool = False,
           data_iterator: Any = None) -> bool:
    """Saves unless this step is already on disk (an epoch end and a SIGTERM can coincide).

    `data_iterator`: a grain DatasetIterator whose position is saved with the state.
    """
    if self._manager.latest_step() == int(step):
      return False
    items = {"state": ocp.args.StandardSave(state), "host": ocp.args.JsonSave(host_state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    return self._manager.save(int(step), args=ocp.args.Composite(**items), force=force)

  def restore(self, abstract_state: Any, step: int | None = None, data_iterator: Any = None):
    """Returns (state, host_state) of `step` (default: latest), or None if there is none.

    `abstract_state` is a pytree of `jax.ShapeDtypeStruct` (with `.sharding`) or of arrays
    whose shapes, dtypes and shardings the restored arrays should take. `data_iterator`, if
    given, is moved to the position saved with that step.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    target = jax.tree.map(_as_abstract, abstract_state)
    items = {"state": ocp.args.StandardRestore(target), "host": ocp.args.JsonRestore()}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], restored["host"]

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def _as_abstract(x):
  if isinstance(x, jax.ShapeDtypeStruct):
    return x
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
