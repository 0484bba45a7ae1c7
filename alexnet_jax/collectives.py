"""Collective traffic of a compiled step, read from its HLO text, and what the paper moved.

Used by `benchmarks/mesh_step.py` to report bytes per step and by `tests/test_mesh.py` to
hold the `model=2` step to the activations the towers must exchange (so that a change
which brings back a gradient all-reduce over `model` fails a test, not just a benchmark).
"""

from __future__ import annotations

import re

import numpy as np

from alexnet_jax import config as config_lib

DTYPE_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "pred": 1, "s8": 1, "u8": 1}
COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "collective-permute", "all-to-all")

_OP = re.compile(r"\s*(?:ROOT )?%?[\w.\-]+ = (.+?) (" + "|".join(COLLECTIVES) + r")(?:-start)?\(")


def shape_bytes(text: str) -> int:
  """Bytes of every array in an HLO shape string like '(f32[2,8]{1,0}, f32[3])'."""
  total = 0
  for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", text):
    if dtype in DTYPE_BYTES:
      total += DTYPE_BYTES[dtype] * int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
  return total


def collectives(hlo_text: str) -> list[tuple[str, int, int]]:
  """[(op, result bytes per device, group size)] for each collective in the compiled HLO.

  Group size 0 means the op named no replica groups. Groups of size 1 move nothing; XLA
  may leave them in the HLO (e.g. the `data` psum on a 1x2 mesh at -O0).
  """
  out = []
  for line in hlo_text.splitlines():
    m = _OP.match(line)
    if not m:
      continue
    groups = re.search(r"replica_groups=\{\{([\d,]+)\}", line)
    iota = re.search(r"replica_groups=\[(\d+),(\d+)\]", line)
    if groups is not None:
      n = len(groups.group(1).split(","))
    elif iota is not None:
      n = int(iota.group(2))
    else:
      n = 0
    out.append((m.group(2), shape_bytes(m.group(1)), n))
  return out


def received_bytes(op: str, size: int, n: int) -> int:
  """Bytes one device receives for a collective with result `size` over `n` devices, ring
  algorithms: all-gather and reduce-scatter (n-1)/n of the full array, all-reduce 2(n-1)/n."""
  if n <= 1:
    return 0
  if op == "all-gather":
    return size * (n - 1) // n
  if op == "reduce-scatter":
    return size * (n - 1)  # size is the scattered result; the input is n times larger.
  if op == "all-reduce":
    return 2 * size * (n - 1) // n
  return size


def paper_bytes(spec, batch_per_tower_pair: int, bytes_per: int = 4) -> dict:
  """Activation bytes one GPU receives per step in the paper's two-GPU layout (fwd+bwd)."""
  sizes = config_lib.feature_map_sizes(spec)
  half = lambda c: c // spec.towers  # noqa: E731
  # Before conv3: the other tower's pooled conv2 maps; before fc6: its pooled conv5 maps.
  conv3_in = sizes[1] ** 2 * half(spec.conv_features[1])
  fc6_in = sizes[-1] ** 2 * half(spec.conv_features[4])
  fc_in = [half(f) for f in spec.fc_features]  # Before fc7 and fc8.
  per_example = {"conv3": conv3_in, "fc6": fc6_in, "fc7": fc_in[0], "fc8": fc_in[1]}
  fwd = {k: v * batch_per_tower_pair * bytes_per for k, v in per_example.items()}
  return {"forward": fwd, "forward_total": sum(fwd.values()),
          "forward_plus_backward": 2 * sum(fwd.values())}
