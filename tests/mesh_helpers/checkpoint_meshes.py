"""Checkpoints across mesh shapes, with two fake devices; prints the errors as JSON.

    JAX_NUM_CPU_DEVICES=2 python tests/mesh_helpers/checkpoint_meshes.py DIR [MULTIHOST_DIR]

model=2 -> one device and back, each restore followed by a train step compared with the
same step on the original mesh. With MULTIHOST_DIR (written by multihost.py), its 2x2
checkpoint from two processes is restored on one device and compared with the params
that run gathered.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import common  # noqa: E402
from alexnet_jax import checkpoint as ckpt_lib  # noqa: E402
from alexnet_jax import mesh as mesh_lib  # noqa: E402


def setup(data, model, devices):
  config = common.tiny_config(data, model)
  spec, tx = common.parts(config)
  mesh = mesh_lib.make_mesh(config, devices)
  init = mesh_lib.make_init_state(spec, tx, mesh, (28, 28, 3))
  train_step, _ = mesh_lib.make_sharded_steps(spec, tx, mesh, config)
  return mesh, init(config.seed), train_step


def train(state, train_step, mesh, steps):
  for s in steps:
    state, _ = train_step(state, mesh_lib.put_batch(common.batch(s), mesh), np.float32(common.LRS[s]))
  return state


def host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def max_err(a, b):
  return max(common.max_rel_err(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def exact(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main():
  out = sys.argv[1]
  devices = jax.devices()
  errs = {}
  two_mesh, two_state, two_step = setup(1, 2, devices[:2])
  one_mesh, one_init, one_step = setup(1, 1, devices[:1])

  # Saved on model=2, restored on one device.
  two_state = train(two_state, two_step, two_mesh, [0, 1])
  saved = host(two_state)
  ck = ckpt_lib.Checkpointer(os.path.join(out, "from_model2"), async_save=False)
  ck.save(2, two_state, {"wall_time": 1.5}, force=True)
  restored, host_state = ck.restore(one_init)
  ck.close()
  errs["model2_to_1_exact"] = exact(host(restored), saved)
  errs["model2_to_1_host_state"] = host_state == {"wall_time": 1.5}
  errs["model2_to_1_one_device"] = all(
      len(x.sharding.device_set) == 1 for x in jax.tree.leaves(restored))
  # Training goes on from it as it would have on the original mesh.
  cont_one = host(train(restored, one_step, one_mesh, [2]).params)
  cont_two = host(train(two_state, two_step, two_mesh, [2]).params)
  errs["model2_to_1_next_step"] = max_err(cont_one, cont_two)

  # And back: saved on one device, restored with one tower per device.
  _, one_fresh, _ = setup(1, 1, devices[:1])
  one_state = train(one_fresh, one_step, one_mesh, [0, 1])
  saved = host(one_state)
  ck = ckpt_lib.Checkpointer(os.path.join(out, "from_model1"), async_save=False)
  ck.save(2, one_state, {}, force=True)
  _, two_target, _ = setup(1, 2, devices[:2])
  restored, _ = ck.restore(two_target)
  ck.close()
  errs["model1_to_2_exact"] = exact(host(restored), saved)
  errs["model1_to_2_tower_rows"] = int(restored.params["conv1"]["kernel"].addressable_shards[0].data.shape[0])

  if len(sys.argv) > 2:
    # The two-process 2x2 run's checkpoint on one device.
    ck = ckpt_lib.Checkpointer(os.path.join(sys.argv[2], "ckpt"), async_save=False)
    restored, host_state = ck.restore(one_init)
    ck.close()
    want = np.load(os.path.join(sys.argv[2], "2x2.npz"))
    got = common.flat(restored.params, "params")
    errs["multihost_to_1_exact"] = all(np.array_equal(got[k], want[k]) for k in got)
    errs["multihost_host_state"] = host_state == {"note": "2x2"}
    ref = common.reference(common.tiny_config())
    ref_params = common.flat(ref["state"].params, "params")
    for shape in ("2x2", "1x2"):
      run = np.load(os.path.join(sys.argv[2], f"{shape}.npz"))
      errs[f"multihost_{shape}_params"] = max(
          common.max_rel_err(run[k], ref_params[k]) for k in ref_params)
      errs[f"multihost_{shape}_loss"] = common.max_rel_err(run["loss"], ref["metrics"][-1]["loss"])
  print("RESULT " + json.dumps(errs), flush=True)


if __name__ == "__main__":
  main()
