"""The prepared GPU check (benchmarks/gpu_check.py) rehearsed on the CPU: every figure lands in
the output folder, a part over its limit is cut off without losing the others, the input hook
degrades to 'not available', and the derived figures follow from the measured ones."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import gpu_check, timing  # noqa: E402


def _lines(path):
  with open(path) as f:
    return [json.loads(l) for l in f]


def test_tiny_cpu_run_writes_every_figure_and_bounds_each_part(tmp_path):
  out = tmp_path / "out"
  proc = subprocess.run(
      [sys.executable, "benchmarks/gpu_check.py", "--platform=cpu", "--tiny", f"--out={out}",
       "--parts=env,step_f32,mesh", "--limit=mesh=1", "--limit=step_f32=240",
       "--batches=8", f"--scratch={tmp_path / 'scratch'}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  summary = json.loads((out / "gpu_check.json").read_text())
  parts = summary["parts"]
  assert parts["env"]["status"] == "ok" and parts["step_f32"]["status"] == "ok", parts
  # The mesh part could not finish in 1 s: it was killed and said so, and the run went on.
  assert parts["mesh"]["status"].startswith("timed out after 1 s"), parts["mesh"]
  assert summary["env"]["backend"] == "cpu" and summary["env"]["versions"]["jax"]

  figures = _lines(out / "figures.jsonl")
  (matmul,) = [r for r in figures if r["what"] == "matmul"]
  steps = [r for r in figures if r["what"] == "train_step"]
  assert [r["batch"] for r in steps] == [8]
  gflop_per_img = 0
  for r in steps:
    assert r["framework"] == "jax" and r["dtype"] == "float32" and r["config"] == "tiny"
    # img/s, ms/step and the matmul fraction are one measurement seen three ways.
    assert r["img_per_s"] * r["ms_per_step"] / 1e3 == pytest.approx(r["batch"], rel=1e-6)
    assert r["of_matmul"] == pytest.approx(r["gflop_per_s"] * 1e9 / matmul["jax"], rel=1e-6)
    assert r["mfu"] is None  # No datasheet peak for a CPU...
    gflop_per_img = r["gflop_per_s"] / r["img_per_s"]
    assert r["ms_per_step"] == pytest.approx(statistics.median(r["ms_all"]), abs=0.01)
  from alexnet_jax import flops
  assert gflop_per_img * 1e9 == pytest.approx(
      flops.train_step_flops(timing.model_config("tiny").model), rel=1e-6)
  best = summary["jax_step"]["float32"]
  assert best["img_per_s"] == max(r["img_per_s"] for r in steps)
  assert best["mfu"].startswith("unknown")  # ... so the summary says so.
  assert "step_f32" in summary["table"] and (out / "log.txt").stat().st_size > 0


def test_input_hook_reports_not_available_when_the_pipeline_cannot_load(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "benchmarks.input_pipeline", None)  # Import fails.
  out = tmp_path / "figures.jsonl"
  rec = gpu_check.run_input_benchmark(str(out), 5)
  assert rec["status"] == "not available" and "benchmarks.input_pipeline" in rec["why"]
  assert _lines(out) == [rec]


def test_summary_ratios_and_best_batch_follow_the_records(tmp_path):
  out = gpu_check.Out(str(tmp_path))
  common = {"what": "train_step", "config": "paper", "dtype": "bfloat16", "device": "NVIDIA H100",
            "ms_per_step": 1.0, "of_matmul": 0.5}
  for fw, batch, ips in (("jax", 128, 20000.0), ("jax", 1024, 30000.0), ("torch", 128, 16000.0),
                         ("torch", 1024, 40000.0), ("torch_compile", 128, 25000.0)):
    out.emit({**common, "framework": fw, "batch": batch, "img_per_s": ips,
              "mfu": ips * 4.35e9 / 989e12})
  out.summary["parts"]["step_bf16"] = {"status": "ok", "seconds": 1.0}
  gpu_check.summarize(out)
  s = out.summary
  assert s["jax_step"]["bfloat16"]["batch"] == 1024
  assert s["jax_step"]["bfloat16"]["at_smallest_batch"]["img_per_s"] == 20000.0
  ratios = {(r["vs"], r["batch"]): r["jax_over_torch"] for r in s["jax_over_torch"]}
  assert ratios == {("torch", 128): 1.25, ("torch", 1024): 0.75, ("torch_compile", 128): 0.8}
  assert gpu_check.best_batch(out, "bfloat16", 128) == 1024
  assert gpu_check.best_batch(out, "float32", 128) == 128  # Nothing measured: the default.


@pytest.mark.parametrize("kind, dtype, peak", [
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989e12), ("NVIDIA H100 PCIe", "bfloat16", 756e12),
    ("NVIDIA H200", "float32", 494e12), ("cpu", "bfloat16", None)])
def test_peak_lookup_prefers_the_specific_name(kind, dtype, peak):
  assert timing.peak_flops(kind, dtype) == peak


def test_pytest_counts_read_a_verbose_log_even_when_cut_off():
  lines = ["===== 2026 UTC part tests: pytest -v ...",
           "tests/test_lrn.py::test_a[1-2] PASSED                                  [  5%]",
           "tests/test_lrn.py::test_b FAILED                                       [ 10%]",
           "tests/test_torch_reference.py::test_c SKIPPED (no torch)               [ 15%]",
           "tests/test_model.py::test_d PASSED",  # The kill came mid-line: no percentage.
           "tests/test_model.py::test_e "]
  assert gpu_check.pytest_counts(lines) == {
      "passed": 2, "failed": 1, "skipped": 1, "failed_names": ["tests/test_lrn.py::test_b"]}
