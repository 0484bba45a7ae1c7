"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012), layer by layer, with its ablation switches.

Paper layout for 227x227x3 inputs (feature maps 55 -> 27 -> 27 -> 13 -> 13 -> 13 -> 13 -> 6):

    conv1 96x11x11/4  -> ReLU -> LRN -> maxpool 3/2      (tower-local)
    conv2 256x5x5 p2  -> ReLU -> LRN -> maxpool 3/2      (tower-local)
    conv3 384x3x3 p1  -> ReLU                            (reads both towers)
    conv4 384x3x3 p1  -> ReLU                            (tower-local)
    conv5 256x3x3 p1  -> ReLU -> maxpool 3/2             (tower-local)
    fc6 4096 -> ReLU -> dropout                          (reads both towers)
    fc7 4096 -> ReLU -> dropout                          (reads both towers)
    fc8 num_classes                                      (reads both towers)

Widths are totals over the towers; a tower holds width // towers kernels. conv1 and every
fc layer read the whole input of their tower, so the parameter count (60,965,224 for 1000
classes) is that of the usual "grouped" AlexNet. fc8 is one layer shared by the towers
(replicated on the `model` axis), since its output is the class scores both need.

Where the printed paper and the authors' code (cuda-convnet) differ, a ModelSpec field
holds each reading; `config.CONVENTIONS` sets them together. They are: the LRN scale
(`lrn_alpha_per_size`), where the dropout scaling happens (`dropout_scaling`), conv1's
far-edge padding for 224px inputs (`conv_pad_far`), the ReLU of conv1 after its LRN
(`act_after_lrn`) and per-layer init stds (`init_stds`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from alexnet_jax.models import towers as tw
from alexnet_jax.models.lrn import local_response_norm
from alexnet_jax.models.pooling import max_pool

ACTIVATIONS: dict[str, Callable] = {"relu": jax.nn.relu, "tanh": jnp.tanh}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Everything that shapes the network; built from `config.model`."""
  num_classes: int = 1000
  input_size: int = 227
  towers: int = 2
  conv_features: Sequence[int] = (96, 256, 384, 384, 256)
  conv_kernels: Sequence[int] = (11, 5, 3, 3, 3)
  conv_strides: Sequence[int] = (4, 1, 1, 1, 1)
  conv_padding: Sequence[int] = (0, 2, 1, 1, 1)
  # Extra zero rows/columns on the bottom/right edge only, per conv: cuda-convnet rounds a
  # conv's output size up, which pads the far edge (3 for conv1 at 224px gives 55x55).
  conv_pad_far: Sequence[int] = (0, 0, 0, 0, 0)
  conv_layers: Sequence[int] = (1, 2, 3, 4, 5)
  cross_tower: Sequence[int] = (3,)
  lrn: bool = True
  lrn_after: Sequence[int] = (1, 2)
  lrn_size: int = 5
  lrn_k: float = 2.0
  lrn_alpha: float = 1e-4
  lrn_beta: float = 0.75
  lrn_alpha_per_size: bool = False  # True: alpha / size multiplies the raw window sum.
  act_after_lrn: Sequence[int] = ()  # Convs whose activation follows their LRN, not precedes it.
  pool_after: Sequence[int] = (1, 2, 5)
  pool_window: int = 3
  pool_stride: int = 2
  fc_features: Sequence[int] = (4096, 4096)
  dropout: float = 0.5
  dropout_scaling: str = "train"  # "train": inverted (x / keep); "test": x * keep at test.
  activation: str = "relu"
  init: str = "paper"
  init_std: float = 0.01
  # Per-layer stds for init="paper": one per conv_features entry, then one per fc layer
  # and the class layer. Empty: init_std everywhere.
  init_stds: Sequence[float] = ()
  bias_one: Sequence[str] = ("conv2", "conv4", "conv5", "fc6", "fc7")
  dtype: str = "float32"

  @classmethod
  def from_config(cls, model_config) -> "ModelSpec":
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in model_config.items() if k in fields}
    for k, v in values.items():
      if isinstance(v, list):
        values[k] = tuple(v)
    return cls(**values)


def _kernel_init(spec: ModelSpec, fan_in: int, index: int):
  """`index` counts from 0 over conv1.., the fc layers, the class layer (for init_stds)."""
  if spec.init == "paper":
    std = spec.init_stds[index] if spec.init_stds else spec.init_std
  elif spec.init == "he":
    std = math.sqrt(2.0 / fan_in)
  else:
    raise ValueError(f"unknown init {spec.init!r}")
  return lambda key, shape, dtype=jnp.float32: std * jax.random.normal(key, shape, jnp.float32)


def _bias_init(spec: ModelSpec, name: str):
  # The paper's constant 1 keeps ReLUs of these layers in their positive part early on.
  value = 1.0 if spec.init == "paper" and name in spec.bias_one else 0.0
  return lambda key, shape, dtype=jnp.float32: jnp.full(shape, value, jnp.float32)


class AlexNet(nn.Module):
  """The network. Call with NHWC images; returns float32 logits.

  `model_axis` / `data_axis` name the mesh axes when the module runs inside
  `shard_map`: towers then spread over `model_axis`, and dropout masks are drawn for the
  global batch so that a sharded run draws the same masks as a single-device run.
  """
  spec: ModelSpec
  model_axis: str | None = None
  data_axis: str | None = None

  @nn.compact
  def __call__(self, images, *, train: bool):
    spec = self.spec
    if images.ndim != 4 or images.shape[1:3] != (spec.input_size, spec.input_size):
      raise ValueError(
          f"AlexNet expects NHWC images of {spec.input_size}x{spec.input_size} "
          f"(config.model.input_size), got shape {images.shape}.")
    dtype = DTYPES[spec.dtype]
    act = ACTIVATIONS[spec.activation]
    towers = spec.towers
    n_local = tw.local_towers(towers, self.model_axis)
    x = images.astype(dtype)
    xs = [x] * n_local  # Every tower sees the whole image.
    shared_input = True  # Until the first conv, the towers hold the same (ungathered) input.

    for i in range(1, len(spec.conv_features) + 1):
      if i in spec.conv_layers:
        name = f"conv{i}"
        if i in spec.cross_tower and not shared_input:
          xs = [tw.gather(xs, self.model_axis)] * n_local
        xs = ConvTowers(
            spec=spec, name=name, features=spec.conv_features[i - 1] // towers,
            kernel=spec.conv_kernels[i - 1], stride=spec.conv_strides[i - 1],
            padding=spec.conv_padding[i - 1], pad_far=spec.conv_pad_far[i - 1],
            model_axis=self.model_axis)(xs)
        late_act = i in spec.act_after_lrn
        if not late_act:
          xs = [act(x) for x in xs]
        shared_input = False
        # LRN belongs to its conv: with the conv removed, it would normalise the previous
        # stage's already normalised maps a second time.
        if spec.lrn and i in spec.lrn_after:
          xs = [local_response_norm(x, size=spec.lrn_size, k=spec.lrn_k, alpha=lrn_alpha(spec),
                                    beta=spec.lrn_beta) for x in xs]
        if late_act:
          # cuda-convnet's conv1 has no neuron: LRN reads the raw conv output and the ReLU
          # comes with pool1. A monotone activation commutes with max pooling, so applying
          # it before the pool is the same.
          xs = [act(x) for x in xs]
      # Pooling stays in place when its conv is removed, so the map sizes that fc6 sees do
      # not change with the "remove a middle layer" ablation.
      if i in spec.pool_after:
        xs = [max_pool(x, spec.pool_window, spec.pool_stride) for x in xs]

    # The gather feeding fc8 (after the last fc layer, or after the convs when there is
    # none) is invariant: fc8 is replicated over `model`, see tw.gather.
    n_conv, n_fc = len(spec.conv_features), len(spec.fc_features)
    x = xs[0] if shared_input else tw.gather(xs, self.model_axis, invariant=n_fc == 0)
    x = x.reshape(x.shape[0], -1)
    for j, features in enumerate(spec.fc_features):
      name = f"fc{6 + j}"
      xs = DenseTowers(spec=spec, name=name, features=features // towers, index=n_conv + j,
                       model_axis=self.model_axis)(x)
      xs = [act(h) for h in xs]
      xs = self._dropout(xs, train)
      x = tw.gather(xs, self.model_axis, invariant=j == n_fc - 1)

    fc8 = nn.Dense(spec.num_classes, name=f"fc{6 + len(spec.fc_features)}",
                   kernel_init=_kernel_init(spec, x.shape[-1], n_conv + n_fc),
                   bias_init=_bias_init(spec, "fc8"), dtype=dtype)
    return fc8(x).astype(jnp.float32)

  def _dropout(self, xs, train):
    rate = self.spec.dropout
    if rate == 0.0:
      return xs
    if not train:
      # The paper (section 4.2) and cuda-convnet's `dropout2` layer keep every unit at test
      # time and multiply by the keep probability; inverted dropout needs nothing here.
      if self.spec.dropout_scaling == "test":
        return [(x * (1.0 - rate)).astype(x.dtype) for x in xs]
      return xs
    key = self.make_rng("dropout")
    first = tw.first_tower(self.spec.towers, self.model_axis)
    n_data = tw.axis_size(self.data_axis)
    # Kept units are scaled at training time only for inverted dropout: same expectation
    # at test, but fc7 and fc8 then see inputs 1/keep times larger while training.
    scale = 1.0 / (1.0 - rate) if self.spec.dropout_scaling == "train" else 1.0
    out = []
    for t, x in enumerate(xs):
      # One mask per global tower over the global batch, sliced to this device's rows:
      # identical to the single-device masks whatever the mesh.
      k = jax.random.fold_in(key, first + t)
      local = x.shape[0]
      keep = jax.random.bernoulli(k, 1.0 - rate, (local * n_data, *x.shape[1:]))
      if self.data_axis is not None:
        keep = jax.lax.dynamic_slice_in_dim(keep, tw.axis_index(self.data_axis) * local, local)
      out.append(jnp.where(keep, x * scale, 0).astype(x.dtype))
    return out


def lrn_alpha(spec: ModelSpec) -> float:
  """The alpha that multiplies the raw window sum in `local_response_norm`.

  cuda-convnet divides the configured scale by the window size for cross-map LRN
  (akrizhevsky/cuda-convnet2 layer.py, NormLayerParser.add_params:
  `dic['scale'] /= dic['size']`), as Caffe and PyTorch do; the printed formula does not.
  """
  return spec.lrn_alpha / spec.lrn_size if spec.lrn_alpha_per_size else spec.lrn_alpha


class ConvTowers(nn.Module):
  """One conv layer as `towers` independent convs, one per tower."""
  spec: ModelSpec
  features: int  # Per tower.
  kernel: int
  stride: int
  padding: int
  pad_far: int = 0  # Extra padding on the bottom and right edges only.
  model_axis: str | None = None

  @nn.compact
  def __call__(self, xs):
    cin = xs[0].shape[-1]
    k = self.kernel
    t = tw.local_towers(self.spec.towers, self.model_axis)
    index = int(self.name.removeprefix("conv")) - 1
    kernel = self.param("kernel", _kernel_init(self.spec, k * k * cin, index),
                        (t, k, k, cin, self.features))
    bias = self.param("bias", _bias_init(self.spec, self.name), (t, self.features))
    pad = (self.padding, self.padding + self.pad_far) if self.pad_far else self.padding
    return tower_convs(xs, kernel, bias, self.stride, pad)


class DenseTowers(nn.Module):
  """A fully connected layer whose output units are split between the towers."""
  spec: ModelSpec
  features: int  # Per tower.
  index: int = 5  # Position among all layers (conv1 = 0), for per-layer init stds.
  model_axis: str | None = None

  @nn.compact
  def __call__(self, x):
    t = tw.local_towers(self.spec.towers, self.model_axis)
    d = x.shape[-1]
    kernel = self.param("kernel", _kernel_init(self.spec, d, self.index), (t, d, self.features))
    bias = self.param("bias", _bias_init(self.spec, self.name), (t, self.features))
    return tower_dense(x, kernel, bias)


def tower_convs(xs, kernel, bias, stride: int, padding):
  """Tower t's conv of xs[t] with kernel[t] (HWIO) plus bias[t], in xs[0]'s dtype.

  `padding` is one int for every edge or (near, far) for top/left and bottom/right.
  """
  dtype = xs[0].dtype
  pads = [tuple(padding) if isinstance(padding, (tuple, list)) else (padding, padding)] * 2
  t = len(xs)
  if t > 1 and all(x is xs[0] for x in xs):
    # Towers reading the same maps (conv1 sees the image, conv3 both towers) run as one
    # conv with every tower's kernels side by side: one pass over the input and wider
    # output tiles, 10-15% faster on CPU than `t` convs.
    y = jax.lax.conv_general_dilated(
        xs[0], jnp.concatenate(list(kernel.astype(dtype)), axis=-1),
        window_strides=(stride, stride), padding=pads,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = y + bias.reshape(-1).astype(dtype)
    return jnp.split(y, t, axis=-1)
  out = []
  for i, x in enumerate(xs):
    y = jax.lax.conv_general_dilated(
        x, kernel[i].astype(dtype), window_strides=(stride, stride), padding=pads,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    out.append(y + bias[i].astype(dtype))
  return out


def tower_dense(x, kernel, bias):
  """[x @ kernel[t] + bias[t] for each tower t], in x's dtype."""
  t = kernel.shape[0]
  # One batched matmul over the stacked kernels: indexing kernel[t] instead makes XLA
  # copy each tower's slice (75 MB for fc6) in the forward pass and again for its gradient.
  xs = jnp.broadcast_to(x, (t, *x.shape))
  y = jax.lax.dot_general(xs, kernel.astype(x.dtype), (((2,), (1,)), ((0,), (0,))))
  y = y + bias[:, None, :].astype(x.dtype)
  return [y[i] for i in range(t)]


def count_params(params) -> int:
  return sum(int(p.size) for p in jax.tree.leaves(params))
