"""Config edits with names: the two readings of the paper (`convention=`) and the big_vision-
style variant arguments (`lrn=0,towers=1,runlocal`) that config files and sweeps share.

`config.py` holds the fields and their checks; this module holds the named ways to change
them, so that an ablation is one flag away:

    python -m alexnet_jax.main --config=configs/alexnet_imagenet.py:lrn=0,pool=2x2 ...
"""

from __future__ import annotations

import ml_collections


def one_tower(c: ml_collections.ConfigDict) -> None:
  """The paper's one-GPU baseline: half the kernels in every conv but conv5."""
  if c.model.towers == 1:  # Already one tower: halving again would not be the paper's net.
    return
  f = list(c.model.conv_features)
  c.model.towers = 1
  c.model.conv_features = tuple(x // 2 for x in f[:4]) + (f[4],)


# --------------------------------------------------------------------------------------
# Two readings of AlexNet, each a preset (`convention=paper|cuda-convnet`). Every place
# where the printed paper and its authors' code differ is its own field, so either reading
# can be taken whole or one difference at a time. The code read is akrizhevsky/cuda-convnet2
# (2014, Apache-2.0), the only public release with ImageNet layer files: layer.py, the C++
# layers in cudaconvnet/, TrainingExample.md, and the ImageNet layer files, cited below by
# line as L = layers/layers-223-ce2-1gpu-crp.cfg and P = layers/layer-params-223-ce2-1gpu.cfg
# (the same values as layers/layer{s,-params}-imagenet-1gpu.cfg, which TrainingExample.md
# runs and which the fork NervanaSystems/cuda-convnet2 keeps). They describe the one-tower
# "one weird trick" net (64-192-384-256-256 kernels); only their per-layer rules are taken
# here, not their widths.


def _paper_conv1(m) -> bool:
  """Whether conv1 is the paper's 11x11/4 unpadded conv on a 224 or 227 px input."""
  return (m.conv_kernels[0] == 11 and m.conv_strides[0] == 4 and m.conv_padding[0] == 0
          and m.input_size in (224, 227))


def cuda_convnet_far_padding(m) -> tuple:
  """Far-edge zero padding per conv that gives cuda-convnet's rounded-up output sizes.

  cuda-convnet sizes a conv's output as 1 + ceil((size + 2 * padding - filter) / stride)
  (layer.py, ConvLayerParser.parse: `dic['modulesX']`) and its kernels skip the taps that
  fall past the image, i.e. read zeros there. Pools are left as they are: cuda-convnet
  rounds their outputs up too, but the paper's maps (55, 27, 13) fit them exactly.
  """
  size, far = m.input_size, []
  for i in range(1, len(m.conv_features) + 1):
    extra = 0
    if i in m.conv_layers:
      k, st, p = m.conv_kernels[i - 1], m.conv_strides[i - 1], m.conv_padding[i - 1]
      out = 1 + -(-(size + 2 * p - k) // st)
      extra = (out - 1) * st + k - (size + 2 * p)
      size = out
    if i in m.pool_after:
      size = (size - m.pool_window) // m.pool_stride + 1
    far.append(extra)
  return tuple(far)


def paper_convention(c: ml_collections.ConfigDict) -> None:
  """The NIPS 2012 paper as printed: the base config, with test-time dropout scaling."""
  m = c.model
  m.lrn_alpha_per_size = False  # Section 3.3's formula: alpha times the raw sum.
  m.act_after_lrn = ()  # Section 3.3: "after applying the ReLU nonlinearity in certain layers".
  # Section 4.2: "At test time, we use all the neurons but multiply their outputs by 0.5".
  m.dropout_scaling = "test"
  m.init_stds = ()  # Section 5: N(0, 0.01) in every layer.
  m.conv_pad_far = (0,) * len(m.conv_features)
  c.optim.bias_lr_mult = 1.0  # Section 5 gives one learning rate "for all layers".
  # decay_biases stays False: the update rule of section 5 is stated for "weight w".


def cuda_convnet_convention(c: ml_collections.ConfigDict) -> None:
  """What the authors' code ran, per the cuda-convnet2 files named above."""
  m, o = c.model, c.optim
  # L:22-26 and P:83-91 ([rnorm1], [rnorm2]): type=cmrnorm, size=5, scale=0.0001, pow=0.75,
  # minDiv=2, the printed constants; layer.py NormLayerParser.add_params then divides scale
  # by size for cross-map layers: alpha = 2e-5 on the raw sum.
  m.lrn_alpha_per_size = True
  # L:9-20: [conv1] has no `neuron`; L:24 [rnorm1] reads conv1; L:35 [pool1] carries
  # neuron=relu. conv2 has its neuron=relu (L:49) before rnorm2, as printed.
  m.act_after_lrn = (1,) if 1 in m.lrn_after else ()
  # L:123-124 and L:137-138: type=dropout2, keep=0.5. A dropout2 layer multiplies by a 0/1
  # mask while training and by `keep` at test (cudaconvnet/src/layer.cu,
  # Dropout2Layer::fpropActs); type=dropout is the inverted kind (DropoutSmallerThanOperator
  # in cudaconvnet/include/layer.cuh scales kept units by 1/keep).
  m.dropout_scaling = "test"
  # P:6-7 (and the same two lines in each of the 8 weight layers' blocks):
  # epsW=dexp[base=0.01;...], epsB=dexp[base=0.02;...]; momW = momB = 0.9, wc=0.0005 as
  # printed. (The dexp schedules, 250x down in 4 steps for weights and 10x in 2 for biases,
  # belong to the 2014 runs; the paper's plateau rule is kept.)
  o.bias_lr_mult = 2.0
  # cudaconvnet/src/layer.cu, WeightLayer's constructor: biases are built with weight
  # cost 0 whatever the file says (P:5 also sets wball=0).
  o.decay_biases = False
  if _paper_conv1(m):
    # TrainingExample.md:10 trains with `--inner-size 224`: 224px crops, 32 x 32 positions
    # and their flips, the paper's 2,048 translations.
    m.input_size = c.data.crop_size = 224
    # initW at L:17, 45 (0.01: conv1, conv2), L:73, 87, 100 (0.03: conv3-5), L:117, 131,
    # 145 (0.01: fc). initB is 1 for conv2, conv4, conv5, fc6, fc7 as printed; fc8's
    # initB=-7 (L:146) shifts every logit alike, which a softmax ignores. Only for the
    # paper-sized net: the small nets' init_std is set for their own fan-ins.
    m.init_stds = (0.01, 0.01, 0.03, 0.03, 0.03) + (0.01,) * (len(m.fc_features) + 1)
  m.conv_pad_far = cuda_convnet_far_padding(m)


CONVENTIONS = {"paper": paper_convention, "cuda-convnet": cuda_convnet_convention}


# Each variant is a small named edit so that sweep files and the command line share them.
def _set(path, value):
  def edit(c):
    node = c
    *parents, leaf = path.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return edit


def _remove_conv(i):
  def edit(c):
    m = c.model
    m.conv_layers = tuple(x for x in m.conv_layers if x != i)
    # The paper's towers exchange maps once in the conv stack (conv3 sees both). Removing
    # that layer would also cut the exchange, confounding "one layer less" with "towers
    # that first meet at fc6", so the next remaining conv takes over the cross connection.
    if i in m.cross_tower:
      later = [x for x in m.conv_layers if x > i and x not in m.cross_tower]
      m.cross_tower = tuple(sorted({x for x in m.cross_tower if x != i} | set(later[:1])))
  return edit


def _pool(value):
  window, stride = (int(v) for v in value.split("x"))
  return lambda c: (_set("model.pool_window", window)(c), _set("model.pool_stride", stride)(c))


def parse_bool(v):
  if v is None:  # A bare `key` in a k=v list means on.
    return True
  if v in ("1", "true", "True", "on", "yes"):
    return True
  if v in ("0", "false", "False", "off", "no"):
    return False
  raise ValueError(f"expected a boolean (1/0/true/false), got {v!r}")


def parse_kv(arg: str | None) -> list[tuple[str, str | None]]:
  """`lrn=0, towers=1,runlocal` -> [("lrn", "0"), ("towers", "1"), ("runlocal", None)].

  The one parser of the project's `key=value,...` strings: config variants (`apply_variant`)
  and sweep arguments (`sweep.parse_arg`). Order is kept (variants are edits applied in turn);
  a bare key has the value None, which `parse_bool` reads as on.
  """
  pairs = []
  for item in (arg or "").split(","):
    key, eq, value = item.partition("=")
    if key.strip():
      pairs.append((key.strip(), value.strip() if eq else None))
  return pairs


VARIANT_HELP = {
    "lrn=0|1": "local response normalisation on/off",
    "pool=3x2|2x2": "pooling window x stride (3x2 overlapping, paper; 2x2 not)",
    "towers=1|2": "1: the paper's one-tower net with half the kernels",
    "pca=0|1": "PCA colour augmentation on/off",
    "dropout=R": "dropout rate (0 turns it off)",
    "aug=0|1": "random crops and flips on/off",
    "act=relu|tanh": "activation function",
    "drop_conv=N": "remove conv layer N (1-5); conv3's cross-tower link moves to conv4",
    "crops=center|ten": "test-time views",
    "init=paper|he": "weight initialisation",
    "convention=paper|cuda-convnet": "the printed paper, or what its authors' code ran",
    "seed=N": "random seed",
    "epochs=N": "number of epochs",
    "runlocal": "shrink everything to run in seconds on a laptop",
}


def apply_variant(c: ml_collections.ConfigDict, arg: str | None, runlocal=None) -> None:
  """Applies `key=value,key2=value2,flag` edits from a config-file argument string."""
  for key, value in parse_kv(arg):
    try:
      edits = _variant_edits(key, value, runlocal)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
      item = key if value is None else f"{key}={value}"
      reason = e.args[0] if isinstance(e, KeyError) else f"{key} needs a value" if value is None else e
      raise ValueError(
          f"bad config argument {item!r}: {reason}. Known arguments: {'; '.join(VARIANT_HELP)} "
          "(`python -m alexnet_jax.main --help` says what each does).") from None
    for edit in edits:
      edit(c)


def _variant_edits(key, value, runlocal):
  if key == "lrn":
    return [_set("model.lrn", parse_bool(value))]
  if key == "pool":
    return [_pool(value)]
  if key == "towers":
    if value == "1":
      return [one_tower]
    if value == "2":
      return []
    raise ValueError("towers must be 1 or 2")
  if key == "pca":
    return [_set("data.pca_noise", 0.1 if parse_bool(value) else 0.0)]
  if key == "dropout":
    return [_set("model.dropout", float(value))]
  if key == "aug":
    on = parse_bool(value)
    return [_set("data.random_crop", on), _set("data.flip", on)]
  if key == "act":
    return [_set("model.activation", value)]
  if key == "drop_conv":
    return [_remove_conv(int(value))]
  if key == "crops":
    return [_set("data.eval_crops", value)]
  if key == "init":
    return [_set("model.init", value)]
  if key == "convention":
    if value not in CONVENTIONS:
      raise ValueError(f"convention must be one of {tuple(CONVENTIONS)}")
    return [CONVENTIONS[value]]
  if key == "seed":
    return [_set("seed", int(value))]
  if key == "epochs":
    return [_set("num_epochs", int(value))]
  if key == "runlocal":
    if runlocal is None:
      raise ValueError("this config has no runlocal variant")
    return [runlocal] if parse_bool(value) else []
  raise KeyError(f"unknown argument {key!r}")
