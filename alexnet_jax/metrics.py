"""Where training results go: `metrics.jsonl`, TensorBoard events and the console.

`metrics.jsonl` is the record the reports are built from (row format in docs/DESIGN.md);
TensorBoard gets the same numbers as scalars for live viewing. Each row is flushed as it
is written so that a run killed mid-epoch keeps everything it logged, and `read_metrics`
accepts the half-written line such a kill can leave behind.

TensorBoard events are written with tensorboardX (no TensorFlow needed), and each run's
config goes with them as hyper-parameters for the HParams view.
"""

from __future__ import annotations

import itertools
import json
import logging as std_logging
import math
import os
import shutil
import sys
import time
from typing import Any, Callable, TextIO

from absl import logging

from alexnet_jax import files

METRICS_FILE = "metrics.jsonl"
TB_DIR = "tb"
_KINDS = ("train", "train_epoch", "train_eval", "val", "test")
_file_ids = itertools.count()


def _plain(value: Any, key: str):
  """Turns NumPy/JAX scalars into the Python values `json` understands."""
  if value is None or isinstance(value, (str, bool, int, float)):
    return value
  if isinstance(value, dict):
    return {k: _plain(v, f"{key}.{k}") for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v, key) for v in value]
  if hasattr(value, "item") and getattr(value, "size", 1) == 1:
    return value.item()
  raise TypeError(
      f"metric {key!r} has a value of type {type(value).__name__} that is not a scalar; "
      "log scalars (reduce arrays first).")


