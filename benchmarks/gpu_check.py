r"""The prepared GPU check (issue 11): one command, every figure in a JSON as soon as it exists.

    benchmarks/gpu_check.sh                                  # on the GPU machine (see RESULTS.md)
    python benchmarks/gpu_check.py --platform=cpu --tiny --out=/tmp/gc   # rehearsal, ~3 min

Parts, in this order, each a subprocess with its own time limit inside one overall budget
(`--budget`), so a slow part cannot starve the others; a part that would start with less
than its minimum left is skipped and says so:

  env            device, driver, jax/jaxlib/flax/optax/torch versions
  tests          the device-code tests (model, step, LRN/pool fast paths, bf16 path, torch
                 reference, mesh shapes) through pytest on this platform at float32
                 'highest' matmul precision (they check formulas, not speed), and the
                 one-device mesh against the plain step (tests/mesh_helpers/equivalence.py)
  step_bf16      the paper net's train step, bf16 compute with float32 master weights, at
  step_f32       batches 128 to 1024, then float32 (TF32 matmuls): img/s, ms/step, MFU
                 against the chip's dense peak, fraction of an 8192^2 matmul of the same run
  torch_eager    benchmarks/torch_alexnet.py, same net/optimizer/batch/dtype, at 128 and at
                 JAX's best batch -> JAX/PyTorch ratios
  torch_compile  the same through torch.compile (batch 128, bf16), if it compiles in time
  profile        a jax.profiler trace of the bf16 step at the best batch, summed per layer
                 (the trace itself comes back as trace.tar.gz)
  fmnist         the README's main job (Fashion-MNIST, files from --fmnist_dir): minutes and
                 test accuracy
  input          run_input_benchmark(out_json, seconds) -> the function of the same
                 name in benchmarks/input_pipeline.py (being rewritten on grain)
  mesh           the one-device mesh step against the plain jitted step, timed alternately

Files under --out (default $OUT, else runs/gpu_check): figures.jsonl (one record per
figure, appended by each part the moment it is measured), gpu_check.json (the summary,
rewritten after every part), log.txt (every part's output), trace.tar.gz.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
PY = sys.executable

from benchmarks import timing  # noqa: E402  (imports jax, but never starts a backend here)

# The device-code tests (issue 11, part 2). The mesh tests listed run in this process, on this
# platform; the rest of test_mesh.py fakes CPU devices in subprocesses.
TESTS = ["tests/test_speed_paths.py", "tests/test_model.py",
         "tests/test_mesh.py::test_mesh_shapes",
         "tests/test_mesh.py::test_towers_and_their_optimizer_slots_split_over_model_the_rest_replicated",
         "tests/test_mesh.py::test_eval_batches_that_do_not_split_are_padded_with_mask_zero",
         "tests/test_lrn.py", "tests/test_flops.py", "tests/test_torch_reference.py"]
TINY_TESTS = ["tests/test_speed_paths.py::test_bfloat16_compute_keeps_float32_master_weights_and_loss",
              "tests/test_mesh.py::test_mesh_shapes"]
# One-device mesh vs plain step: the equivalence test's tolerance (1e-5) is for CPU
# float32; on a GPU both sides run at 'highest' precision too.
MESH_TOL = 1e-4
MESH_COMPARED = ("init", "logits", "loss", "grads", "params", "opt_state", "eval", "metric_loss",
                 "metric_top1_err", "metric_top5_err", "metric_count")


# ---------------------------------------------------------------------------------------------
# Output.


class Out:
  def __init__(self, folder: str):
    os.makedirs(folder, exist_ok=True)
    self.folder = folder
    self.figures = os.path.join(folder, "figures.jsonl")
    self.log_path = os.path.join(folder, "log.txt")
    self.summary: dict = {"started": _now(), "parts": {}}
    self.emit = timing.JsonLines(self.figures).emit

  def log(self, text: str) -> None:
    with open(self.log_path, "a") as f:
      f.write(text if text.endswith("\n") else text + "\n")

  def save(self) -> None:
    path = os.path.join(self.folder, "gpu_check.json")
    with open(path + ".tmp", "w") as f:
      json.dump(self.summary, f, indent=1, default=str)
    os.replace(path + ".tmp", path)  # Never a half-written summary.


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def run_bounded(out: Out, name: str, cmd: list[str], limit: float, env=None) -> dict:
  """Runs `cmd` with its output appended to log.txt; kills its whole group after `limit` s."""
  out.log(f"\n===== {_now()} part {name}: {shlex.join(cmd)} (limit {limit:.0f} s)")
  t = time.perf_counter()
  with open(out.log_path, "ab") as log:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
      rc = proc.wait(timeout=max(limit, 1))
      status = "ok" if rc == 0 else f"failed (exit {rc})"
    except subprocess.TimeoutExpired:
      os.killpg(proc.pid, signal.SIGKILL)  # pytest, compile workers and all.
      proc.wait()
      rc, status = None, f"timed out after {limit:.0f} s"
  seconds = time.perf_counter() - t
  out.log(f"===== part {name}: {status} in {seconds:.1f} s")
  return {"status": status, "seconds": round(seconds, 1), "command": shlex.join(cmd), "rc": rc}


def child_env(extra: dict | None = None) -> dict:
  env = dict(os.environ)
  env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
  env["PYTHONUNBUFFERED"] = "1"
  env.update(extra or {})
  return env


def records(out: Out, what: str, **match) -> list[dict]:
  return [r for r in timing.read_json_lines(out.figures)
          if r.get("what") == what and all(r.get(k) == v for k, v in match.items())]


def best_batch(out: Out, dtype: str, default: int) -> int:
  rs = records(out, "train_step", framework="jax", dtype=dtype)
  return max(rs, key=lambda r: r["img_per_s"])["batch"] if rs else default


# ---------------------------------------------------------------------------------------------
# Parts. Each returns a command (run bounded) or does its work in-process (quick ones only).


def part_env(a, out: Out, limit: float) -> dict:
  script = (
      "import json, os, platform, importlib.metadata as md\n"
      "v = {}\n"
      "for p in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'ml-collections', 'numpy',"
      " 'torch', 'grain', 'tensorflow'):\n"
      "  try: v[p] = md.version(p)\n"
      "  except md.PackageNotFoundError: v[p] = None\n"
      "import jax\n"
      "d = jax.devices()\n"
      "print('ENV ' + json.dumps({'python': platform.python_version(), 'versions': v,"
      " 'backend': jax.default_backend(), 'devices': [x.device_kind for x in d],"
      " 'cpu_cores': os.cpu_count()}))\n")
  res = run_bounded(out, "env", [PY, "-c", script], limit, child_env(_platform_env(a)))
  info = {}
  for line in _log_lines_since(out, "env"):
    if line.startswith("ENV "):
      info = json.loads(line[4:])
  smi = shutil.which("nvidia-smi")
  if smi:
    q = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,clocks.max.sm,"
                        "power.limit", "--format=csv,noheader"], capture_output=True, text=True,
                       timeout=30)
    info["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
  out.summary["env"] = out.emit({"what": "env", **info})
  return res


def _platform_env(a) -> dict:
  return {"JAX_PLATFORMS": "cpu"} if a.platform == "cpu" else {}


def _log_lines_since(out: Out, part: str) -> list[str]:
  """The log from the last start of `part` on: what that part printed."""
  with open(out.log_path, errors="replace") as f:
    text = f.read()
  return text[text.rfind(f" UTC part {part}: "):].splitlines()


def part_tests(a, out: Out, limit: float) -> dict:
  env = child_env({**_platform_env(a), "JAX_DEFAULT_MATMUL_PRECISION": "highest"})
  started = time.perf_counter()
  # -v prints each result as it comes, so a run cut off at its limit still counts.
  res = run_bounded(out, "tests", [PY, "-m", "pytest", "-v", "-p", "no:cacheprovider",
                                   *(TINY_TESTS if a.tiny else TESTS)], limit * 0.75, env)
  summary = {"what": "tests", "status": res["status"],
             **pytest_counts(_log_lines_since(out, "tests"))}
  if a.platform == "cpu":  # As tests/test_mesh.py does: -O0 compiles these graphs ~10x faster.
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
  mesh = run_bounded(out, "tests (one-device mesh)",
                     [PY, "tests/mesh_helpers/equivalence.py", "1x1"],
                     max(limit - (time.perf_counter() - started), 1), env)
  errs = [json.loads(l[7:]) for l in _log_lines_since(out, "tests (one-device mesh)")
          if l.startswith("RESULT ")]
  if errs:
    worst = max((errs[0][k], k) for k in MESH_COMPARED if k in errs[0])
    summary["mesh_1x1_vs_plain"] = {"max_rel_err": worst[0], "where": worst[1],
                                    "ok": worst[0] <= MESH_TOL and errs[0].get("step") == 0.0}
  else:
    summary["mesh_1x1_vs_plain"] = {"ok": False, "status": mesh["status"]}
  out.summary["tests"] = out.emit(summary)
  status = res["status"]
  if status == "ok" and not summary["mesh_1x1_vs_plain"]["ok"]:
    status = (f"one-device mesh {mesh['status']}" if not errs else "one-device mesh differs")
  return {**res, "status": status, "seconds": round(time.perf_counter() - started, 1)}


def pytest_counts(lines: list[str]) -> dict:
  """Passed/failed/skipped from `pytest -v` lines (`tests/x.py::name PASSED  [ 5%]`)."""
  outcome = {}
  for line in lines:
    m = re.match(r"^(tests/\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b", line)
    if m:
      outcome[m.group(1)] = m.group(2)
  n = collections.Counter(outcome.values())
  return {"passed": n["PASSED"] + n["XPASS"], "failed": n["FAILED"] + n["ERROR"],
          "skipped": n["SKIPPED"] + n["XFAIL"],
          "failed_names": [k for k, v in outcome.items() if v in ("FAILED", "ERROR")][:30]}


def _train_step_cmd(a, out: Out, dtypes: str, batches: str, frameworks: str) -> list[str]:
  cmd = [PY, "benchmarks/train_step.py", f"--platform={a.platform}",
         f"--config={'tiny' if a.tiny else 'paper'}", f"--batch={batches}", f"--dtype={dtypes}",
         f"--frameworks={frameworks}", f"--jsonl={out.figures}"]
  return cmd + (["--steps=1", "--repeats=2", "--matmul_n=256"] if a.tiny
                else ["--steps=20", "--repeats=5"])


def _batches(a, dtype="float32") -> list[int]:
  if a.batches:
    return [int(b) for b in a.batches.split(",")]
  if a.tiny:  # bf16 is slow to compile and run on a CPU; one batch shows the path works.
    return [8] if dtype == "bfloat16" else [8, 16]
  return [128, 1024, 512, 256]  # 1024 early: it is usually the best.


def part_step(dtype):
  def part(a, out, limit):
    return run_bounded(out, f"step_{dtype}", _train_step_cmd(
        a, out, dtype, ",".join(map(str, _batches(a, dtype))), "jax"), limit, child_env())
  return part


def part_torch_eager(a, out, limit):
  base = _batches(a)[0]
  plan = []
  for dtype in ("bfloat16", "float32"):
    best = best_batch(out, dtype, base)
    plan.append((dtype, sorted({base, best})))
  # One process per dtype: a framework's allocator keeps what the last batch took.
  res = None
  started = time.perf_counter()
  for dtype, batches in plan:
    left = limit - (time.perf_counter() - started)
    res = run_bounded(out, f"torch_eager {dtype}", _train_step_cmd(
        a, out, dtype, ",".join(map(str, batches)), "torch"), left / (2 if dtype == "bfloat16"
                                                                      else 1), child_env())
  return {**res, "seconds": round(time.perf_counter() - started, 1)}


def part_torch_compile(a, out, limit):
  return run_bounded(out, "torch_compile", _train_step_cmd(
      a, out, "bfloat16", str(_batches(a)[0]), "torch_compile"), limit, child_env())


def part_profile(a, out, limit):
  trace_dir = os.path.join(a.scratch, "trace")
  batch = best_batch(out, "bfloat16", _batches(a)[0])
  res = run_bounded(out, "profile", [
      PY, "benchmarks/step_breakdown.py", "profile", f"--config={'tiny' if a.tiny else 'paper'}",
      f"--batch={batch}", "--dtype=bfloat16", "--steps=5", "--top=20",
      f"--trace_dir={trace_dir}", f"--jsonl={out.figures}"], limit,
      child_env(_platform_env(a)))
  if os.path.isdir(trace_dir):
    with tarfile.open(os.path.join(out.folder, "trace.tar.gz"), "w:gz") as t:
      t.add(trace_dir, arcname="trace")
  return res


def part_mesh(a, out, limit):
  return run_bounded(out, "mesh", [
      PY, "benchmarks/mesh_step.py", "--model", "small" if a.tiny else "paper",
      "--batch", "16" if a.tiny else "128", "--dtype", "bfloat16", "--meshes", "1x1", "--plain",
      "--steps", "2" if a.tiny else "20", "--repeats", "2" if a.tiny else "5",
      f"--jsonl={out.figures}"], limit,
      child_env({**_platform_env(a), "JAX_NUM_CPU_DEVICES": "1"}))


def part_fmnist(a, out, limit):
  workdir = os.path.join(a.scratch, "fmnist")
  shutil.rmtree(workdir, ignore_errors=True)
  cmd = [PY, "-m", "alexnet_jax.main",
         "--config=configs/small_fashion_mnist.py" + (":runlocal" if a.tiny else ""),
         f"--workdir={workdir}", f"--config.data.data_dir={os.path.join(a.scratch, 'tfds')}"]
  if a.fmnist_dir:
    cmd.append(f"--config.data.manual_dir={os.path.abspath(a.fmnist_dir)}")
  res = run_bounded(out, "fmnist", cmd, limit, child_env(_platform_env(a)))
  rec = {"what": "fmnist_main_job", "command": res["command"], "status": res["status"],
         "minutes": round(res["seconds"] / 60, 2)}
  try:
    with open(os.path.join(workdir, "final.json")) as f:
      final = json.load(f)
    test = final["test"]["center"]
    rec.update(test_accuracy=round(1 - test["top1_err"], 4),
               test_top5_accuracy=round(1 - test["top5_err"], 4),
               epochs=final["epoch"], train_minutes=round(final["wall_time"] / 60, 2))
  except (OSError, KeyError, ValueError) as e:
    rec["final_json"] = f"none ({type(e).__name__})"
  out.summary["fmnist"] = out.emit(rec)
  return res


def run_input_benchmark(out_json: str, seconds: float) -> dict | list:
  """HOOK (issue 11, part 5): the input pipeline feeding the step, end to end.

  Calls `benchmarks.input_pipeline.run_input_benchmark(out_json, seconds)`, which the grain
  rewrite of the data pipeline provides: it appends its figures (images/s on synthetic
  256-px JPEGs in ArrayRecord, per core, what bounds the rate) to `out_json` and returns
  them. Until then, or wherever it cannot be imported (the GPU machine has no TensorFlow),
  this appends a record saying 'not available' and why, and the check goes on.
  """
  try:
    from benchmarks.input_pipeline import run_input_benchmark as bench
  except ImportError as e:
    rec = {"what": "input_pipeline", "status": "not available",
           "why": f"{type(e).__name__}: {e}"[:300]}
    timing.JsonLines(out_json).emit(rec)
    return rec
  # Prepared 256-px JPEGs only (what an ImageNet run reads); the other cases are for laptops.
  return bench(out_json, seconds, cases=("prepared",), images=512)


def part_input(a, out, limit):
  code = ("import sys; sys.path.insert(0, '.'); from benchmarks.gpu_check import "
          f"run_input_benchmark as r; r({out.figures!r}, {max(limit / 3, 5)!r})")
  res = run_bounded(out, "input", [PY, "-c", code], limit, child_env(_platform_env(a)))
  rs = records(out, "input_pipeline")
  out.summary["input_pipeline"] = rs
  if rs and rs[-1].get("status") == "not available":
    res["status"] = "not available"
  return res


PARTS = {  # name: (function, limit on GPU s, limit with --tiny s, minimum to start s)
    "env": (part_env, 40, 30, 5),
    "tests": (part_tests, 90, 60, 20),
    "step_bf16": (part_step("bfloat16"), 90, 40, 30),
    "step_f32": (part_step("float32"), 55, 30, 20),
    "torch_eager": (part_torch_eager, 50, 30, 15),
    "torch_compile": (part_torch_compile, 75, 50, 30),
    "profile": (part_profile, 30, 25, 15),
    "fmnist": (part_fmnist, 80, 60, 20),
    "input": (part_input, 90, 40, 10),  # a third timing, the rest making and preparing JPEGs
    "mesh": (part_mesh, 25, 25, 15),
}


# ---------------------------------------------------------------------------------------------
# Summary.


def summarize(out: Out) -> None:
  """Best rates, MFU, JAX/PyTorch ratios and the short table printed last."""
  s = out.summary
  steps = records(out, "train_step")
  env = s.get("env", {})
  best = {}
  for dtype in ("bfloat16", "float32"):
    jax_rs = [r for r in steps if r["framework"] == "jax" and r["dtype"] == dtype]
    if not jax_rs:
      continue
    b = max(jax_rs, key=lambda r: r["img_per_s"])
    at128 = [r for r in jax_rs if r["batch"] == min(x["batch"] for x in jax_rs)][0]
    best[dtype] = {k: b[k] for k in ("batch", "img_per_s", "ms_per_step", "of_matmul", "mfu")}
    best[dtype]["at_smallest_batch"] = {k: at128[k] for k in ("batch", "img_per_s",
                                                              "ms_per_step", "mfu")}
    for v in (best[dtype], best[dtype]["at_smallest_batch"]):
      if v["mfu"] is None:
        v["mfu"] = f"unknown (no dense peak listed for {b.get('device')!r})"
  s["jax_step"] = best
  ratios = []
  for t in (r for r in steps if r["framework"].startswith("torch")):
    j = [r for r in steps if r["framework"] == "jax" and r["dtype"] == t["dtype"]
         and r["batch"] == t["batch"] and r["config"] == t["config"]]
    if j:
      ratios.append({"vs": t["framework"], "dtype": t["dtype"], "batch": t["batch"],
                     "jax_img_per_s": j[0]["img_per_s"], "torch_img_per_s": t["img_per_s"],
                     "jax_over_torch": j[0]["img_per_s"] / t["img_per_s"]})
  s["jax_over_torch"] = ratios
  versions = env.get("versions", {})
  lines = [f"gpu_check: {env.get('devices', ['?'])[0]} ({env.get('backend', '?')}), "
           f"jax {versions.get('jax')}, torch {versions.get('torch')}",
           f"{'part':14s} {'status':28s} {'s':>6s}"]
  for name, p in s["parts"].items():
    lines.append(f"{name:14s} {p['status'][:28]:28s} {p.get('seconds', 0):6.1f}")
  lines.append(f"\n{'framework':14s} {'dtype':9s} {'batch':>5s} {'img/s':>9s} {'ms/step':>8s} "
               f"{'of matmul':>9s} {'MFU':>7s}")
  for r in steps:
    mfu = f"{r['mfu']:7.1%}" if isinstance(r.get("mfu"), float) else "unknown"
    lines.append(f"{r['framework']:14s} {r['dtype']:9s} {r['batch']:5d} {r['img_per_s']:9.0f} "
                 f"{r['ms_per_step']:8.2f} {r['of_matmul']:9.1%} {mfu:>7s}")
  for r in ratios:
    lines.append(f"JAX/{r['vs']} {r['dtype']} batch {r['batch']}: {r['jax_over_torch']:.2f}")
  if "tests" in s:
    t = s["tests"]
    lines.append(f"tests: {t.get('passed')} passed, {t.get('failed')} failed, "
                 f"{t.get('skipped')} skipped; one-device mesh vs plain: "
                 f"{t.get('mesh_1x1_vs_plain')}")
  if "fmnist" in s:
    f = s["fmnist"]
    lines.append(f"fmnist main job: {f['status']}, {f['minutes']} min, test accuracy "
                 f"{f.get('test_accuracy', f.get('final_json'))}")
  for r in s.get("input_pipeline", []):
    lines.append(f"input pipeline: {json.dumps(r)[:200]}")
  s["table"] = "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--platform", default="gpu", choices=("gpu", "cpu"))
  p.add_argument("--tiny", action="store_true",
                 help="tiny net and batches, short limits: rehearse every part on a CPU")
  p.add_argument("--out", default=os.environ.get("OUT") or "runs/gpu_check",
                 help="output folder (default $OUT, else runs/gpu_check)")
  p.add_argument("--budget", type=float, default=None,
                 help="seconds for all parts together (default 450; 170 with --tiny)")
  p.add_argument("--parts", default=",".join(PARTS), help=f"subset of {','.join(PARTS)}")
  p.add_argument("--limit", action="append", default=[], metavar="PART=SECONDS",
                 help="override one part's time limit (repeatable)")
  p.add_argument("--batches", default=None,
                 help="train-step batches, comma-separated (default 128,1024,512,256; 8,16 tiny)")
  p.add_argument("--fmnist_dir", default=None,
                 help="folder with the four Fashion-MNIST .gz files (default: the Debian path)")
  p.add_argument("--scratch", default=None, help="work files (default: a temp folder)")
  a = p.parse_args(argv)
  parts = [x.strip() for x in a.parts.split(",") if x.strip()]
  unknown = [x for x in parts if x not in PARTS]
  if unknown:
    p.error(f"--parts: unknown {unknown}; choose from {','.join(PARTS)}")
  limits = {}
  for item in a.limit:
    name, _, secs = item.partition("=")
    if name not in PARTS or not secs.replace(".", "", 1).isdigit():
      p.error(f"--limit={item}: give PART=SECONDS with PART one of {','.join(PARTS)}")
    limits[name] = float(secs)
  a.scratch = a.scratch or tempfile.mkdtemp(prefix="gpu_check_")
  if a.platform == "gpu":
    # The package's default XLA flag tunes XLA:CPU only; on a GPU machine with another jaxlib
    # it is one more way to fail (XLA aborts on a flag it does not know) for no gain.
    os.environ.setdefault("ALEXNET_JAX_DEFAULT_XLA_FLAGS", "0")
  budget = a.budget or (170.0 if a.tiny else 450.0)
  out = Out(a.out)
  out.summary.update(platform=a.platform, tiny=a.tiny, budget_s=budget, argv=sys.argv[1:])
  out.save()
  start = time.perf_counter()
  for name in parts:
    fn, gpu_limit, tiny_limit, minimum = PARTS[name]
    left = budget - (time.perf_counter() - start)
    limit = min(limits.get(name, tiny_limit if a.tiny else gpu_limit), left)
    if limit < min(minimum, limits.get(name, minimum)):
      out.summary["parts"][name] = {"status": f"skipped ({left:.0f} s of budget left)"}
    else:
      print(f"[gpu_check] {name} (up to {limit:.0f} s)", flush=True)
      try:
        out.summary["parts"][name] = fn(a, out, limit)
      except Exception as e:  # noqa: BLE001 - one broken part must not lose the others' figures.
        out.summary["parts"][name] = {"status": f"error: {type(e).__name__}: {e}"[:300]}
    print(f"[gpu_check] {name}: {out.summary['parts'][name]['status']}", flush=True)
    summarize(out)
    out.save()
  out.summary["total_s"] = round(time.perf_counter() - start, 1)
  summarize(out)
  out.save()
  print(out.summary["table"])
  print(f"[gpu_check] {out.folder}: gpu_check.json, figures.jsonl, log.txt")
  return 0


if __name__ == "__main__":
  sys.exit(main())
