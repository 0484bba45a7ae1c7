"""Sharded vs single-device runs on (data, model) meshes; prints the errors as JSON lines.

    JAX_NUM_CPU_DEVICES=4 python tests/mesh_helpers/equivalence.py 2x2 1x1
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import common  # noqa: E402
from alexnet_jax import mesh as mesh_lib  # noqa: E402
from alexnet_jax import step as step_lib  # noqa: E402
from alexnet_jax.models import AlexNet  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("meshes", nargs="+", help="DATAxMODEL, e.g. 2x1 1x2")
  args = ap.parse_args()
  ref = common.reference(common.tiny_config())
  for shape in args.meshes:
    data, model = (int(v) for v in shape.split("x"))
    errs = compare(common.tiny_config(data, model), ref)
    print("RESULT " + json.dumps({"mesh": shape, **errs}), flush=True)


def compare(config, ref):
  spec, tx = common.parts(config)
  n = config.mesh.data * config.mesh.model
  mesh = mesh_lib.make_mesh(config, jax.devices()[:n])
  state = mesh_lib.make_init_state(spec, tx, mesh, (28, 28, 3))(config.seed)
  errs = {"init": max(common.max_rel_err(a, b) for a, b in zip(
      jax.tree.leaves(state), jax.tree.leaves(ref["first_state"])))}
  specs = mesh_lib.state_specs(state.params, spec)
  smodel = AlexNet(spec, model_axis=mesh_lib.MODEL, data_axis=mesh_lib.DATA)
  # The loss is model-invariant (fc8's input is gathered invariantly), so only `data`
  # splits the batch; see the alexnet_jax/mesh.py docstring.
  scale = mesh.shape["data"]
  b0 = mesh_lib.put_batch(common.batch(0), mesh)
  drop = jax.random.fold_in(state.rng, state.step)

  def local(params, b, drop):
    logits = smodel.apply({"params": params}, b["image"], train=True, rngs={"dropout": drop})
    (loss, _), grads = jax.value_and_grad(step_lib.loss_and_metrics, has_aux=True)(
        params, smodel, b, drop, b["label"].shape[0] * scale)
    return logits[None], jax.lax.psum(loss, "data"), grads

  f = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(specs, P("data"), P()),
                            out_specs=(P("model", "data"), P(), specs)))
  logits, loss, grads = f(state.params, b0, drop)

  # Every model device computed the whole logits; each copy must match.
  errs["logits"] = max(common.max_rel_err(l, ref["logits"]) for l in np.asarray(logits))
  errs["loss"] = common.max_rel_err(loss, ref["loss"])
  errs["grads"] = max(common.max_rel_err(a, b) for a, b in zip(
      jax.tree.leaves(grads), jax.tree.leaves(ref["grads"])))

  train_step, eval_step = mesh_lib.make_sharded_steps(spec, tx, mesh, config)
  for s in range(common.STEPS):
    state, m = train_step(state, mesh_lib.put_batch(common.batch(s), mesh),
                          jnp.float32(common.LRS[s]))
    for k in m:
      errs[f"metric_{k}"] = max(errs.get(f"metric_{k}", 0.0),
                                common.max_rel_err(m[k], ref["metrics"][s][k]))
  errs["params"] = max(common.max_rel_err(a, b) for a, b in zip(
      jax.tree.leaves(state.params), jax.tree.leaves(ref["state"].params)))
  errs["opt_state"] = max(common.max_rel_err(a, b) for a, b in zip(
      jax.tree.leaves(state.opt_state), jax.tree.leaves(ref["state"].opt_state)))
  errs["step"] = float(int(state.step) != int(ref["state"].step))

  # Tower leaves really are split: each device holds towers // model of them.
  kernel = state.params["conv1"]["kernel"]
  errs["conv1_shard_rows"] = float(kernel.addressable_shards[0].data.shape[0])

  # Eval on 7 rows (not a multiple of the data axis): padding must count for nothing.
  spec1, _ = common.parts(config)
  plain_eval = jax.jit(step_lib.make_eval_step(AlexNet(spec1)))
  eb = common.batch(99, batch_size=7, eval_batch=True)
  want = plain_eval(ref["state"].params, eb)
  got = eval_step(state.params, mesh_lib.put_batch(eb, mesh))
  errs["eval"] = max(common.max_rel_err(got[k], want[k]) for k in want)
  return errs


if __name__ == "__main__":
  main()