def _is_scalar(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _repair(path: str, drop_after_step: int | None,
            drop_at_step: frozenset[str] = frozenset({"test"})) -> None:
  """Makes `path` safe to append to.

  A killed run can leave a last line without its newline; appending to it would glue the
  next row onto the fragment and corrupt both. With `drop_after_step` (a resume from a
  checkpoint at that step), rows logged after the checkpoint are removed, since the resumed
  run logs those steps again.
  """
  if not os.path.exists(path):
    return
  with open(path, "rb") as f:
    data = f.read()
  lines = data.split(b"\n")
  complete, tail = lines[:-1], lines[-1]  # `tail` is b"" when the file ends with "\n".
  if drop_after_step is None:
    if tail:
      with open(path, "r+b") as f:
        f.truncate(len(data) - len(tail))
    return
  keep = []
  for line in complete:
    try:
      row = json.loads(line)
    except ValueError:
      continue
    # Rows of the kinds `drop_at_step` at the checkpoint's step itself were logged after the
    # save (a final evaluation the killed run began) or would not exist in an uninterrupted
    # run (an early stop's partial train row); the resumed run writes what belongs there.
    step = row.get("step", 0)
    if step < drop_after_step or (step == drop_after_step and row.get("kind") not in drop_at_step):
      keep.append(line + b"\n")
  with files.atomic_write(path, binary=True) as f:
    f.writelines(keep)


def hparams(config) -> dict[str, str | float | bool]:
  """A config's fields as TensorBoard hyper-parameters: {"optim.lr": 0.01, ...}.

  The HParams view takes numbers, text and booleans only, so tuples become their text and
  unset (None) fields are left out.
  """
  items = config.to_dict().items() if hasattr(config, "to_dict") else config.items()
  out = {}
  for key, value in items:
    if isinstance(value, dict) or hasattr(value, "to_dict"):
      out.update({f"{key}.{k}": v for k, v in hparams(value).items()})
    elif isinstance(value, (str, bool, int, float)):
      out[key] = value
    elif value is not None:
      out[key] = str(value)
  return out


class _EventFile:
  """One TensorBoard event file in `logdir`: the run's hyper-parameters, then its scalars.

  tensorboardX writes the files without TensorFlow; it is imported here so that readers of
  metrics.jsonl never pay for it.
  """

  def __init__(self, logdir: str, hyper: dict | None):
    from tensorboardX import SummaryWriter
    from tensorboardX.summary import hparams as hparams_summaries

    # A new file per writer (TensorBoard merges all files of a directory); the pid and
    # counter keep a resume within the same second, and tests, from overwriting a file.
    self._writer = SummaryWriter(logdir, flush_secs=10,
                                 filename_suffix=f".{os.getpid()}.{next(_file_ids)}")
    if hyper:
      # Only the session's start: with no experiment summary TensorBoard infers the sweep's
      # hyper-parameters and metrics from all its runs (and marks those that differ), and no
      # end record means no run is shown as finished that crashed.
      _, start, _ = hparams_summaries(hyper, {})
      self._writer.file_writer.add_summary(start)
    self._writer.flush()

  def scalars(self, step: int, values: dict[str, float]) -> None:
    for tag, value in values.items():
      self._writer.add_scalar(tag, value, int(step))
    self._writer.flush()  # A killed run keeps what it logged.

  def restart(self, step: int) -> None:
    """Tells TensorBoard that the run restarted at `step`: it drops the points of earlier files
    at `step` and later (orphans of a killed run), as it does for TensorFlow's own restarts."""
    from tensorboardX.proto.event_pb2 import Event, SessionLog
    self._writer.file_writer.add_event(
        Event(wall_time=time.time(), step=int(step), session_log=SessionLog(status=SessionLog.START)))
    self._writer.flush()

  def close(self):
    self._writer.close()


class MetricWriter:
  """Writes metric rows to `workdir/metrics.jsonl` and TensorBoard (`workdir/tb/`).

  Rows are dicts with at least "kind" (train/train_epoch/train_eval/val/test) and "step". Every
  numeric field also goes to TensorBoard as the scalar f"{kind}/{key}" at `step`; rows of
  a multi-view evaluation (crops other than "center") use f"{kind}_{crops}/{key}" so the
  center and ten-crop test results of the same step do not overwrite each other.

  `config` (a ConfigDict or nested dict) is written as the run's hyper-parameters, so that
  TensorBoard's HParams view can filter and compare the runs of a sweep.

  With `enabled=False` (every process but 0 in a multi-host run) nothing is created or
  written. `drop_after_step`, for resumed runs, removes rows logged after the checkpoint
  being resumed so the file reads like one uninterrupted run.
  """

  def __init__(self, workdir: str, *, enabled: bool = True, drop_after_step: int | None = None,
               drop_at_step: frozenset[str] = frozenset({"test"}), config=None):
    self.workdir = workdir
    self.enabled = enabled
    self._file: TextIO | None = None
    self._events: _EventFile | None = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, METRICS_FILE)
    _repair(path, drop_after_step, drop_at_step)
    self._file = open(path, "a", encoding="utf-8")
    self._events = _EventFile(os.path.join(workdir, TB_DIR),
                              None if config is None else hparams(config))
    if drop_after_step is not None:
      self._events.restart(drop_after_step if drop_at_step - {"test"} else drop_after_step + 1)

  def write(self, row: dict) -> None:
    if not self.enabled:
      return
    if self._file is None:
      raise RuntimeError("MetricWriter.write after close()")
    for required in ("kind", "step"):
      if required not in row:
        raise ValueError(f"metric row needs a {required!r} field, got keys {sorted(row)}")
    if row["kind"] not in _KINDS:
      raise ValueError(f"metric row kind {row['kind']!r} is not one of {_KINDS}")
    row = {k: _plain(v, k) for k, v in row.items()}
    self._file.write(json.dumps(row) + "\n")
    self._file.flush()

    prefix = row["kind"]
    if row.get("crops") not in (None, "center"):
      prefix = f"{prefix}_{row['crops']}"
    scalars = {f"{prefix}/{k}": float(v) for k, v in row.items()
               if k not in ("kind", "step") and _is_scalar(v)}
    if scalars:
      self._events.scalars(row["step"], scalars)

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._events is not None:
      self._events.close()
      self._events = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def read_metrics(workdir: str, kind: str | None = None) -> list[dict]:
  """Rows of `workdir/metrics.jsonl` in order (optionally only those of one kind).

  A missing file gives []. An unreadable last line (a run killed mid-write) is dropped
  silently; an unreadable line elsewhere is skipped with a warning, since one bad row
  should not make a whole run's record unusable.
  """
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8", errors="replace") as f:
    lines = f.read().split("\n")
  rows = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except ValueError:
      if any(l.strip() for l in lines[i + 1:]):
        logging.warning("%s:%d: skipping unreadable metrics row %r", path, i + 1, line[:80])
      continue
    if kind is None or row.get("kind") == kind:
      rows.append(row)
  return rows


def _fmt_duration(seconds: float) -> str:
  if not math.isfinite(seconds) or seconds < 0:
    return "?"
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}"


def _fmt_value(key: str, v) -> str:
  if key.endswith("_err") and _is_scalar(v):  # Errors read as percentages everywhere.
    return f"{100 * v:.2f}%"
  if isinstance(v, float):
    return f"{v:.4g}"
  return str(v)


