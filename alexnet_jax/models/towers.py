"""The two towers of the paper and the places where they exchange activations.

A tower's activations travel as one array per tower in a Python list. Each tower's conv
is an ordinary (ungrouped) conv on that tower's channels: XLA:CPU runs grouped convs
(`feature_group_count>1`) and vmapped convs through a slow path, and a list maps
directly onto devices. Parameters of tower layers are stacked on a leading axis of
length `towers`, so the `model` mesh axis can shard them: under `shard_map` with
`model_axis` set, each device holds `towers // model_size` of them.

The towers meet only where the paper's GPUs talked: before conv3 and before every fully
connected layer. `gather` is that meeting point: a channel concat on one device, an
all-gather across the `model` axis when the towers live on different devices.

The gather feeding fc8 is `invariant`: fc8 and the loss are computed redundantly on every
`model` device, and telling the type system that their input is the same there lets AD
hand each tower its slice of the (identical) cotangent instead of summing fc8's gradient
and the loss over `model` (an all-reduce of fc8's gradient and a reduce-scatter per step).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def axis_size(axis: str | None) -> int:
  return 1 if axis is None else jax.lax.axis_size(axis)


def axis_index(axis: str | None):
  return 0 if axis is None else jax.lax.axis_index(axis)


def local_towers(towers: int, model_axis: str | None) -> int:
  """How many towers this device holds."""
  return towers // axis_size(model_axis)


def first_tower(towers: int, model_axis: str | None):
  """Global index of this device's first tower (for per-tower randomness)."""
  return axis_index(model_axis) * local_towers(towers, model_axis)


def gather(xs: list[jax.Array], model_axis: str | None, invariant: bool = False) -> jax.Array:
  """Concatenates every tower's channels (last axis), across devices if needed.

  `invariant=True` marks the result as equal on every `model` device (it is, either way).
  Its transpose then slices the cotangent rather than reduce-scattering it, which is right
  only if everything downstream is computed identically on each `model` device and the
  loss is not divided by the `model` size; see `alexnet_jax/mesh.py`.
  """
  if model_axis is None:
    return xs[0] if len(xs) == 1 else jnp.concatenate(xs, axis=-1)
  stacked = jnp.stack(xs) if len(xs) > 1 else xs[0][None]
  everything = jax.lax.all_gather(stacked, model_axis, axis=0, tiled=True,
                                  to="invarying" if invariant else "varying")
  return jnp.concatenate(list(everything), axis=-1)
