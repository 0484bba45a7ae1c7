"""Collectives of the compiled train step on each mesh; prints them as JSON lines.

    JAX_NUM_CPU_DEVICES=2 python tests/mesh_helpers/traffic.py 1x2
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import common  # noqa: E402
from alexnet_jax import collectives as coll  # noqa: E402
from alexnet_jax import mesh as mesh_lib  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("meshes", nargs="+", help="DATAxMODEL, e.g. 1x2")
  args = ap.parse_args()
  for shape in args.meshes:
    data, model = (int(v) for v in shape.split("x"))
    config = common.tiny_config(data, model)
    spec, tx = common.parts(config)
    mesh = mesh_lib.make_mesh(config, jax.devices()[:data * model])
    state = mesh_lib.make_init_state(spec, tx, mesh, (28, 28, 3))(config.seed)
    train_step, _ = mesh_lib.make_sharded_steps(spec, tx, mesh, config)
    batch = mesh_lib.put_batch(common.batch(0), mesh)
    hlo = train_step.lower(state, batch, np.float32(0.1)).compile().as_text()
    fc8_bytes = sum(int(np.asarray(v).nbytes) for v in jax.tree.leaves(state.params["fc8"]))
    print("RESULT " + json.dumps({
        "mesh": shape, "collectives": coll.collectives(hlo), "fc8_param_bytes": fc8_bytes,
        "paper": coll.paper_bytes(spec, common.BATCH // data)}), flush=True)


if __name__ == "__main__":
  main()
