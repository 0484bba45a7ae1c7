"""One process of a two-process run on localhost (gloo CPU collectives).

    JAX_NUM_CPU_DEVICES=2 python tests/mesh_helpers/multihost.py --process_id 0 --port 12345 --out DIR &
    JAX_NUM_CPU_DEVICES=2 python tests/mesh_helpers/multihost.py --process_id 1 --port 12345 --out DIR

Trains the tiny net for common.STEPS steps on two meshes, each process feeding only the
rows of the global batch that its devices hold:
  - 2x2 over all four devices (a data row per process, both towers inside a process);
  - 1x2 over one device of each process (the towers on two hosts, both feeding the batch).
Process 0 writes the final params of each (gathered) to DIR/<mesh>.npz; both processes
save the 2x2 state with orbax to DIR/ckpt, which the test restores on one device.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

import common  # noqa: E402
from alexnet_jax import checkpoint as ckpt_lib  # noqa: E402
from alexnet_jax import mesh as mesh_lib  # noqa: E402


def run(config, devices, out, name, save_dir=None):
  spec, tx = common.parts(config)
  mesh = mesh_lib.make_mesh(config, devices)
  index, count = mesh_lib.data_shard(mesh)
  state = mesh_lib.make_init_state(spec, tx, mesh, (28, 28, 3))(config.seed)
  train_step, _ = mesh_lib.make_sharded_steps(spec, tx, mesh, config)
  rows = common.BATCH // count
  for s in range(common.STEPS):
    full = common.batch(s)
    mine = {k: v[index * rows:(index + 1) * rows] for k, v in full.items()}
    state, metrics = train_step(state, mesh_lib.put_batch(mine, mesh), np.float32(common.LRS[s]))
  params = multihost_utils.process_allgather(state.params, tiled=True)
  loss = float(metrics["loss"])  # Replicated: readable on every process.
  if jax.process_index() == 0:
    np.savez(os.path.join(out, f"{name}.npz"), loss=loss, **common.flat(params, "params"))
  if save_dir is not None:
    checkpointer = ckpt_lib.Checkpointer(save_dir, async_save=False)
    checkpointer.save(common.STEPS, state, {"note": name}, force=True)
    checkpointer.close()


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--process_id", type=int, required=True)
  ap.add_argument("--port", type=int, required=True)
  ap.add_argument("--out", required=True)
  args = ap.parse_args()
  config = common.tiny_config(2, 2)
  config.distributed.enabled = True
  config.distributed.coordinator_address = f"localhost:{args.port}"
  config.distributed.num_processes = 2
  config.distributed.process_id = args.process_id
  assert mesh_lib.initialize_distributed(config)
  assert jax.process_count() == 2 and jax.device_count() == 4

  run(config, None, args.out, "2x2", save_dir=os.path.join(args.out, "ckpt"))
  # One device per process: the model axis crosses the process boundary.
  pair = [min((d for d in jax.devices() if d.process_index == p), key=lambda d: d.id)
          for p in range(2)]
  run(common.tiny_config(1, 2), pair, args.out, "1x2")
  multihost_utils.sync_global_devices("done")
  print("MULTIHOST OK", jax.process_index(), flush=True)


if __name__ == "__main__":
  main()
