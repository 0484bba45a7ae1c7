r"""Step time and collective traffic of the sharded train step, per mesh shape.

    JAX_NUM_CPU_DEVICES=2 python benchmarks/mesh_step.py --model small --batch 128 \
        --meshes 1x1 2x1 1x2 --plain
    JAX_NUM_CPU_DEVICES=2 python benchmarks/mesh_step.py --model paper --batch 16 --meshes 2x1 1x2

For each mesh: median wall time of a train step (after compilation), and every collective in
the compiled HLO with the bytes of its result per device and the bytes a device receives
(ring algorithms: all-gather and reduce-scatter (n-1)/n of the full array, all-reduce
2(n-1)/n). `--plain` also times the old single-device `jax.jit(make_train_step)`.
Alongside, `paper_bytes` is what the paper's design moves between its two GPUs per step:
the activations crossing before conv3, fc6, fc7 and fc8 forward, and their gradients back.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax import collectives as coll
from alexnet_jax import config as config_lib
from alexnet_jax import mesh as mesh_lib
from alexnet_jax import optim
from alexnet_jax import step as step_lib
from alexnet_jax.models import AlexNet, ModelSpec


def make_config(name, batch, data, model):
  c = config_lib.base_config()
  if name == "small":
    config_lib.small_model(c, num_classes=10, crop=28)
    c.data.crop_size = 28
    c.data.image_size = 32
  c.batch_size = batch
  c.mesh.data, c.mesh.model = data, model
  return c


def time_steps(step, state, batch, steps):
  lr = np.float32(0.01)
  state, m = step(state, batch, lr)  # Compiles.
  jax.block_until_ready(m)
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    state, m = step(state, batch, lr)
    jax.block_until_ready((state, m))
    times.append(time.perf_counter() - t)
  return statistics.median(times), state


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--model", choices=["small", "paper"], default="small")
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument("--meshes", nargs="+", default=["1x1"])
  ap.add_argument("--plain", action="store_true")
  args = ap.parse_args()

  rng = np.random.default_rng(0)
  results = []
  for shape in args.meshes:
    data, model = (int(v) for v in shape.split("x"))
    config = make_config(args.model, args.batch, data, model)
    spec = ModelSpec.from_config(config.model)
    probe = jax.eval_shape(lambda: AlexNet(spec).init(
        {"params": jax.random.PRNGKey(0)}, jnp.zeros((1, spec.input_size, spec.input_size, 3)),
        train=False)["params"])
    tx = optim.make_optimizer(config.optim, probe)
    mesh = mesh_lib.make_mesh(config, jax.devices()[:data * model])
    host_batch = {"image": rng.normal(size=(args.batch, spec.input_size, spec.input_size, 3))
                  .astype(np.float32),
                  "label": rng.integers(0, spec.num_classes, (args.batch,)).astype(np.int32)}
    batch = mesh_lib.put_batch(host_batch, mesh)
    state = mesh_lib.make_init_state(spec, tx, mesh, (spec.input_size, spec.input_size, 3))(0)
    train_step, _ = mesh_lib.make_sharded_steps(spec, tx, mesh, config)
    hlo = train_step.lower(state, batch, np.float32(0.01)).compile().as_text()
    colls = coll.collectives(hlo)
    seconds, state = time_steps(train_step, state, batch, args.steps)
    summary = {}
    for op, size, n in colls:
      s = summary.setdefault(f"{op}(n={n})", {"count": 0, "result_bytes": 0, "received_bytes": 0})
      s["count"] += 1
      s["result_bytes"] += size
      s["received_bytes"] += coll.received_bytes(op, size, n)
    results.append({"mesh": shape, "step_s": seconds, "collectives": summary,
                    "received_bytes_total": sum(v["received_bytes"] for v in summary.values())})
    print(json.dumps(results[-1]), flush=True)
    del state

  if args.plain:
    config = make_config(args.model, args.batch, 1, 1)
    spec = ModelSpec.from_config(config.model)
    model = AlexNet(spec)
    probe = jax.eval_shape(lambda: model.init(
        {"params": jax.random.PRNGKey(0)}, jnp.zeros((1, spec.input_size, spec.input_size, 3)),
        train=False)["params"])
    tx = optim.make_optimizer(config.optim, probe)
    state = jax.jit(lambda s: step_lib.init_state(model, tx, jax.random.PRNGKey(s),
                                                  (spec.input_size,) * 2 + (3,)))(0)
    step = jax.jit(step_lib.make_train_step(model, tx), donate_argnums=(0,))
    seconds, _ = time_steps(step, state, host_batch, args.steps)
    print(json.dumps({"mesh": "plain jit, one device", "step_s": seconds}), flush=True)

  spec = ModelSpec.from_config(make_config(args.model, args.batch, 1, 1).model)
  print(json.dumps({"paper_bytes_per_gpu_per_step": coll.paper_bytes(spec, args.batch)}), flush=True)


if __name__ == "__main__":
  main()
