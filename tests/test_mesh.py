"""The (data, model) mesh: sharded runs equal the single-device run, checkpoints move
between mesh shapes, two processes on localhost train like one, bad shapes are refused.

Runs with several (fake CPU) devices happen in subprocesses (tests/mesh_helpers/), since
`JAX_NUM_CPU_DEVICES` is read once when JAX starts.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import jax
import pytest
from jax.sharding import PartitionSpec as P

from alexnet_jax import collectives as coll
from alexnet_jax import config as config_lib
from alexnet_jax import mesh as mesh_lib
from alexnet_jax import step as step_lib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "mesh_helpers"))
import common  # noqa: E402

HELPERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mesh_helpers")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-5


def _env(devices):
  env = dict(os.environ)
  env["JAX_NUM_CPU_DEVICES"] = str(devices)
  env["JAX_PLATFORMS"] = "cpu"
  # -O0 codegen: these graphs compile ~10x faster and the numbers compared are produced
  # under the same flags on both sides.
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _results(proc_out: str) -> list[dict]:
  return [json.loads(line[len("RESULT "):]) for line in proc_out.splitlines()
          if line.startswith("RESULT ")]


def _run(devices, script, *args, timeout=240):
  proc = subprocess.run([sys.executable, os.path.join(HELPERS, script), *args], env=_env(devices),
                        capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return _results(proc.stdout)


# --------------------------------------------------------------------------------------
# Sharded == single device.

NUMERIC = ("init", "logits", "loss", "grads", "params", "opt_state", "eval", "metric_loss",
           "metric_top1_err", "metric_top5_err", "metric_count")


def _check_equivalence(results, expected):
  assert [r["mesh"] for r in results] == list(expected)
  for r in results:
    for key in NUMERIC:
      assert r[key] <= TOL, (r["mesh"], key, r[key])
    assert r["step"] == 0.0
    data, model = (int(v) for v in r["mesh"].split("x"))
    # conv1's kernel is (towers, ...): each device holds towers // model of them.
    assert r["conv1_shard_rows"] == 2 // model, r


def test_two_devices_data_parallel_and_paper_layout_equal_one_device():
  # 1x1 is the single-device run through the same shard_map code path.
  _check_equivalence(_run(2, "equivalence.py", "1x1", "2x1", "1x2"), ["1x1", "2x1", "1x2"])


def test_four_devices_2x2_equals_one_device():
  _check_equivalence(_run(4, "equivalence.py", "2x2"), ["2x2"])


def test_paper_layout_moves_only_the_tower_activations():
  # One tower per device: the towers' activations cross before conv3, fc6, fc7 and fc8, and
  # their gradients come back except fc8's input's (fc8 is replicated, so each device has
  # the whole cotangent and slices its part). No all-reduce over more than one device:
  # fc8's gradient summed over `model` would be one, and it is the paper net's 16 MB.
  (r,) = _run(2, "traffic.py", "1x2")
  colls = [(op, size, n) for op, size, n in r["collectives"] if n != 1]  # n=1 moves nothing.
  assert not [c for c in colls if c[0] not in ("all-gather", "reduce-scatter")], colls
  received = {}
  for op, size, n in colls:
    received[op] = received.get(op, 0) + coll.received_bytes(op, size, n)
  fwd = r["paper"]["forward"]
  assert received["all-gather"] == sum(fwd.values()), (received, fwd)
  assert received["reduce-scatter"] == sum(fwd.values()) - fwd["fc8"], (received, fwd)


# --------------------------------------------------------------------------------------
# Two processes; checkpoints across meshes.


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_and_checkpoints_move_between_meshes(tmp_path):
  mh = tmp_path / "multihost"
  mh.mkdir()
  port = str(_free_port())
  script = os.path.join(HELPERS, "multihost.py")
  procs = [subprocess.Popen([sys.executable, script, "--process_id", str(i), "--port", port,
                             "--out", str(mh)], env=_env(2), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  try:
    outs = [p.communicate(timeout=240)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, (p, out) in enumerate(zip(procs, outs)):
    assert p.returncode == 0 and f"MULTIHOST OK {i}" in out, out[-4000:]

  (r,) = _run(2, "checkpoint_meshes.py", str(tmp_path / "ckpt"), str(mh))
  # model=2 -> one device -> model=2, bit for bit, and training continues identically.
  assert r["model2_to_1_exact"] and r["model2_to_1_host_state"] and r["model2_to_1_one_device"]
  assert r["model2_to_1_next_step"] <= TOL
  assert r["model1_to_2_exact"] and r["model1_to_2_tower_rows"] == 1
  # The checkpoint both processes wrote restores on one device.
  assert r["multihost_to_1_exact"] and r["multihost_host_state"]
  # Both two-process runs (2x2: a data row per process; 1x2: the towers on two processes)
  # ended where one process on one device does.
  for shape in ("2x2", "1x2"):
    assert r[f"multihost_{shape}_params"] <= TOL, r
    assert r[f"multihost_{shape}_loss"] <= TOL, r


def test_training_resumed_on_another_mesh_ends_where_one_mesh_does(tmp_path):
  # train_and_evaluate itself: 3 steps with a tower per device, the rest data-parallel, with
  # odd eval batches padded; against the same run data-parallel throughout.
  (r,) = _run(2, "train_meshes.py", str(tmp_path))
  assert r["steps"] == [12, 12]
  assert r["params"] <= TOL and r["metrics"] <= TOL, r


# --------------------------------------------------------------------------------------
# In this process (one device): shapes, specs, padding.


def _config(**mesh):
  c = common.tiny_config()
  for k, v in mesh.items():
    if k == "towers":
      config_lib.one_tower(c)
    elif k == "batch":
      c.batch_size = v
    else:
      c.mesh[k] = v
  return c


def test_mesh_shapes():
  assert mesh_lib.mesh_shape(_config(), 8) == (8, 1)
  assert mesh_lib.mesh_shape(_config(model=2), 8) == (4, 2)
  assert mesh_lib.mesh_shape(_config(model=2, data=4), 8) == (4, 2)
  assert mesh_lib.mesh_shape(_config(model=2), 2) == (1, 2)
  mesh = mesh_lib.make_mesh(_config())
  assert dict(mesh.shape) == {"data": jax.device_count(), "model": 1}
  assert mesh_lib.data_shard(mesh) == (0, 1)


@pytest.mark.parametrize("edit, devices, words", [
    (dict(model=2, towers=1), 2, ["config.mesh.model=2", "config.model.towers=1", "mesh.model=1"]),
    (dict(model=3), 3, ["config.mesh.model=3", "use 1"]),
    (dict(model=2), 3, ["config.mesh.model=2", "3 devices"]),
    (dict(data=3), 4, ["config.mesh.data=3", "4", "--config.mesh.data=-1"]),
    (dict(data=2, model=2), 2, ["config.mesh.data=2", "--config.mesh.data=1"]),
    (dict(batch=6), 4, ["config.batch_size=6", "4", "--config.batch_size=8"]),
])
def test_bad_mesh_shapes_say_which_field_and_the_fix(edit, devices, words):
  with pytest.raises(config_lib.ConfigError) as e:
    mesh_lib.mesh_shape(_config(**edit), devices)
  for w in words:
    assert w in str(e.value), str(e.value)


def test_towers_and_their_optimizer_slots_split_over_model_the_rest_replicated():
  config = _config()
  spec, tx = common.parts(config)
  from alexnet_jax.models import AlexNet
  abstract = jax.eval_shape(lambda: step_lib.init_state(AlexNet(spec), tx, jax.random.PRNGKey(0),
                                                        (28, 28, 3)))
  specs = mesh_lib.state_specs(abstract, spec)
  flat = {jax.tree_util.keystr(k): v for k, v in
          jax.tree_util.tree_flatten_with_path(specs, is_leaf=lambda x: isinstance(x, P))[0]}
  towers = {k for k, v in flat.items() if v == P("model")}
  assert {k for k in towers if k.startswith(".params")} == {
      f".params['{layer}']['{kind}']" for layer in ("conv1", "conv2", "conv3", "conv4", "conv5",
                                                   "fc6", "fc7") for kind in ("kernel", "bias")}
  # The momentum slots follow their params; fc8, step, rng and the learning rate do not.
  assert sum("trace" in k for k in towers) == 14
  assert flat[".params['fc8']['kernel']"] == P() and flat[".step"] == P() and flat[".rng"] == P()
  assert all(v == P() for k, v in flat.items() if "learning_rate" in k or "count" in k)


def test_eval_batches_that_do_not_split_are_padded_with_mask_zero():
  b = common.batch(0, batch_size=7, eval_batch=True)
  padded = mesh_lib.pad_batch(b, 4)
  assert padded["image"].shape[0] == 8 and padded["mask"].tolist() == [1.0] * 7 + [0.0]
  assert mesh_lib.pad_batch(b, 7) is b
  with pytest.raises(ValueError, match="config.batch_size"):
    mesh_lib.pad_batch(common.batch(0, batch_size=7), 4)



def test_distributed_without_a_coordinator_says_what_to_set(monkeypatch):
  for var in ("JAX_COORDINATOR_ADDRESS", "SLURM_STEP_NUM_TASKS", "SLURM_JOB_ID",
              "OMPI_MCA_orte_hnp_uri", "KUBERNETES_SERVICE_HOST"):
    monkeypatch.delenv(var, raising=False)
  c = _config()
  assert mesh_lib.initialize_distributed(c) is False  # Not asked for: nothing happens.
  c.distributed.enabled = True
  with pytest.raises(config_lib.ConfigError, match="config.distributed.coordinator_address"):
    mesh_lib.initialize_distributed(c)
