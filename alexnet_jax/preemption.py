"""Stopping on a signal at a step every process agrees on, within a bounded time.

SIGTERM (a cluster's preemption or `kill`), SIGUSR2 (submitit's preemption/timeout notice
under SLURM) and SIGINT (Ctrl-C) all ask the run to save and stop. The handler only records
the request; the training loop asks `requested(step, sync_point)` after each step:

- one process: true at the first step after the signal;
- several processes: each may see the signal at a different step (or not at all), and a
  checkpoint save is a collective, so the processes exchange their flags at sync points
  (steps every process reaches and where the loop already waits for the device, such as the
  log steps) and all stop at the same one.

Why not JAX's own preemption sync (`multihost_utils.reached_preemption_sync_point`, which
orbax's `reached_preemption` wraps): its notifier listens to SIGTERM only, in C++, and is
silently replaced by any Python SIGTERM handler; SLURM via submitit sends SIGUSR2, and a
single-process run has no coordination service at all. Exchanging the flag at the sync
points the loop already has covers all three with one mechanism, at one tiny all-gather per
sync point.

A data loader blocked inside `next()` (a FIFO posing as an image, a hung network mount)
never returns to the loop. While the loop is inside `waiting_for_data()`, a watchdog thread
re-delivers the signal to the main thread after `grace_s`; the handler then raises
`DataStalled`, which interrupts any wait that returns to Python (sleeps, locks, queue gets,
blocking reads on files and pipes), and the loop saves the state of the last finished step.
A loader stuck in native code that never returns to the interpreter cannot be interrupted
from Python at all: after a second `grace_s` the watchdog ends the process with 128+signal
without a new checkpoint (the previous one stays the latest) and says so. A loader that
wants the clean path must therefore wait in Python with a timeout (or in interruptible
system calls), never in an uninterruptible native wait.

After the loop has saved and cleaned up, `chain()` hands the signal to the handler that was
installed before (submitit's, which requeues the job), so a preempted SLURM job saves first
and is requeued after.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

from absl import logging

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR2", "SIGINT")
                if hasattr(signal, name))


class Interrupted(BaseException):
  """A stop signal arrived; `saved` says whether the checkpoint of `step` is on disk.

  A BaseException, like KeyboardInterrupt: a request to stop, not a failure of the run, so
  it passes through the launcher's per-run error handling and stops a sweep too.
  """

  def __init__(self, step, *, saved: bool = True, latest: int | None = None,
               exit_code: int = 143):
    if saved:
      message = (f"interrupted at step {step}; checkpoint saved, rerun the same command to "
                 "resume")
    else:
      message = (f"interrupted at step {step}; no checkpoint of it is on disk, rerunning the "
                 f"same command resumes from {'step %d' % latest if latest else 'the start'}")
    super().__init__(message)
    self.step, self.saved, self.exit_code = step, saved, exit_code


class DataStalled(Exception):
  """The data loader did not deliver a batch within the grace period after a stop signal."""


class StopSignals:
  """Installs the handlers on `install()`; `restore()` puts the previous ones back."""

  def __init__(self, grace_s: float = 60.0, poll_s: float = 0.25):
    self.grace_s = grace_s
    self.poll_s = poll_s
    self.signum: int | None = None
    self._previous: dict[int, object] = {}
    self._data_wait_since: float | None = None
    self._signal_time: float | None = None
    self._done = threading.Event()
    self._watchdog: threading.Thread | None = None
    self._redelivering = False
    self._handled = False

  # -- handlers --------------------------------------------------------------------------------
  def install(self) -> "StopSignals":
    if threading.current_thread() is not threading.main_thread():
      return self  # Signals reach the main thread only: leave them alone.
    for s in SIGNALS:
      self._previous[s] = signal.signal(s, self._handle)
    # Python runs handlers in the main thread between bytecodes, so a main thread stuck in
    # native code would never even notice the signal. The C-level handler also writes the
    # signal number to this pipe, at once and from any thread: the watchdog reads it.
    self._pipe = os.pipe()
    os.set_blocking(self._pipe[1], False)
    self._previous_wakeup_fd = signal.set_wakeup_fd(self._pipe[1], warn_on_full_buffer=False)
    self._watchdog = threading.Thread(target=self._watch, name="stop-watchdog", daemon=True)
    self._watchdog.start()
    return self

  def restore(self) -> None:
    if self._done.is_set():
      return
    self._done.set()
    for s, h in self._previous.items():
      signal.signal(s, h if h is not None else signal.SIG_DFL)
    if self._watchdog is not None:
      signal.set_wakeup_fd(self._previous_wakeup_fd)
      self._watchdog.join(timeout=5 * self.poll_s)
      for fd in self._pipe:
        os.close(fd)

  def _note(self, signum: int) -> bool:
    """Records the first stop signal; True if this call was the first."""
    if self.signum is not None:
      return False
    self.signum = signum
    self._signal_time = time.monotonic()
    return True

  def _handle(self, signum, frame):
    del frame
    if self._note(signum) or not self._handled:
      self._handled = True
      logging.warning("Received %s: stopping at the next step all processes agree on, after "
                      "saving a checkpoint", signal.Signals(signum).name)
      return
    redelivered, self._redelivering = self._redelivering, False
    if signum == getattr(signal, "SIGINT", None) and not redelivered:
      raise KeyboardInterrupt  # A second Ctrl-C: the user does not want to wait for the save.
    if self._stalled(time.monotonic()) >= self.grace_s:
      raise DataStalled(f"no batch within {self.grace_s:g} s of {signal.Signals(self.signum).name}")

  # -- data waits and the watchdog ---------------------------------------------------------------
  @contextlib.contextmanager
  def waiting_for_data(self):
    self._data_wait_since = time.monotonic()
    try:
      yield
    finally:
      self._data_wait_since = None

  def _stalled(self, now: float) -> float:
    """Seconds the loop has been waiting for data since the later of the signal and the wait."""
    since, sig = self._data_wait_since, self._signal_time
    if since is None or sig is None:
      return 0.0
    return now - max(since, sig)

  def _watch(self) -> None:
    import select

    nudged = False
    while not self._done.is_set():
      ready, _, _ = select.select([self._pipe[0]], [], [], self.poll_s)
      if ready:
        try:
          received = os.read(self._pipe[0], 64)
        except OSError:
          return  # Closed by restore().
        for signum in received:
          if signum in SIGNALS:
            self._note(signum)
      stalled = self._stalled(time.monotonic())
      if stalled >= 2 * self.grace_s and not self._done.is_set():
        logging.error("The data loader ignored %s for %.0f s; exiting without a new checkpoint "
                      "(the latest one on disk is kept)", signal.Signals(self.signum).name, stalled)
        os._exit(128 + self.signum)
      if stalled >= self.grace_s and not nudged:
        nudged = True  # Interrupts a blocking system call; the handler raises DataStalled.
        self._redelivering = True
        signal.pthread_kill(threading.main_thread().ident, self.signum)
      elif stalled < self.grace_s:
        nudged = False

  # -- agreement ----------------------------------------------------------------------------------
  def requested(self, sync_point: bool = True) -> bool:
    """Whether to save and stop now. With several processes, only at sync points."""
    import jax

    if jax.process_count() == 1:
      return self.signum is not None
    if not sync_point:
      return False
    import numpy as np
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.int32(self.signum or 0))
    seen = [int(f) for f in np.ravel(flags) if f]
    if seen and self.signum is None:
      self.signum = seen[0]  # Another process's signal: stop the same way it does.
    return bool(seen)

  @property
  def exit_code(self) -> int:
    return 128 + (self.signum or signal.SIGTERM)

  def chain(self) -> None:
    """Calls the handler that was installed before ours for the signal we stopped on.

    That is how submitit learns of the preemption after our checkpoint is on disk (it then
    requeues the job and exits). Default and ignore dispositions, and Python's own
    KeyboardInterrupt handler, are not called: the caller exits with `exit_code` instead.
    """
    previous = self._previous.get(self.signum)
    if callable(previous) and previous is not signal.default_int_handler:
      previous(self.signum, None)
