"""GPU-aware `launch --parallel=N`: the environment each child process receives.

GPU detection is mocked (CUDA_VISIBLE_DEVICES, a fake nvidia-smi), so this runs on CPU; the
end-to-end test runs the real launcher loop with children that record their environment.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap

import pytest

from alexnet_jax import devices, launch
from alexnet_jax.sweep import Run

GPU_VARS = ("CUDA_VISIBLE_DEVICES", "XLA_PYTHON_CLIENT_MEM_FRACTION",
            "XLA_PYTHON_CLIENT_PREALLOCATE")


@pytest.fixture
def clean_env(monkeypatch):
  for v in GPU_VARS:
    monkeypatch.delenv(v, raising=False)
  return monkeypatch


def _fake_nvidia_smi(tmp_path, monkeypatch, stdout: str, rc: int = 0):
  exe = tmp_path / "bin" / "nvidia-smi"
  exe.parent.mkdir()
  exe.write_text(f"#!/bin/sh\ncat <<'EOF'\n{stdout}EOF\nexit {rc}\n")
  exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
  monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")


def test_gpus_are_read_off_nvidia_smi(tmp_path, clean_env):
  _fake_nvidia_smi(tmp_path, clean_env,
                   "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aa)\n"
                   "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-bb)\n")
  assert devices.visible_gpus() == ["0", "1"]


def test_failing_nvidia_smi_means_no_gpu(tmp_path, clean_env):
  _fake_nvidia_smi(tmp_path, clean_env, "NVIDIA-SMI has failed\n", rc=9)
  assert devices.visible_gpus() == []


def test_cuda_visible_devices_wins_over_nvidia_smi(tmp_path, clean_env):
  _fake_nvidia_smi(tmp_path, clean_env, "GPU 0: A\nGPU 1: B\nGPU 2: C\n")
  assert devices.visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 5"}) == ["2", "5"]
  assert devices.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
  assert devices.visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_no_gpu_or_one_run_inherits_the_environment():
  assert devices.child_env(0, 4, []) is None
  assert devices.child_env(0, 1, ["0", "1"]) is None


def test_enough_gpus_each_run_its_own():
  envs = [devices.child_env(s, 4, ["0", "1", "2", "3"], base={}) for s in range(4)]
  assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "2", "3"]
  assert not any("XLA_PYTHON_CLIENT_MEM_FRACTION" in e for e in envs)
  # More GPUs than runs: each run gets an equal share, none overlapping.
  envs = [devices.child_env(s, 2, ["3", "4", "5", "6", "7"], base={}) for s in range(2)]
  assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["3,4", "5,6"]


def test_runs_sharing_one_gpu_split_its_memory():
  envs = [devices.child_env(s, 4, ["0"], base={"KEEP": "x"}) for s in range(4)]
  for e in envs:
    assert e == {"KEEP": "x", "CUDA_VISIBLE_DEVICES": "0",
                 "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.22",
                 "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
  # Three runs on two GPUs: round-robin, the busier GPU holds two, so each gets under half.
  envs = [devices.child_env(s, 3, ["0", "1"], base={}) for s in range(3)]
  assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "0"]
  assert {e["XLA_PYTHON_CLIENT_MEM_FRACTION"] for e in envs} == {"0.45"}
  fractions = sum(float(e["XLA_PYTHON_CLIENT_MEM_FRACTION"]) for e in envs
                  if e["CUDA_VISIBLE_DEVICES"] == "0")
  assert fractions <= devices.SHARED_MEMORY_HEADROOM


def test_a_memory_fraction_the_user_set_is_kept():
  e = devices.child_env(1, 2, ["0"], base={"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.3"})
  assert e["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.3"


def test_slot_outside_parallel_is_refused():
  with pytest.raises(ValueError, match="slot 2"):
    devices.child_env(2, 2, ["0"])


def test_slots_are_reused_once_their_run_ends():
  slots = devices.DeviceSlots(2, devices=["0", "1"])
  assert slots.env_for("a", [])["CUDA_VISIBLE_DEVICES"] == "0"
  assert slots.env_for("b", ["a"])["CUDA_VISIBLE_DEVICES"] == "1"
  # "a" ended; "c" takes its GPU, not b's.
  assert slots.env_for("c", ["b"])["CUDA_VISIBLE_DEVICES"] == "0"


CHILD = textwrap.dedent("""
    import json, os, sys, time
    out = sys.argv[1]
    start = time.time()
    time.sleep(float(sys.argv[2]))
    env = {k: os.environ.get(k) for k in %r}
    with open(out, "w") as f:
      json.dump({"env": env, "start": start, "end": time.time()}, f)
