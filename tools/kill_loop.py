r"""Kill loop: SIGKILL the tiny run at random moments, rerun it each time, compare with a clean run.

    nice -n 10 python tools/kill_loop.py --kills 20 --out /tmp/kill_loop

Each kill targets one phase, in turn: training (a random moment after a new train row),
saving (as soon as orbax's temporary checkpoint directory appears) and the final evaluation
(once the last step's checkpoint is on disk). After each kill the same run is started again
in the same workdir; when a run ends by itself its workdir is compared with an uninterrupted
run's: every metrics.jsonl row (timings aside), final.json (timings aside) and the final
params and optimizer state, bit for bit. Then a fresh workdir starts, until `--kills` kills
have been made. Prints one line per attempt and a summary; exits 1 on any difference.

Uses the tiny config and image folder of tests/test_train.py (CPU, a minute per run).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
TIMINGS = ("images_per_sec", "wall_time")


def child(folder: str, data_dir: str, workdir: str) -> None:
  from test_train import tiny_config  # noqa: E402

  from alexnet_jax import train  # noqa: E402

  c = tiny_config(folder, data_dir)
  c.data.eval_crops = "ten"  # A longer final evaluation to kill in.
  train.train_and_evaluate(c, workdir)


def _start(folder, data_dir, workdir):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", folder, data_dir,
                           workdir], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)


def _rows(workdir):
  from alexnet_jax.metrics import read_metrics

  return [{k: v for k, v in r.items() if k not in TIMINGS} for r in read_metrics(workdir)]


def _train_rows(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  with open(path, "rb") as f:
    return f.read().count(b'"kind": "train"')


def _trigger(phase, workdir, total_steps, rng):
  """A function that says when to kill, for this phase."""
  ckpts = os.path.join(workdir, "checkpoints")
  if phase == "train":
    start = _train_rows(workdir)
    state = {"at": None}

    def ready():
      if state["at"] is None and _train_rows(workdir) > start:
        state["at"] = time.time() + rng.uniform(0.0, 6.0)
      return state["at"] is not None and time.time() >= state["at"]
    return ready
  if phase == "save":  # The first, second or third save of this start, while orbax writes it.
    want, seen = rng.randint(1, 3), set()

    def ready():
      seen.update(glob.glob(os.path.join(ckpts, "*tmp*")))
      return len(seen) >= want and bool(glob.glob(os.path.join(ckpts, "*tmp*")))
    return ready
  last = os.path.join(ckpts, str(total_steps))
  if os.path.isdir(last):  # Killed in the final evaluation before: kill the redo somewhere.
    at = time.time() + rng.uniform(5.0, 30.0)
    return lambda: time.time() >= at
  return lambda: os.path.isdir(last) and not os.path.exists(os.path.join(workdir, "final.json"))


def _params(workdir):
  import numpy as np
  import orbax.checkpoint as ocp

  ckpts = os.path.join(workdir, "checkpoints")
  last = max(int(s) for s in os.listdir(ckpts) if s.isdigit())
  state = ocp.StandardCheckpointer().restore(os.path.join(ckpts, str(last), "state"))
  flat = {}

  def walk(tree, prefix):
    if isinstance(tree, dict):
      for k, v in tree.items():
        walk(v, f"{prefix}/{k}")
    elif isinstance(tree, (list, tuple)):
      for i, v in enumerate(tree):
        walk(v, f"{prefix}/{i}")
    elif tree is not None:
      flat[prefix] = np.asarray(tree)
  walk(state, "")
  return last, flat


def _compare(workdir, reference):
  import numpy as np

  problems = []
  if _rows(workdir) != _rows(reference):
    problems.append("metrics.jsonl rows differ")
  finals = []
  for wd in (workdir, reference):
    with open(os.path.join(wd, "final.json")) as f:
      finals.append({k: v for k, v in json.load(f).items() if k not in TIMINGS})
  if finals[0] != finals[1]:
    problems.append("final.json differs")
  (step_a, a), (step_b, b) = _params(workdir), _params(reference)
  if step_a != step_b or sorted(a) != sorted(b):
    problems.append(f"checkpoint layout differs ({step_a} vs {step_b})")
  else:
    diff = [k for k in a if not np.array_equal(a[k], b[k])]
    if diff:
      problems.append(f"state differs in {diff[:5]}")
  return problems


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--kills", type=int, default=12)
  ap.add_argument("--out", default="/tmp/kill_loop")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--child", nargs=3, metavar=("FOLDER", "DATA_DIR", "WORKDIR"))
  args = ap.parse_args(argv)
  if args.child:
    child(*args.child)
    return 0

  from test_train import make_folder_dataset

  rng = random.Random(args.seed)
  os.makedirs(args.out, exist_ok=True)
  folder = os.path.join(args.out, "images")
  if not os.path.isdir(folder):
    make_folder_dataset(folder)
  data_dir = os.path.join(args.out, "tfds")
  reference = os.path.join(args.out, "reference")
  if not os.path.exists(os.path.join(reference, "final.json")):
    proc = _start(folder, data_dir, reference)
    _, err = proc.communicate()
    if proc.returncode:
      print(err[-3000:])
      return 1
  total_steps = json.load(open(os.path.join(reference, "final.json")))["step"]

  kills, episode, failures = 0, 0, 0
  by_phase = {"train": 0, "save": 0, "final": 0}
  phases = ["train", "save", "final"]
  while kills < args.kills:
    episode += 1
    workdir = os.path.join(args.out, f"episode{episode}")
    attempts = 0
    while True:
      attempts += 1
      phase = phases[kills % 3] if kills < args.kills else None
      proc = _start(folder, data_dir, workdir)
      ready = _trigger(phase, workdir, total_steps, rng) if phase else (lambda: False)
      while proc.poll() is None and not ready():
        time.sleep(0.01)
      if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        by_phase[phase] += 1
        print(f"episode {episode} attempt {attempts}: SIGKILL during {phase} "
              f"(train rows {_train_rows(workdir)})", flush=True)
        continue
      if proc.returncode != 0:
        print(f"episode {episode} attempt {attempts}: exit {proc.returncode}\n"
              f"{proc.stderr.read()[-3000:]}", flush=True)
        return 1
      problems = _compare(workdir, reference)
      failures += bool(problems)
      print(f"episode {episode}: finished after {attempts} starts; "
            f"{'; '.join(problems) or 'identical to the uninterrupted run'}", flush=True)
      break
  print(f"{kills} SIGKILLs ({by_phase}) over {episode} episodes; {failures} episodes differed")
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
