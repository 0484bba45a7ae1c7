"""The `('data', 'model')` device mesh and the train/eval steps `shard_map`ped onto it.

`model` is 1 (each device holds both towers) or 2 (one tower per device, the paper's
layout); `data` takes the remaining devices and splits the batch. Every run, one device
included, goes through the same `shard_map` code on a mesh of shape (data, model).

Where gradients get reduced. The steps run with `check_vma=True`, so JAX's type system
knows which values differ across which mesh axis. A parameter that is the same on every
`data` device (all of them) but meets a batch shard that differs is implicitly `pvary`d,
and the transpose of `pvary` is a `psum`: gradients come out of `jax.grad` already summed
over `data`. Across `model`, the towers' activations are gathered with ordinary
(device-varying) all-gathers, whose transposes, reduce-scatters, send each tower the
gradient of its activations, except the last one, before fc8: it is an invariant
all-gather (`towers.gather(..., invariant=True)`), so fc8, the logits and the loss are
typed (and are) the same on every `model` device. Nothing then sums them over `model`: fc8's
gradient needs no all-reduce, and the transpose of that gather just slices out each
tower's part of the cotangent. Each device's loss is therefore divided by the global
batch, its local batch times `data` (`batch_scale` of `step.make_train_step`), and the
sums AD inserts are exactly the single-device gradient, with no explicit collective on
the gradients at all. Adding a `psum` over `data` on top would double count;
`tests/test_mesh.py` checks the sums and that no gradient-sized all-reduce is left.

Multi-host: processes are ordered along `data` first, so each process feeds the rows of the
global batch that its devices hold (`data_shard`), and `put_batch` assembles the global
array with `jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from alexnet_jax import config as config_lib
from alexnet_jax import step as step_lib
from alexnet_jax.models import AlexNet, ModelSpec

DATA = "data"
MODEL = "model"


# --------------------------------------------------------------------------------------
# Processes and devices.


def _env_wants_distributed() -> bool:
  # `srun` with N>1 tasks runs N copies of the command; training them independently into
  # one workdir would corrupt it, so several tasks in this step mean one distributed run.
  # (SLURM_STEP_NUM_TASKS, not SLURM_NTASKS: a batch script running python directly has
  # the job's task count but is one process.)
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    return True
  return int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1


def initialize_distributed(config) -> bool:
  """Connects this process to the others of a multi-host run; True if it did.

  Runs when `config.distributed.enabled` is set or the environment describes a multi-process
  job (`JAX_COORDINATOR_ADDRESS`, or an `srun` step of more than one task). Fields of
  `config.distributed` left as None are detected by JAX (SLURM, Open MPI, Kubernetes,
  `JAX_COORDINATOR_ADDRESS`). Must run before anything touches a JAX device.
  """
  d = config.distributed
  if not d.enabled and not _env_wants_distributed():
    return False
  if jax.distributed.is_initialized():
    return True
  kwargs = {k: d[k] for k in ("coordinator_address", "num_processes", "process_id")
            if d[k] is not None}
  try:
    jax.distributed.initialize(**kwargs)
  except (ValueError, RuntimeError) as e:
    raise config_lib.ConfigError(
        f"jax.distributed.initialize({kwargs}) failed: {e}. Outside SLURM/MPI/Kubernetes set "
        "config.distributed.coordinator_address (host:port of process 0), num_processes and "
        "process_id, or the JAX_COORDINATOR_ADDRESS environment variable.") from e
  logging.info("Distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True


def mesh_shape(config, num_devices: int) -> tuple[int, int]:
  """(data, model) from config.mesh for `num_devices`, or a ConfigError naming the fix."""
  data, model = int(config.mesh.data), int(config.mesh.model)
  towers = int(config.model.towers)
  if model not in (1, 2):
    raise config_lib.ConfigError(
        f"config.mesh.model={model}: use 1 (both towers on each device) or 2 (one tower per "
        "device, the paper's layout).")
  if model > towers:
    raise config_lib.ConfigError(
        f"config.mesh.model={model} puts one tower on each device, but config.model.towers="
        f"{towers}; set --config.mesh.model=1 for a one-tower net.")
  if num_devices % model:
    raise config_lib.ConfigError(
        f"config.mesh.model={model} does not divide the {num_devices} devices; use "
        "--config.mesh.model=1 or an even number of devices.")
  if data == -1:
    data = num_devices // model
  if data < 1 or data * model != num_devices:
    raise config_lib.ConfigError(
        f"config.mesh.data={config.mesh.data} x config.mesh.model={model} = {data * model} "
        f"devices, but there are {num_devices}; set --config.mesh.data=-1 (all the rest) or "
        f"--config.mesh.data={num_devices // model}.")
  if config.batch_size % data:
    raise config_lib.ConfigError(
        f"config.batch_size={config.batch_size} does not split over the {data} devices of the "
        f"data axis (config.mesh.data); use a multiple of {data}, e.g. "
        f"--config.batch_size={-(-config.batch_size // data) * data}.")
  return data, model


def make_mesh(config, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The (data, model) mesh over all devices (of every process)."""
  devices = list(jax.devices() if devices is None else devices)
  data, model = mesh_shape(config, len(devices))
  # Ordered by process first, so a process's devices hold consecutive batch rows and a
  # tower pair sits inside one host whenever the host has room for it.
  devices.sort(key=lambda d: (d.process_index, d.id))
  return Mesh(np.array(devices, dtype=object).reshape(data, model), (DATA, MODEL))