class _ClearBar(std_logging.Filter):
  """Erases the progress bar before a log handler writes, so the record starts its own line."""

  def __init__(self, progress: "Progress"):
    super().__init__()
    self._progress = progress

  def filter(self, record):
    self._progress.clear()
    return True


class Progress:
  """Console progress: a bar redrawn in place on a terminal, plain log lines otherwise.

  `update(step, **scalars)` reports that `step` steps are done. img/s is the
  `images_per_sec` scalar when given (the number metrics.jsonl gets, so the two agree),
  else measured since the previous update; the ETA uses the mean rate since the first
  update, which keeps the first step's compilation out of it. Pass `steps_per_epoch` (or
  an `epoch` scalar) to show the epoch. Scalars named `*_err` show as percentages. While a
  bar is on screen, log records first erase it (then it is redrawn on the next update), so
  a log line never continues the bar's line. `stream`, `interactive` and `clock` exist
  for tests.
  """

  def __init__(self, total_steps: int, start_step: int, batch_size: int, *,
               steps_per_epoch: int | None = None, stream: TextIO | None = None,
               interactive: bool | None = None, min_redraw_s: float = 0.1,
               clock: Callable[[], float] = time.monotonic):
    self.total_steps = int(total_steps)
    self.batch_size = int(batch_size)
    self.steps_per_epoch = steps_per_epoch
    self._stream = stream if stream is not None else sys.stderr
    if interactive is None:
      isatty = getattr(self._stream, "isatty", None)
      interactive = bool(isatty and isatty())
    self.interactive = interactive
    self._min_redraw_s = min_redraw_s
    self._clock = clock
    self._start = (start_step, clock())
    self._first = None  # (step, time) of the first update: the ETA's baseline.
    self._last = self._start
    self._last_draw = -math.inf
    self._drawn = False
    self._handlers = []
    if interactive:
      self._filter = _ClearBar(self)
      self._handlers = list(std_logging.getLogger().handlers)
      for h in self._handlers:
        h.addFilter(self._filter)

  def line(self, step: int, **scalars) -> str:
    """The text of one progress report (also what the log lines contain)."""
    now = self._clock()
    last_step, last_t = self._last
    # Until a second report exists the only rate available includes compilation.
    first_step, first_t = self._first or self._start
    if self._first is None:
      self._first = (step, now)
    self._last = (step, now)
    parts = [f"step {step}/{self.total_steps}"
             f" ({100.0 * step / max(self.total_steps, 1):.1f}%)"]
    epoch = scalars.pop("epoch", None)
    if epoch is None and self.steps_per_epoch:
      epoch = step / self.steps_per_epoch
    if epoch is not None:
      parts.append(f"epoch {epoch:.2f}")
    ips = scalars.pop("images_per_sec", None)
    dt = now - last_t
    if ips is None and dt > 0 and step > last_step:
      ips = (step - last_step) * self.batch_size / dt
    if ips is not None:
      parts.append(f"{ips:.0f} img/s")
    elapsed = now - first_t
    done = step - first_step
    eta = (self.total_steps - step) * elapsed / done if done > 0 and elapsed > 0 else math.nan
    parts.append(f"ETA {_fmt_duration(eta)}")
    if scalars:
      parts.append(" ".join(f"{k} {_fmt_value(k, v)}" for k, v in scalars.items()))
    return " | ".join(parts)

  def update(self, step: int, **scalars) -> None:
    if not self.interactive:
      logging.info("%s", self.line(step, **scalars))
      return
    now = self._clock()
    if now - self._last_draw < self._min_redraw_s and step < self.total_steps:
      return  # Redrawing every step of a fast loop would cost more than the step.
    self._last_draw = now
    text = self.line(step, **scalars)
    width = shutil.get_terminal_size((120, 20)).columns - 1
    # Never wider than the terminal: a wrapped line cannot be redrawn with "\r".
    self._stream.write("\r" + text[:width] + "\x1b[K")
    self._stream.flush()
    self._drawn = True

  def clear(self) -> None:
    """Erases the bar so other output (e.g. an eval log line) starts on a clean line."""
    if self.interactive and self._drawn:
      self._stream.write("\r\x1b[K")
      self._stream.flush()
      self._drawn = False

  def close(self) -> None:
    for h in self._handlers:
      h.removeFilter(self._filter)
    self._handlers = []
    if self.interactive and self._drawn:
      self._stream.write("\n")
      self._stream.flush()
      self._drawn = False

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
