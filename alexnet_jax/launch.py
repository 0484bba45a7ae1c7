r"""Runs every run of a sweep file, locally or on SLURM, and says how each one went
(also installed as the command `alexnet-launch`).

    python -m alexnet_jax.launch experiments/fmnist_paper_ablations.py:seeds=2 \
        --workdir=runs/fmnist_paper_ablations [--parallel=2] [--only=full,no_lrn] [--dry_run]
    python -m alexnet_jax.launch experiments/paper_ablations.py --workdir=runs/paper_ablations \
        --slurm --slurm_partition=gpu --slurm_gpus=1 --slurm_time=4320

Each run trains in `<workdir>/<run name>/` (the layout of docs/DESIGN.md), so
`python -m alexnet_jax.report <workdir>` and `tensorboard --logdir <workdir>` see the whole sweep.

Idempotent: runs with a final.json are skipped, others start or resume from their own
checkpoints (train_and_evaluate resumes by itself), so re-running the same command after a
crash, a Ctrl-C or an edit to the sweep only does what is left. Every run's config is built
and validated before the first one starts, so a typo in run 9 fails in a second, not after
eight trainings.

Locally each run is its own process (`python -m alexnet_jax.launch ... --only=<run>
--in_process`), writing stdout and stderr to `<workdir>/<run>/log.txt`: a crash, an
out-of-memory kill or a leak in one run cannot take the others down, and `--parallel=N` keeps
N of them going. `--in_process` runs them one after another inside this process instead
(what tests and debuggers want). With `--slurm` each run is a submitit job, requeued on
preemption or timeout to resume from its checkpoint; submitit is an optional extra:
`pip install -e '.[slurm]'` in a checkout of this repository.

Flags are spelt with underscores, as in `alexnet_jax.main` (--dry_run, --in_process,
--slurm_partition). Exit status: 0 when every selected run has finished (or was submitted),
1 when any failed, 2 when the sweep, a config or a flag is wrong (one line saying which;
--traceback shows the Python traceback), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime
import fnmatch
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time
import traceback
from typing import Callable, TextIO

import ml_collections

import alexnet_jax
from alexnet_jax import devices
from alexnet_jax import preemption
from alexnet_jax import report
from alexnet_jax import sweep as sweep_lib
from alexnet_jax import workdir as workdir_lib
from alexnet_jax.sweep import Run, SweepError
# The SLURM path has its own module; launch's callers (and tests) still find its names here.
from alexnet_jax.slurm import SlurmJob, SlurmOptions, submit_slurm  # noqa: E402,F401

TrainFn = Callable[[ml_collections.ConfigDict, str], object]


class LaunchError(RuntimeError):
  """The launcher cannot proceed; the message says what to do."""


@dataclasses.dataclass
class Planned:
  run: Run  # As the sweep wrote it (relative paths: what a human would type).
  workdir: pathlib.Path
  config: ml_collections.ConfigDict
  state: str  # "finished", "resume" or "new"
  drift: str = ""  # Fields where the workdir's config.json disagrees with the sweep.
  portable: Run | None = None  # Config path made absolute, for cluster nodes.

  @property
  def log(self) -> pathlib.Path:
    return self.workdir / "log.txt"


@dataclasses.dataclass
class Result:
  name: str
  status: str
  failed: bool = False
  seconds: float | None = None
  workdir: pathlib.Path | None = None
  detail: str = ""


def run_state(workdir: pathlib.Path) -> str:
  # A damaged final.json is not a finished run: skipping it would skip the run forever.
  if workdir_lib.read_final(str(workdir)) is not None:
    return "finished"
  if (workdir / "metrics.jsonl").is_file() or (workdir / "checkpoints").is_dir():
    return "resume"
  return "new"


def _config_drift(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> str:
  """Resuming under a changed config would mix two experiments in one curve: say so."""
  try:
    old = json.loads((workdir / "config.json").read_text())
    new = json.loads(config.to_json_best_effort())
  except (OSError, ValueError):
    return ""
  diff = report.config_diff(old, new) or {}
  diff = {k: v for k, v in diff.items() if not k.startswith("data.data_dir")}
  return report.describe_diff(diff) if diff else ""


def select(runs: list[Run], only: str | None) -> list[Run]:
  """`--only=a,b*`: names or globs, matching run names or their group (`no_lrn` -> `no_lrn.s*`)."""
  if not only:
    return runs
  wanted = [w.strip() for w in only.split(",") if w.strip()]
  picked = [r for r in runs if any(
      fnmatch.fnmatchcase(r.name, w) or fnmatch.fnmatchcase(sweep_lib.split_name(r.name)[0], w) for w in wanted)]
  unmatched = [w for w in wanted if not any(
      fnmatch.fnmatchcase(r.name, w) or fnmatch.fnmatchcase(sweep_lib.split_name(r.name)[0], w) for r in runs)]
  if unmatched:
    raise SweepError(f"--only: no run named {', '.join(map(repr, unmatched))}. "
                     f"Runs in this sweep: {', '.join(r.name for r in runs)}.")
  return picked


def plan(runs: list[Run], workdir: str | os.PathLike) -> list[Planned]:
  """Builds and validates every run's config up front; config paths become absolute so that
  child processes and cluster nodes load the same files from any directory."""
  out = []
  for r in runs:
    path = sweep_lib.find_file(r.config_file)
    absolute = Run(r.name, str(path) + (":" + r.variant if r.variant else ""), dict(r.overrides))
    config = sweep_lib.resolve(absolute, f"run {r.name!r}")
    wd = pathlib.Path(workdir) / r.name
    out.append(Planned(r, wd, config, run_state(wd), _config_drift(config, wd), absolute))
  return out


def main_command(p: Planned) -> str:
  """The single-run `alexnet_jax.main` command equivalent to this run, for humans."""
  args = ["python", "-m", "alexnet_jax.main", f"--config={p.run.config}",
          f"--workdir={p.workdir}"] + sweep_lib.override_flags(p.run.overrides)
  return shlex.join(args)


def worker_command(sweep_spec: str, workdir: pathlib.Path, name: str) -> list[str]:
  """The child process that trains one run (it re-reads the sweep, which is deterministic)."""
  return [sys.executable, "-m", "alexnet_jax.launch", sweep_spec, f"--workdir={workdir}",
          f"--only={name}", "--in_process", "--log=inherit"]


# ---------------------------------------------------------------------------------------------
# Running.


class _Tee:
  def __init__(self, *streams):
    self.streams = streams

  def write(self, s):
    for st in self.streams:
      st.write(s)
    return len(s)

  def flush(self):
    for st in self.streams:
      st.flush()

  def isatty(self):
    return False


@contextlib.contextmanager
def _tee_to(path: pathlib.Path):
  """Copies this process's prints and log records into the run's log.txt."""
  import logging

  from absl import logging as absl_logging

  with open(path, "a", buffering=1) as f:
    handler = logging.StreamHandler(f)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # The trainer's progress, resume and val/test lines are absl INFO records, which absl
    # drops unless its flags were parsed; orbax and TFDS log every file at INFO: keep them out.
    handler.addFilter(lambda r: r.levelno >= logging.WARNING or not any(
        f"/{lib}/" in r.pathname for lib in ("orbax", "tensorflow_datasets")))
    verbosity = absl_logging.get_verbosity()
    # Before absl's flags are parsed its logger has no level of its own (records pass to the
    # root); set_verbosity(verbosity) would give it WARNING, so its level is put back as it was.
    absl_level = absl_logging.get_absl_logger().level
    absl_logging.set_verbosity(max(verbosity, absl_logging.INFO))  # absl: higher = more.
    root = logging.getLogger()
    root.addHandler(handler)
    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(old[0], f), _Tee(old[1], f)
    try:
      yield
    finally:
      sys.stdout, sys.stderr = old
      root.removeHandler(handler)
      absl_logging.set_verbosity(verbosity)
      absl_logging.get_absl_logger().setLevel(absl_level)


def _default_train_fn(config, workdir):
  from alexnet_jax import train  # Imported here: JAX and TF load only when a run trains.

  return train.train_and_evaluate(config, workdir)


def _header(p: Planned) -> str:
  return (f"\n===== {datetime.datetime.now():%Y-%m-%d %H:%M:%S} {p.run.name} ({p.state}) on "
          f"{os.uname().nodename} pid {os.getpid()}\n===== {main_command(p)}\n")


def run_in_process(p: Planned, train_fn: TrainFn | None = None, tee: bool = True) -> Result:
  """Trains one run here; an exception fails this run only (its traceback goes to log.txt)."""
  train_fn = train_fn or _default_train_fn
  p.workdir.mkdir(parents=True, exist_ok=True)
  start = time.time()
  with (_tee_to(p.log) if tee else contextlib.nullcontext()):
    if tee:  # Otherwise the parent process has already written it.
      print(_header(p), flush=True)
    try:
      train_fn(p.config, str(p.workdir))
    except Exception as e:  # noqa: BLE001 - one run's failure must not stop the sweep.
      traceback.print_exc()
      sys.stderr.flush()
      return Result(p.run.name, f"failed ({type(e).__name__})", True, time.time() - start, p.workdir,
                    f"{e}".splitlines()[0][:200] if str(e) else "")
  return _finished_result(p, time.time() - start)


def _finished_result(p: Planned, seconds: float) -> Result:
  if workdir_lib.read_final(str(p.workdir)) is not None:
    return Result(p.run.name, "done", False, seconds, p.workdir)
  # E.g. config.max_steps stopped it early: nothing failed, but nothing is final either.
  return Result(p.run.name, "stopped (no final.json)", False, seconds, p.workdir)


def _tail(path: pathlib.Path, n: int = 8) -> str:
  try:
    lines = path.read_text(errors="replace").splitlines()
  except OSError:
    return ""
  return "\n".join("    " + line for line in lines[-n:])


def run_subprocesses(todo: list[Planned], sweep_spec: str, workdir: pathlib.Path, parallel: int,
                     out: TextIO, command_fn=worker_command) -> list[Result]:
  """Keeps up to `parallel` runs going, each in its own process writing its own log.txt."""
  pending = collections.deque(todo)
  running: dict[str, tuple[Planned, subprocess.Popen, float, object]] = {}
  results = []
  first = None
  slots = devices.DeviceSlots(parallel)  # Each child's GPU share (alexnet_jax/devices.py).
  try:
    while pending or running:
      # Runs started together would all build the dataset and its statistics at once and
      # trip over each other's files: the others wait until the first has logged a metric
      # (so the data are ready) or has ended.
      while pending and len(running) < parallel:
        if first is not None and first.poll() is None and not _has_metrics(todo[0].workdir):
          break
        p = pending.popleft()
        p.workdir.mkdir(parents=True, exist_ok=True)
        log = open(p.log, "ab")
        log.write(_header(p).encode())
        log.flush()
        proc = subprocess.Popen(command_fn(sweep_spec, workdir, p.run.name), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=slots.env_for(p.run.name, running))
        running[p.run.name] = (p, proc, time.time(), log)
        first = first or proc
        print(f"[launch] start {p.run.name} ({p.state}), log: {p.log}", file=out, flush=True)
      for name, (p, proc, start, log) in list(running.items()):
        rc = proc.poll()
        if rc is None:
          continue
        log.close()
        del running[name]
        secs = time.time() - start
        if rc == 0:
          res = _finished_result(p, secs)
        else:
          res = Result(name, f"failed (exit {rc})", True, secs, p.workdir)
        results.append(res)
        print(f"[launch] {res.status}: {name} after {_duration(secs)}", file=out, flush=True)
        if res.failed:
          print(f"  last lines of {p.log}:\n{_tail(p.log)}", file=out, flush=True)
      time.sleep(0.2)
  except KeyboardInterrupt:
    # Ctrl-C: stop our own children so nothing trains unattended; they resume next time.
    for name, (p, proc, start, log) in running.items():
      proc.terminate()
    for name, (p, proc, start, log) in running.items():
      try:
        proc.wait(timeout=30)
      except subprocess.TimeoutExpired:
        proc.kill()
      log.close()
      results.append(Result(name, "interrupted", True, time.time() - start, p.workdir))
    results += [Result(p.run.name, "not started", False, None, p.workdir) for p in pending]
    raise _Interrupted(results) from None
  return results


def _has_metrics(workdir: pathlib.Path) -> bool:
  try:
    return (workdir / "metrics.jsonl").stat().st_size > 0
  except OSError:
    return False


class _Interrupted(Exception):
  def __init__(self, results):
    super().__init__("interrupted")
    self.results = results


# ---------------------------------------------------------------------------------------------
# The sweep as a whole.


def _duration(s: float | None) -> str:
  if s is None:
    return ""
  s = int(s)
  return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def summary_table(results: list[Result]) -> str:
  rows = []
  for res in results:
    cells = [res.name, res.status, "", "", "", "", "", _duration(res.seconds)]
    if res.workdir is not None and res.workdir.exists():
      data = report.read_run(res.workdir, res.name)
      cells[2] = "" if data.epoch is None else f"{data.epoch:.2f}"
      for i, crops in enumerate(report.CROPS):
        t = data.test(crops) or {}
        for j, m in enumerate(("top1_err", "top5_err")):
          if t.get(m) is not None:
            cells[3 + 2 * i + j] = f"{100 * t[m]:.2f}"
    cells.append(res.detail)
    rows.append(cells)
  header = ["run", "status", "epoch", "top-1 % center", "top-5 % center", "top-1 % 10-crop",
            "top-5 % 10-crop", "time", "detail"]
  widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
  lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header] + rows]
  lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)


def launch(sweep_spec: str | None, workdir: str | os.PathLike, *, runs: list[Run] | None = None,
           only: str | None = None, parallel: int = 1, dry_run: bool = False, in_process: bool = False,
           train_fn: TrainFn | None = None, tee: bool = True, slurm: SlurmOptions | None = None,
           out: TextIO | None = None, command_fn=worker_command) -> list[Result]:
  """Plans, runs and summarises a sweep. `runs` replaces loading `sweep_spec`; `train_fn`
  replaces train_and_evaluate (and implies in-process runs)."""
  out = out or sys.stdout
  workdir = pathlib.Path(workdir)
  if runs is None:
    if not sweep_spec:
      raise LaunchError("give a sweep file (experiments/<sweep>.py[:arg]) or a list of runs.")
    runs = sweep_lib.load_sweep(sweep_spec)
  else:
    runs = [sweep_lib.as_run(r, "runs") for r in runs]
  if parallel < 1:
    raise LaunchError(f"--parallel={parallel}: give at least 1.")
  planned = plan(select(runs, only), workdir)
  in_process = in_process or train_fn is not None
  if not in_process and slurm is None and sweep_spec is None:
    raise LaunchError("runs given as a list can only run --in_process (children re-read a sweep file).")

  for p in planned:
    if p.drift and p.state != "new":
      print(f"[launch] warning: {p.workdir}/config.json differs from the sweep's config for "
            f"{p.run.name}: {p.drift}. Delete {p.workdir} to start it afresh.", file=out)
  done = [Result(p.run.name, "finished (skipped)", False, None, p.workdir) for p in planned if p.state == "finished"]
  todo = [p for p in planned if p.state != "finished"]

  if dry_run:
    width = max(len(p.run.name) for p in planned)
    mode = "slurm" if slurm else "in-process" if in_process else f"{parallel} at a time"
    print(f"[launch] dry run: {len(planned)} runs ({len(todo)} to run, {len(done)} finished), {mode}:",
          file=out)
    for p in planned:
      verb = {"finished": "skip (finished)", "resume": "resume", "new": "start"}[p.state]
      print(f"  {p.run.name.ljust(width)}  {verb}", file=out)
      print(f"      {main_command(p)}", file=out)
    return done + [Result(p.run.name, f"would {'resume' if p.state == 'resume' else 'start'}", False,
                          None, p.workdir) for p in todo]

  if done:
    print(f"[launch] {len(done)} runs already finished: {', '.join(r.name for r in done)}", file=out)
  if not todo:
    results = done
  elif slurm is not None:
    results = done + submit_slurm(todo, workdir, slurm, out, train_fn)
  elif in_process:
    results = list(done)
    for p in todo:
      print(f"[launch] start {p.run.name} ({p.state}), log: {p.log}", file=out, flush=True)
      res = run_in_process(p, train_fn, tee)
      print(f"[launch] {res.status}: {p.run.name} after {_duration(res.seconds)}", file=out, flush=True)
      results.append(res)
  else:
    results = done + run_subprocesses(todo, sweep_spec, workdir, parallel, out, command_fn)
  order = {p.run.name: i for i, p in enumerate(planned)}
  return sorted(results, key=lambda r: order.get(r.name, len(order)))


class _Parser(argparse.ArgumentParser):
  """argparse, plus the underscore spelling when a hyphenated flag is not known."""

  def error(self, message):
    known = {o for a in self._actions for o in a.option_strings}
    for word in message.replace(",", " ").split():
      fixed = "--" + word[2:].replace("-", "_")
      if word.startswith("--") and "-" in word[2:] and fixed.split("=")[0] in known:
        message += f" (flags are spelt with underscores here: {fixed.split('=')[0]})"
        break
    super().error(message)


def _parser():
  p = _Parser(prog="python -m alexnet_jax.launch", description=__doc__,
              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("sweep", help="experiments/<sweep>.py or experiments/<sweep>.py:<arg>")
  p.add_argument("--workdir", required=True, help="sweep folder; each run trains in <workdir>/<run name>")
  p.add_argument("--parallel", type=int, default=1, help="runs at a time, each in its own process")
  p.add_argument("--only", help="comma-separated run names or globs (a group name selects all its seeds)")
  p.add_argument("--dry_run", action="store_true",
                 help="print the runs, their state and single-run commands; run nothing")
  p.add_argument("--in_process", action="store_true",
                 help="train the runs one after another inside this process")
  p.add_argument("--traceback", action="store_true",
                 help="on a sweep or config error, show the Python traceback")
  p.add_argument("--log", choices=("tee", "inherit"), default="tee", help=argparse.SUPPRESS)
  s = p.add_argument_group("SLURM (through submitit: pip install -e '.[slurm]')")
  s.add_argument("--slurm", action="store_true", help="submit each run as a SLURM job")
  s.add_argument("--slurm_partition")
  s.add_argument("--slurm_time", type=int, default=4320, help="minutes per job before requeue (default 3 days)")
  s.add_argument("--slurm_gpus", type=int, default=1, help="GPUs per job")
  s.add_argument("--slurm_cpus", type=int, default=10, help="CPUs per job (data loading)")
  s.add_argument("--slurm_mem_gb", type=int)
  s.add_argument("--slurm_account")
  s.add_argument("--slurm_qos")
  s.add_argument("--slurm_constraint")
  s.add_argument("--slurm_array_parallelism", type=int, help="at most this many jobs at once")
  s.add_argument("--slurm_setup", action="append", default=[],
                 help="shell line run before each job, e.g. 'module load cuda' (repeatable)")
  s.add_argument("--slurm_wait", action="store_true", help="wait for the jobs and summarise them")
  s.add_argument("--slurm_cluster", default="slurm", choices=("slurm", "local", "debug"),
                 help=argparse.SUPPRESS)
  return p


def main(argv=None, train_fn: TrainFn | None = None, out: TextIO | None = None) -> int:
  a = _parser().parse_args(argv)
  out = out or sys.stdout
  slurm = None
  if a.slurm:
    slurm = SlurmOptions(a.slurm_partition, a.slurm_time, a.slurm_gpus, a.slurm_cpus, a.slurm_mem_gb,
                         a.slurm_account, a.slurm_qos, a.slurm_constraint, a.slurm_array_parallelism,
                         tuple(a.slurm_setup), a.slurm_wait, a.slurm_cluster)
  try:
    results = launch(a.sweep, a.workdir, only=a.only, parallel=a.parallel, dry_run=a.dry_run,
                     in_process=a.in_process, train_fn=train_fn, tee=a.log == "tee", slurm=slurm, out=out)
  except (SweepError, LaunchError) as e:
    if a.traceback:
      raise
    print(f"error: {e}", file=sys.stderr)
    return 2
  except preemption.Interrupted as e:  # A signal stopped an in-process run: it saved.
    print(f"[launch] {e}", file=out)
    return e.exit_code
  except _Interrupted as e:
    print("\n" + summary_table(e.results), file=out)
    print("[launch] interrupted; run the same command again to resume.", file=out)
    return 130
  if a.dry_run:
    return 0
  if a.only and a.in_process and a.log == "inherit":
    return 1 if any(r.failed for r in results) else 0  # A worker: the parent prints the summary.
  print("\n" + summary_table(results), file=out)
  failed = [r.name for r in results if r.failed]
  if failed:
    print(f"[launch] {len(failed)} failed: {', '.join(failed)} (logs in <run>/log.txt); "
          "run the same command again to retry them.", file=out)
  else:
    print(f"[launch] report: python -m alexnet_jax.report {a.workdir}", file=out)
  return 1 if failed else 0


def run():
  """The program's start (`python -m alexnet_jax.launch`, `alexnet-launch`, each worker)."""
  alexnet_jax.use_default_xla_flags()
  sys.exit(main())


if __name__ == "__main__":
  run()
