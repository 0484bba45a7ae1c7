"""Who owns a workdir, which configs have trained in it, and whether its run is finished.

- `WorkdirLock`: an exclusive `fcntl.flock` on `<workdir>/.lock`. The kernel drops it when
  the process dies, however it dies, so a SIGKILL never leaves a stale lock; the file names
  the holder (pid, host, start time) for the refusal message of a second run.
- `record_config`: compares the config of a resumed run with the one the checkpoints were
  trained with, refuses changes to fields that shape the train state or the data order
  (unless forced), and appends every accepted config to `config_history.jsonl`, so
  `config.json` (the current config) never erases the earlier record.
- `read_final`: `final.json` if it is readable as a record, else None (with a warning when
  the file exists but is damaged, so that a sweep reruns rather than skips it).
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket

from absl import logging

from alexnet_jax import config as config_lib
from alexnet_jax import files

LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"
FINAL_FILE = "final.json"

# Fields a resumed run may change: they touch neither the checkpointed state's structure nor
# which examples come in which order. Everything else (the model, the optimizer's form, the
# seed, the batch size, every data field not listed, and fields added later) is refused, so
# a new field is safe by default until someone decides it may change mid-run.
MAY_CHANGE = frozenset({
    "num_epochs", "max_steps", "log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
    "eval_batch_size", "eval_every_epochs", "eval_train", "optim.lr", "optim.weight_decay",
    "optim.plateau_factor", "optim.plateau_patience", "optim.plateau_min_delta",
    "optim.plateau_max_drops", "optim.step_epochs", "optim.warmup_epochs",
    "optim.plateau_threshold",
    # How many threads or worker processes make the batches does not change them (tested).
    "data.data_dir", "data.manual_dir", "data.cache", "data.prefetch", "data.threads",
    "data.workers", "data.eval_crops", "data.val_crops", "data.test_split",
})
MAY_CHANGE_PREFIXES = ("mesh.", "distributed.")  # A checkpoint restores onto any mesh.


class WorkdirError(RuntimeError):
  """The workdir cannot be used as asked; the message says why and what to do."""


class WorkdirBusy(WorkdirError):
  """Another live process holds the workdir."""


class WorkdirLock:
  """`with WorkdirLock(workdir):` or `.acquire()`/`.release()`; raises WorkdirBusy if held."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd: int | None = None

  def acquire(self) -> "WorkdirLock":
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.close(fd)
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise
      raise WorkdirBusy(
          f"{os.path.dirname(self.path)} is in use by {self.holder() or 'another process'}; two runs "
          "in one workdir would mix their checkpoints and metrics. Wait for it to end (or stop "
          "it), or pick another --workdir.") from None
    # Ours now: say who holds it. Truncate only after locking, or we would erase the
    # holder's name that a refused second run is about to print.
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                              "since": _now()}).encode(), 0)
    self._fd = fd
    return self

  def holder(self) -> str | None:
    try:
      with open(self.path) as f:
        h = json.load(f)
      return f"pid {h['pid']} on {h['host']} (since {h['since']})"
    except (OSError, ValueError, KeyError, TypeError):
      return None

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)  # Closing the descriptor drops the flock.
      self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def config_changes(old: dict, new: dict) -> tuple[list[str], list[str]]:
  """(refused, allowed): the dotted paths whose values differ, split by `MAY_CHANGE`."""
  changed = list(config_lib.diff(old, new))
  allowed = [k for k in changed if k in MAY_CHANGE or k.startswith(MAY_CHANGE_PREFIXES)]
  return [k for k in changed if k not in allowed], allowed


def _describe(old: dict, new: dict, keys: list[str]) -> str:
  d = config_lib.diff(old, new)
  return ", ".join(f"{k}: {d[k][0]!r} -> {d[k][1]!r}" for k in keys)


def record_config(config_json: dict, workdir: str, *, has_checkpoint: bool,
                  force: bool = False) -> None:
  """Checks `config_json` against the workdir's current config, then records it.

  A change to a field outside `MAY_CHANGE` raises WorkdirError naming the fields, unless
  `force` (then it is logged and recorded as forced). Nothing is written when refused.
  Without a checkpoint there is nothing to be incompatible with, but the history still
  keeps the earlier config.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  old = None
  if os.path.exists(path):
    try:
      with open(path) as f:
        old = json.load(f)
    except ValueError:
      logging.warning("%s is unreadable; its record of the earlier config is lost", path)
  refused, allowed = config_changes(old, config_json) if isinstance(old, dict) else ([], [])
  if refused and has_checkpoint and not force:
    raise WorkdirError(
        f"{workdir} holds checkpoints of a run whose config differs in fields that shape the "
        f"train state or the data order: {_describe(old, config_json, refused)}. Resuming would "
        "mix two runs. Use a new --workdir, or pass --force_config_change to resume anyway.")
  if refused or allowed:
    logging.warning("Config of %s changed%s: %s", workdir,
                    " (forced)" if refused and has_checkpoint else "",
                    _describe(old, config_json, refused + allowed))
  if old is not None and not os.path.exists(os.path.join(workdir, HISTORY_FILE)):
    # A workdir from before the history existed: keep its one record as the first entry.
    _append_history(workdir, {"time": None, "changed": [], "forced": False, "config": old})
  if old is None or refused or allowed:
    _append_history(workdir, {"time": _now(), "host": socket.gethostname(), "pid": os.getpid(),
                              "changed": refused + allowed,
                              "forced": bool(refused and has_checkpoint), "config": config_json})
  files.write_json(path, config_json)


def _append_history(workdir: str, row: dict) -> None:
  with open(os.path.join(workdir, HISTORY_FILE), "a", encoding="utf-8") as f:
    f.write(json.dumps(row, sort_keys=True) + "\n")
    f.flush()
    os.fsync(f.fileno())


def config_history(workdir: str) -> list[dict]:
  path = os.path.join(workdir, HISTORY_FILE)
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def read_final(workdir: str) -> dict | None:
  """The finished run's `final.json`, or None if missing or not a valid record."""
  path = os.path.join(workdir, FINAL_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      final = json.load(f)
  except (OSError, ValueError) as e:
    logging.warning("%s is unreadable (%s); the run is treated as unfinished", path, e)
    return None
  if not isinstance(final, dict):
    logging.warning("%s is not a JSON object; the run is treated as unfinished", path)
    return None
  return final
