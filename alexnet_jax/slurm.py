"""Sweeps on a SLURM cluster through submitit: `python -m alexnet_jax.launch SWEEP --slurm`.

Each run is one job that trains in-process (`SlurmJob`); submitit's preemption/timeout hook
requeues the same call, and the trainer, which saved on the signal at a step every process
agreed on, resumes from that checkpoint.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import time
from typing import TextIO

from typing import TYPE_CHECKING

import alexnet_jax
from alexnet_jax import sweep as sweep_lib
from alexnet_jax.sweep import Run

if TYPE_CHECKING:
  from alexnet_jax import launch as launch_lib


def _launch():
  # Imported when used: launch imports this module, and a SLURM job unpickles SlurmJob (so
  # imports this module) before anything else.
  from alexnet_jax import launch  # noqa: PLC0415
  return launch



@dataclasses.dataclass
class SlurmOptions:
  partition: str | None = None
  time_min: int = 4320
  gpus: int = 1
  cpus: int = 10
  mem_gb: int | None = None
  account: str | None = None
  qos: str | None = None
  constraint: str | None = None
  array_parallelism: int | None = None
  setup: tuple = ()
  wait: bool = False
  cluster: str = "slurm"  # "local" or "debug" try the submitit path without a cluster.


class SlurmJob:
  """What a SLURM job runs. submitit calls `checkpoint` on preemption or timeout: returning
  the same call requeues the job, and train_and_evaluate resumes from its checkpoint."""

  def __init__(self, train_fn: launch_lib.TrainFn | None = None):
    self.train_fn = train_fn

  def __call__(self, run: Run, workdir: str):
    alexnet_jax.use_default_xla_flags()  # A job's process starts here, not in run().
    config = sweep_lib.resolve(run)
    wd = pathlib.Path(workdir)
    p = _launch().Planned(run, wd, config, _launch().run_state(wd))
    res = _launch().run_in_process(p, self.train_fn)
    if res.failed:
      raise RuntimeError(f"run {run.name} {res.status}: {res.detail}; see {p.log}")
    return res.status

  def checkpoint(self, run: Run, workdir: str):
    import submitit

    return submitit.helpers.DelayedSubmission(self, run, workdir)


def _import_submitit():
  try:
    import submitit
  except ImportError:
    raise _launch().LaunchError("--slurm needs submitit, an optional extra: pip install -e '.[slurm]' in "
                      "this repository (or pip install submitit).") from None
  return submitit


def submit_slurm(todo: list[launch_lib.Planned], workdir: pathlib.Path, opts: SlurmOptions, out: TextIO,
                 train_fn: launch_lib.TrainFn | None = None) -> list[launch_lib.Result]:
  submitit = _import_submitit()
  if opts.cluster == "slurm" and shutil.which("sbatch") is None:
    raise _launch().LaunchError("--slurm: sbatch is not on PATH; launch from a SLURM login node "
                      "(or drop --slurm to run here).")
  executor = submitit.AutoExecutor(folder=str(workdir / ".submitit" / "%j"), cluster=opts.cluster)
  params = dict(name=f"alexnet:{workdir.name}", timeout_min=opts.time_min, gpus_per_node=opts.gpus,
                cpus_per_task=opts.cpus, mem_gb=opts.mem_gb, slurm_partition=opts.partition,
                slurm_account=opts.account, slurm_qos=opts.qos, slurm_constraint=opts.constraint,
                slurm_array_parallelism=opts.array_parallelism,
                slurm_setup=list(opts.setup) or None)
  if opts.cluster != "slurm":
    params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
  executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
  job_fn = SlurmJob(train_fn)
  jobs = []
  with executor.batch():
    for p in todo:
      p.workdir.mkdir(parents=True, exist_ok=True)
      jobs.append((p, executor.submit(job_fn, p.portable or p.run, str(p.workdir.resolve()))))
  results = []
  for p, job in jobs:
    print(f"[launch] submitted {p.run.name} as job {job.job_id}, log: {p.log}", file=out, flush=True)
    results.append(_launch().Result(p.run.name, f"submitted (job {job.job_id})", False, None, p.workdir))
  if not opts.wait:
    return results
  results = []
  for p, job in jobs:
    start = time.time()
    try:
      job.result()
      results.append(_launch()._finished_result(p, time.time() - start))
    except Exception as e:  # noqa: BLE001 - report every job, failed or not.
      results.append(_launch().Result(p.run.name, f"failed (job {job.job_id})", True, None, p.workdir,
                            str(e).splitlines()[-1][:200] if str(e) else ""))
  return results
