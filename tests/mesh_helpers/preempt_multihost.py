"""One process of a two-process run that is preempted on one process only.

    python tests/mesh_helpers/preempt_multihost.py --process_id 0 --port P --out DIR --signal_at 7

A fake training loop (one replicated step counter per step, so the processes stay in step the
way a collective train step keeps them) with sync points every 5 steps. Only the process
given --signal_at sends itself SIGTERM at that step; both must stop at the same step and write
a collective checkpoint there. Each process prints "STOPPED <process> <step> <signal>".
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax import checkpoint as ckpt_lib
from alexnet_jax import preemption


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--process_id", type=int, required=True)
  ap.add_argument("--port", type=int, required=True)
  ap.add_argument("--out", required=True)
  ap.add_argument("--signal_at", type=int, default=-1)
  ap.add_argument("--sleep", type=float, default=0.0)
  args = ap.parse_args()
  jax.distributed.initialize(f"localhost:{args.port}", num_processes=2, process_id=args.process_id)
  stop = preemption.StopSignals().install()
  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  state = {"w": jax.device_put(jnp.zeros(4), replicated)}
  add = jax.jit(lambda s: {"w": s["w"] + 1.0}, out_shardings=replicated)
  for step in range(1, 200):
    state = add(state)
    time.sleep(args.sleep)  # One process slower than the other.
    if step == args.signal_at:
      os.kill(os.getpid(), signal.SIGTERM)
    if stop.requested(sync_point=step % 5 == 0):
      ck = ckpt_lib.Checkpointer(os.path.join(args.out, "ckpt"), async_save=False)
      ck.save(step, state, {"step": step}, force=True)
      ck.close()
      print(f"STOPPED {jax.process_index()} {step} {stop.signum}", flush=True)
      stop.restore()
      return stop.exit_code
  print("NEVER STOPPED", flush=True)
  return 1


if __name__ == "__main__":
  sys.exit(main())