def data_shard(mesh: Mesh, process_index: int | None = None) -> tuple[int, int]:
  """(index, count): which of `count` equal slices of the global batch this process feeds.

  Processes whose devices share `data` rows (a tower pair spread over two hosts) get the
  same index and must feed the same examples.
  """
  p = jax.process_index() if process_index is None else process_index
  grid = mesh.devices
  rows = sorted({i for i in range(grid.shape[0]) for d in grid[i] if d.process_index == p})
  k = len(rows)
  if not rows or rows != list(range(rows[0], rows[0] + k)) or rows[0] % k or grid.shape[0] % k:
    raise ValueError(f"process {p} holds data rows {rows} of the mesh; they must be a block "
                     "of equal size for every process")
  return rows[0] // k, grid.shape[0] // k


# --------------------------------------------------------------------------------------
# Where each array lives.


def tower_layers(spec: ModelSpec) -> frozenset[str]:
  """Names of the layers whose params carry a leading `towers` axis."""
  convs = {f"conv{i}" for i in spec.conv_layers}
  fcs = {f"fc{6 + j}" for j in range(len(spec.fc_features))}
  return frozenset(convs | fcs)


def _is_tower_path(path, names) -> bool:
  return any(getattr(k, "key", getattr(k, "name", None)) in names for k in path)


def state_specs(tree: Any, spec: ModelSpec) -> Any:
  """PartitionSpecs for a TrainState, params or opt-state tree (arrays or abstract).

  Tower leaves (params and their optimizer slots) are split on their leading `towers`
  axis over `model`; everything else (fc8, step, rng, learning rate) is replicated.
  """
  names = tower_layers(spec)

  def one(path, leaf):
    if not _is_tower_path(path, names):
      return P()
    if not leaf.shape or leaf.shape[0] != spec.towers:
      raise ValueError(f"{jax.tree_util.keystr(path)} has shape {leaf.shape}; tower leaves "
                       f"need a leading axis of length towers={spec.towers}")
    return P(MODEL)

  return jax.tree_util.tree_map_with_path(one, tree)


def state_shardings(mesh: Mesh, tree: Any, spec: ModelSpec) -> Any:
  return jax.tree.map(lambda s: NamedSharding(mesh, s), state_specs(tree, spec))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA))