""" % (GPU_VARS,))


@pytest.mark.parametrize("gpus, parallel", [(["0"], 3), (["0", "1"], 2), (["0", "1", "2"], 3)])
def test_launcher_children_receive_their_gpu_share(tmp_path, clean_env, gpus, parallel):
  clean_env.setenv("CUDA_VISIBLE_DEVICES", ",".join(gpus))  # The mocked detection.
  script = tmp_path / "child.py"
  script.write_text(CHILD)
  names = [f"r{i}" for i in range(5)]
  todo = [launch.Planned(Run(n, "configs/small_fashion_mnist.py"), tmp_path / n, None, "new")
          for n in names]

  def command(sweep_spec, workdir, name):
    # The first run must end before the others start (the launcher's data-preparation
    # rule); the others overlap.
    return [sys.executable, str(script), str(tmp_path / name / "env.json"),
            "0.1" if name == "r0" else "1.5"]

  results = launch.run_subprocesses(todo, "sweep.py", tmp_path, parallel, sys.stdout,
                                    command_fn=command)
  assert [r.failed for r in results] == [False] * 5
  seen = {n: json.loads((tmp_path / n / "env.json").read_text()) for n in names}
  for n, s in seen.items():
    env = s["env"]
    assert env["CUDA_VISIBLE_DEVICES"] in gpus, (n, env)
    if len(gpus) >= parallel:
      assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] is None
    else:
      assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
      assert float(env["XLA_PYTHON_CLIENT_MEM_FRACTION"]) * -(-parallel // len(gpus)) <= 0.9
  # Runs that overlapped in time never got the same GPU when there were enough of them.
  overlapping = [(a, b) for a in names for b in names if a < b
                 and seen[a]["start"] < seen[b]["end"] and seen[b]["start"] < seen[a]["end"]]
  assert overlapping, "the test should have run children side by side"
  if len(gpus) >= parallel:
    for a, b in overlapping:
      assert seen[a]["env"]["CUDA_VISIBLE_DEVICES"] != seen[b]["env"]["CUDA_VISIBLE_DEVICES"]
  else:
    assert {s["env"]["CUDA_VISIBLE_DEVICES"] for s in seen.values()} == set(gpus)


def test_launcher_without_gpus_leaves_children_alone(tmp_path, clean_env):
  clean_env.setenv("CUDA_VISIBLE_DEVICES", "-1")
  script = tmp_path / "child.py"
  script.write_text(CHILD)
  todo = [launch.Planned(Run(n, "configs/small_fashion_mnist.py"), tmp_path / n, None, "new")
          for n in ("a", "b")]
  launch.run_subprocesses(todo, "sweep.py", tmp_path, 2, sys.stdout,
                          command_fn=lambda s, w, n: [sys.executable, str(script),
                                                      str(tmp_path / n / "env.json"), "0"])
  for n in ("a", "b"):
    env = json.loads((tmp_path / n / "env.json").read_text())["env"]
    assert env == {"CUDA_VISIBLE_DEVICES": "-1", "XLA_PYTHON_CLIENT_MEM_FRACTION": None,
                   "XLA_PYTHON_CLIENT_PREALLOCATE": None}
