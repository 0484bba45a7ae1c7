"""Analytic FLOP counts of the network, for throughput and utilisation figures.

Counts multiply-accumulates (MACs) of the convolutions and fully connected layers only;
ReLU, LRN, pooling, dropout, softmax and the optimizer are O(activations) or O(params)
and together add about 1% (checked against XLA's cost analysis in tests/test_flops.py).

Conventions, for the paper's net at 227 px (724.4 M MACs per image forward):

  forward       2 FLOPs per MAC                          1.45 GFLOP/img
  train step    3x forward: the forward pass, the gradient  4.35 GFLOP/img
                with respect to the inputs and the one with
                respect to the weights cost one forward each.
                This is the usual "model FLOPs" of MFU and the
                issue's 4.3 GFLOP figure.
  train exact   as above, minus conv1's input gradient,     4.13 GFLOP/img
                which nobody computes (images need none).

Tower layers count per tower: conv2, conv4 and conv5 see only their tower's channels.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class LayerCount:
  name: str
  macs: int  # Per image, forward, summed over towers.
  input_grad: bool  # Whether the backward pass computes d(loss)/d(input) of this layer.


def _get(m, name):
  return m[name] if isinstance(m, dict) or hasattr(m, "keys") else getattr(m, name)


def _taps(n: int, k: int, s: int, p: int, far: int = 0) -> int:
  """Kernel taps that land inside the input, summed over the output positions of one axis."""
  out = (n + 2 * p + far - k) // s + 1
  return sum(min(k, n + p - o * s) - max(0, p - o * s) for o in range(out))


def layer_counts(model, count_padding: bool = True) -> list[LayerCount]:
  """Per-layer forward MACs for a `config.model` ConfigDict or a `ModelSpec`.

  `count_padding=False` leaves out the products with the zero padding, as XLA's
  `cost_analysis` does (the 5x5 and 3x3 convs then cost 5-10% less).
  """
  towers = _get(model, "towers")
  features = list(_get(model, "conv_features"))
  kernels = list(_get(model, "conv_kernels"))
  strides = list(_get(model, "conv_strides"))
  paddings = list(_get(model, "conv_padding"))
  fars = list(_get(model, "conv_pad_far"))
  present = set(_get(model, "conv_layers"))
  cross = set(_get(model, "cross_tower"))
  pool_after = set(_get(model, "pool_after"))
  window, pstride = _get(model, "pool_window"), _get(model, "pool_stride")

  size = _get(model, "input_size")
  channels = 3  # Total over towers; the image is shared.
  shared = True  # Until the first conv, each tower reads the whole image.
  out = []
  first = True
  for i in range(1, len(features) + 1):
    if i in present:
      k, s, p, far = kernels[i - 1], strides[i - 1], paddings[i - 1], fars[i - 1]
      positions = _taps(size, k, s, p, far) ** 2 if not count_padding else None
      size = (size + 2 * p + far - k) // s + 1
      if positions is None:
        positions = size * size * k * k
      # A tower reads every channel before the first conv and at cross-tower layers,
      # otherwise only its own tower's share.
      cin = channels if (shared or i in cross) else channels // towers
      cout = features[i - 1]
      out.append(LayerCount(f"conv{i}", positions * cin * cout, not first))
      channels, shared, first = cout, False, False
    if i in pool_after:
      size = (size - window) // pstride + 1
  width = size * size * channels
  for j, f in enumerate(_get(model, "fc_features")):
    out.append(LayerCount(f"fc{6 + j}", width * f, True))
    width = f
  out.append(LayerCount(f"fc{6 + len(_get(model, 'fc_features'))}",
                        width * _get(model, "num_classes"), True))
  return out


def forward_flops(model, count_padding: bool = True) -> int:
  """FLOPs per image of one forward pass (2 per MAC)."""
  return 2 * sum(c.macs for c in layer_counts(model, count_padding))


def train_step_flops(model, exact: bool = False) -> int:
  """FLOPs per image of a training step: forward plus backward.

  `exact=False` is the 3x-forward convention of model FLOP utilisation; `exact=True`
  leaves out the input gradients the step never computes (conv1's, and any layer's
  when the network starts with it).
  """
  total = 0
  for c in layer_counts(model):
    total += 2 * c.macs * (3 if (c.input_grad or not exact) else 2)
  return total