def pad_batch(batch: dict, multiple: int) -> dict:
  """Pads the rows of an eval batch to a multiple of `multiple` with mask-0 blanks."""
  n = len(batch["label"])
  pad = -n % multiple
  if not pad:
    return batch
  if "mask" not in batch:
    raise ValueError(f"a batch of {n} rows does not split over {multiple} data shards and has "
                     "no mask to pad with; make config.batch_size a multiple of config.mesh.data")
  return {k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}


def put_batch(batch: dict, mesh: Mesh) -> dict:
  """Host-local NumPy batch (this process's rows) -> global arrays sharded over `data`.

  Eval batches whose rows do not split over this process's data shards are padded with
  mask=0 rows, which count for nothing.
  """
  index, count = data_shard(mesh)
  local_shards = mesh.shape[DATA] // count
  batch = pad_batch(batch, local_shards)
  sharding = batch_sharding(mesh)
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    out[k] = jax.make_array_from_process_local_data(sharding, v, (v.shape[0] * count, *v.shape[1:]))
  return out


# --------------------------------------------------------------------------------------
# Steps.


def make_init_state(model_spec: ModelSpec, tx: optax.GradientTransformation, mesh: Mesh,
                    input_shape: tuple[int, int, int]) -> Callable[[int], step_lib.TrainState]:
  """Returns init(seed) -> TrainState created directly in its mesh shardings.

  Params come from the single-device model, whose tower params have the global shape
  (towers, ...), so every mesh starts from the same numbers.
  """
  model = AlexNet(model_spec)

  def init(seed):
    return step_lib.init_state(model, tx, jax.random.PRNGKey(seed), input_shape)

  abstract = jax.eval_shape(init, 0)
  # The seed stays a traced argument: as a constant, XLA would constant-fold the whole
  # init (and the forward pass flax runs to find the shapes) at compile time, slowly.
  jitted = jax.jit(init, out_shardings=state_shardings(mesh, abstract, model_spec))
  return lambda seed: jitted(np.int32(seed))


def make_sharded_steps(model_spec: ModelSpec, tx: optax.GradientTransformation, mesh: Mesh,
                       config=None):
  """Returns jitted (train_step(state, batch, lr), eval_step(params, batch)) on `mesh`.

  `state` is donated. Batches are global arrays sharded over `data` (see `put_batch`);
  metric sums come back replicated. Same semantics as `step.make_train_step` /
  `make_eval_step` on one device.
  """
  if config is not None:
    mesh_shape(config, mesh.size)  # Same checks as make_mesh, for hand-built meshes.
  n_data, n_model = mesh.shape[DATA], mesh.shape[MODEL]
  if model_spec.towers % n_model:
    raise config_lib.ConfigError(
        f"a mesh with model={n_model} needs config.model.towers to be a multiple of it, got "
        f"{model_spec.towers}")
  model = AlexNet(model_spec, model_axis=MODEL, data_axis=DATA)

  def reduce_metrics(m):
    # Metric sums differ across `data` only: the logits are model-invariant (module
    # docstring), and check_vma would refuse a replicated output that were not.
    return jax.tree.map(lambda x: jax.lax.psum(x, DATA), m)

  # No reduce_grads: see the module docstring; batch_scale carries the whole correction.
  local_train = step_lib.make_train_step(model, tx, reduce_metrics=reduce_metrics,
                                         batch_scale=n_data)
  local_eval = step_lib.make_eval_step(model, reduce_metrics=reduce_metrics)

  @functools.partial(jax.jit, donate_argnums=(0,))
  def train_step(state, batch, lr):
    specs = state_specs(state, model_spec)
    f = jax.shard_map(local_train, mesh=mesh, in_specs=(specs, P(DATA), P()),
                      out_specs=(specs, P()), check_vma=True)
    return f(state, batch, jnp.asarray(lr, jnp.float32))

  @jax.jit
  def eval_step(params, batch):
    f = jax.shard_map(local_eval, mesh=mesh, in_specs=(state_specs(params, model_spec), P(DATA)),
                      out_specs=P(), check_vma=True)
    return f(params, batch)

  return train_step, eval_step
