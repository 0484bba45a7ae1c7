r"""Step time and collective traffic of the sharded train step, per mesh shape.

    JAX_NUM_CPU_DEVICES=2 python benchmarks/mesh_step.py --model small --batch 128 \
        --meshes 1x1 2x1 1x2 --plain
    JAX_NUM_CPU_DEVICES=2 python benchmarks/mesh_step.py --model paper --batch 16 --meshes 2x1 1x2
    JAX_NUM_CPU_DEVICES=1 python benchmarks/mesh_step.py --meshes 1x1 --plain   # mesh vs plain jit

For each mesh: median wall time per train step (after compilation), and every collective in
the compiled HLO with the bytes of its result per device and the bytes a device receives
(ring algorithms: all-gather and reduce-scatter (n-1)/n of the full array, all-reduce
2(n-1)/n). `--plain` adds the single-device `jax.jit(make_train_step)` (is the one-device mesh
as fast?). Repeats of all runs alternate, so load from other processes hits each alike.
Alongside, `paper_bytes` is what the paper's design moves between its two GPUs per step: the
activations crossing before conv3, fc6, fc7 and fc8 forward, and their gradients back.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import timing  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from alexnet_jax import collectives as coll  # noqa: E402
from alexnet_jax import config as config_lib  # noqa: E402
from alexnet_jax import mesh as mesh_lib  # noqa: E402
from alexnet_jax import optim  # noqa: E402
from alexnet_jax import step as step_lib  # noqa: E402
from alexnet_jax.models import AlexNet, ModelSpec  # noqa: E402

LR = np.float32(0.01)


def make_config(name, batch, data, model, dtype="float32"):
  c = config_lib.base_config()
  if name == "small":
    config_lib.small_model(c, num_classes=10, crop=28)
    c.data.crop_size = 28
    c.data.image_size = 32
  c.model.dtype = dtype
  c.batch_size = batch
  c.mesh.data, c.mesh.model = data, model
  return c


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--model", choices=["small", "paper"], default="small")
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  ap.add_argument("--meshes", nargs="+", default=["1x1"], help="DATAxMODEL shapes")
  ap.add_argument("--plain", action="store_true", help="also time the plain jitted step")
  ap.add_argument("--steps", type=int, default=5, help="steps per timed repeat")
  ap.add_argument("--repeats", type=int, default=6)
  ap.add_argument("--jsonl", default=None, help="append every record to this file")
  args = ap.parse_args(argv)
  sink = timing.JsonLines(args.jsonl, device=jax.devices()[0].device_kind, what="mesh_step",
                          model=args.model, batch=args.batch, dtype=args.dtype)

  rng = np.random.default_rng(0)
  spec = ModelSpec.from_config(make_config(args.model, args.batch, 1, 1, args.dtype).model)
  shape = (spec.input_size, spec.input_size, 3)
  host_batch = {"image": rng.normal(size=(args.batch, *shape)).astype(np.float32),
                "label": rng.integers(0, spec.num_classes, (args.batch,)).astype(np.int32)}
  probe = jax.eval_shape(lambda: AlexNet(spec).init(
      {"params": jax.random.PRNGKey(0)}, jnp.zeros((1, *shape)), train=False)["params"])
  runs, records = {}, {}
  for mesh_shape in args.meshes:
    data, model = (int(v) for v in mesh_shape.split("x"))
    config = make_config(args.model, args.batch, data, model, args.dtype)
    tx = optim.make_optimizer(config.optim, probe)
    mesh = mesh_lib.make_mesh(config, jax.devices()[:data * model])
    batch = mesh_lib.put_batch(host_batch, mesh)
    state = mesh_lib.make_init_state(spec, tx, mesh, shape)(0)
    train_step, _ = mesh_lib.make_sharded_steps(spec, tx, mesh, config)
    summary = {}
    for op, size, n in coll.collectives(train_step.lower(state, batch, LR).compile().as_text()):
      s = summary.setdefault(f"{op}(n={n})", {"count": 0, "result_bytes": 0, "received_bytes": 0})
      s["count"] += 1
      s["result_bytes"] += size
      s["received_bytes"] += coll.received_bytes(op, size, n)
    records[mesh_shape] = {"mesh": mesh_shape, "collectives": summary, "received_bytes_total":
                           sum(v["received_bytes"] for v in summary.values())}
    runs[mesh_shape] = timing.StepLoop(train_step, state, batch, LR)
  if args.plain:
    model = AlexNet(spec)
    tx = optim.make_optimizer(make_config(args.model, args.batch, 1, 1).optim, probe)
    state = jax.jit(lambda s: step_lib.init_state(model, tx, jax.random.PRNGKey(s), shape))(0)
    step = jax.jit(step_lib.make_train_step(model, tx), donate_argnums=(0,))
    records["plain"] = {"mesh": "plain jit, one device"}
    runs["plain"] = timing.StepLoop(step, state, jax.device_put(host_batch), LR)

  for k, run in runs.items():
    records[k]["first_step_s"] = timing.first_call_s(run)
  times = timing.interleave(runs, args.repeats, args.steps)
  for k, ts in times.items():
    print(json.dumps(sink.emit({**records[k], "step_s": statistics.median(ts),
                                "step_s_all": [round(t, 5) for t in ts]})), flush=True)
  print(json.dumps(sink.emit({"paper_bytes_per_gpu_per_step":
                              coll.paper_bytes(spec, args.batch)})), flush=True)


if __name__ == "__main__":
  main()
