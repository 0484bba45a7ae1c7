r"""Is the one-device mesh (1x1 shard_map) as fast as the plain jitted step? Alternates them.

    JAX_NUM_CPU_DEVICES=1 python benchmarks/mesh_vs_plain.py [--batch 128] [--rounds 6]

Rounds alternate so that load from other processes hits both alike; prints per-round and
median seconds per step (small net, float32).
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax import mesh as mesh_lib
from alexnet_jax import optim
from alexnet_jax import step as step_lib
from alexnet_jax.models import AlexNet, ModelSpec
from mesh_step import make_config


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--rounds", type=int, default=6)
  ap.add_argument("--steps", type=int, default=5)
  args = ap.parse_args()
  c = make_config("small", args.batch, 1, 1)
  spec = ModelSpec.from_config(c.model)
  model = AlexNet(spec)
  shape = (spec.input_size, spec.input_size, 3)
  probe = jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0)},
                                            jnp.zeros((1, *shape)), train=False)["params"])
  tx = optim.make_optimizer(c.optim, probe)
  rng = np.random.default_rng(0)
  host = {"image": rng.normal(size=(args.batch, *shape)).astype(np.float32),
          "label": rng.integers(0, spec.num_classes, (args.batch,)).astype(np.int32)}

  mesh = mesh_lib.make_mesh(c, jax.devices()[:1])
  mesh_step, _ = mesh_lib.make_sharded_steps(spec, tx, mesh, c)
  plain_step = jax.jit(step_lib.make_train_step(model, tx), donate_argnums=(0,))
  runs = {
      "mesh 1x1": [mesh_step, mesh_lib.make_init_state(spec, tx, mesh, shape)(0),
                   mesh_lib.put_batch(host, mesh)],
      "plain jit": [plain_step, jax.jit(lambda s: step_lib.init_state(
          model, tx, jax.random.PRNGKey(s), shape))(0), jax.device_put(host)],
  }
  times = {k: [] for k in runs}
  for _ in range(args.rounds):
    for name, run in runs.items():
      step, state, batch = run
      state, m = step(state, batch, np.float32(0.01))  # Compiles in round one.
      jax.block_until_ready(m)
      t = time.perf_counter()
      for _ in range(args.steps):
        state, m = step(state, batch, np.float32(0.01))
      jax.block_until_ready((state, m))
      times[name].append((time.perf_counter() - t) / args.steps)
      run[1] = state
  for name, ts in times.items():
    print(f"{name}: median {statistics.median(ts):.4f} s/step, rounds {[round(t, 4) for t in ts]}")


if __name__ == "__main__":
  main()
