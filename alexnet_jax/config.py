"""The one place that knows every config field, its default and what values it may take.

Config files in `configs/` start from `base_config()` and change what their setup needs;
`apply_variant` turns a big_vision-style argument string (`lrn=0,towers=1,runlocal`) into
field changes, so an ablation is one flag away:

    python -m alexnet_jax.main --config=configs/alexnet_imagenet.py:lrn=0,pool=2x2 ...

`validate` runs before anything is built and names the offending field and its fix.
"""

from __future__ import annotations

import ml_collections

PAPER_BIAS_ONE = ("conv2", "conv4", "conv5", "fc6", "fc7")


def base_config() -> ml_collections.ConfigDict:
  """The paper's ImageNet setup (Krizhevsky et al., 2012, sections 3-5)."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  m = c.model = ml_collections.ConfigDict()
  m.num_classes = 1000
  m.input_size = 227  # The paper says 224, but 11x11/4 convs only give 55x55 maps from 227.
  m.towers = 2
  # Widths summed over towers; each tower holds features // towers kernels.
  m.conv_features = (96, 256, 384, 384, 256)
  m.conv_kernels = (11, 5, 3, 3, 3)
  m.conv_strides = (4, 1, 1, 1, 1)
  m.conv_padding = (0, 2, 1, 1, 1)
  m.conv_layers = (1, 2, 3, 4, 5)  # Drop an index to remove that conv layer.
  m.cross_tower = (3,)  # Conv layers whose kernels see both towers' maps.
  m.lrn = True
  m.lrn_after = (1, 2)
  m.lrn_size = 5
  m.lrn_k = 2.0
  m.lrn_alpha = 1e-4
  m.lrn_beta = 0.75
  m.pool_after = (1, 2, 5)
  m.pool_window = 3
  m.pool_stride = 2
  m.fc_features = (4096, 4096)
  m.dropout = 0.5
  m.activation = "relu"
  m.init = "paper"
  m.init_std = 0.01
  m.bias_one = PAPER_BIAS_ONE
  m.dtype = "float32"  # Compute dtype; params stay float32 ("bfloat16" for GPUs).

  d = c.data = ml_collections.ConfigDict()
  d.dataset = "imagenet2012"
  d.data_dir = ml_collections.FieldReference(None, field_type=str)
  d.manual_dir = ml_collections.FieldReference(None, field_type=str)
  d.train_split = "train"
  d.val_split = "validation"  # Used for the LR plateau rule and per-epoch curves.
  d.test_split = ml_collections.FieldReference(None, field_type=str)  # Final evaluation.
  d.val_fraction = 0.0  # >0 carves the validation split out of train.
  d.image_size = 256  # Shorter side resized to this, then center-cropped square.
  d.crop_size = 227
  d.random_crop = True
  d.flip = True
  d.pca_noise = 0.1  # Std of the alphas of the PCA colour noise; 0 turns it off.
  d.normalize = "mean_image"  # "mean_image" (paper), "channel" (mean/std), or "none".
  # Fixed per-channel mean/std in 0..255 for normalize="channel", instead of training-set
  # statistics: pretrained weights expect the normalisation they were trained with.
  d.channel_mean = ml_collections.FieldReference(None, field_type=tuple)
  d.channel_std = ml_collections.FieldReference(None, field_type=tuple)
  d.stats_file = ml_collections.FieldReference(None, field_type=str)
  d.eval_crops = "center"  # "center" or "ten" (4 corners + center, and their flips).
  d.shuffle_buffer = 10_000
  d.cache = False
  d.prefetch = 2

  o = c.optim = ml_collections.ConfigDict()
  o.lr = 0.01
  o.momentum = 0.9
  o.weight_decay = 5e-4
  o.decay_biases = False
  o.schedule = "plateau"  # "plateau" (paper), "steps", "cosine", "constant".
  o.plateau_factor = 0.1
  o.plateau_patience = 1  # Epochs without val improvement before a drop.
  o.plateau_min_delta = 0.0
  o.plateau_max_drops = 3  # The paper divided by 10 three times.
  o.step_epochs = ()  # For "steps": epochs at which the LR is multiplied by plateau_factor.
  o.warmup_epochs = 0.0

  c.batch_size = 128
  c.num_epochs = 90
  c.eval_batch_size = 256
  c.eval_every_epochs = 1
  c.log_every_steps = 50
  c.checkpoint_every_steps = 2000
  c.keep_checkpoints = 2
  c.max_steps = -1  # >0 stops early (smoke tests, benchmarks).

  mesh = c.mesh = ml_collections.ConfigDict()
  mesh.data = -1  # -1: all devices left after the model axis.
  mesh.model = 1  # 2 puts one tower on each device (the paper's layout).

  dist = c.distributed = ml_collections.ConfigDict()
  dist.enabled = False
  dist.coordinator_address = ml_collections.FieldReference(None, field_type=str)
  dist.num_processes = ml_collections.FieldReference(None, field_type=int)
  dist.process_id = ml_collections.FieldReference(None, field_type=int)
  return c


def one_tower(c: ml_collections.ConfigDict) -> None:
  """The paper's one-GPU baseline: half the kernels in every conv but conv5."""
  if c.model.towers == 1:  # Already one tower: halving again would not be the paper's net.
    return
  f = list(c.model.conv_features)
  c.model.towers = 1
  c.model.conv_features = tuple(x // 2 for x in f[:4]) + (f[4],)


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


def _bool(v):
  if v in ("1", "true", "True", "on", "yes"):
    return True
  if v in ("0", "false", "False", "off", "no"):
    return False
  raise ValueError(f"expected a boolean (1/0/true/false), got {v!r}")


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
    "seed=N": "random seed",
    "epochs=N": "number of epochs",
    "runlocal": "shrink everything to run in seconds on a laptop",
}


def apply_variant(c: ml_collections.ConfigDict, arg: str | None, runlocal=None) -> None:
  """Applies `key=value,key2=value2,flag` edits from a config-file argument string."""
  if not arg:
    return
  for item in arg.split(","):
    item = item.strip()
    if not item:
      continue
    key, _, value = item.partition("=")
    try:
      edits = _variant_edits(key, value, runlocal)
    except (ValueError, KeyError) as e:
      raise ValueError(
          f"bad config argument {item!r}: {e}. Known arguments: "
          + "; ".join(f"{k} ({v})" for k, v in VARIANT_HELP.items())) from None
    for edit in edits:
      edit(c)


def _variant_edits(key, value, runlocal):
  if key == "lrn":
    return [_set("model.lrn", _bool(value))]
  if key == "pool":
    return [_pool(value)]
  if key == "towers":
    if value == "1":
      return [one_tower]
    if value == "2":
      return []
    raise ValueError("towers must be 1 or 2")
  if key == "pca":
    return [_set("data.pca_noise", 0.1 if _bool(value) else 0.0)]
  if key == "dropout":
    return [_set("model.dropout", float(value))]
  if key == "aug":
    on = _bool(value)
    return [_set("data.random_crop", on), _set("data.flip", on)]
  if key == "act":
    return [_set("model.activation", value)]
  if key == "drop_conv":
    return [_remove_conv(int(value))]
  if key == "crops":
    return [_set("data.eval_crops", value)]
  if key == "init":
    return [_set("model.init", value)]
  if key == "seed":
    return [_set("seed", int(value))]
  if key == "epochs":
    return [_set("num_epochs", int(value))]
  if key == "runlocal":
    if runlocal is None:
      raise ValueError("this config has no runlocal variant")
    return [runlocal]
  raise KeyError(f"unknown argument {key!r}")


_CHOICES = {
    "model.activation": ("relu", "tanh"),
    "model.init": ("paper", "he"),
    "model.dtype": ("float32", "bfloat16"),
    "data.normalize": ("mean_image", "channel", "none"),
    "data.eval_crops": ("center", "ten"),
    "optim.schedule": ("plateau", "steps", "cosine", "constant"),
}


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field and the fix."""


def validate(c: ml_collections.ConfigDict) -> None:
  """Rejects impossible configs before any data is read or parameter made."""
  for path, choices in _CHOICES.items():
    node, leaf = c, path
    for p in path.split(".")[:-1]:
      node = node[p]
    leaf = path.split(".")[-1]
    if node[leaf] not in choices:
      raise ConfigError(f"config.{path}={node[leaf]!r} is not one of {choices}.")
  m = c.model
  n = len(m.conv_features)
  for f in ("conv_kernels", "conv_strides", "conv_padding"):
    if len(m[f]) != n:
      raise ConfigError(
          f"config.model.{f} has {len(m[f])} entries but conv_features has {n}; give one per conv layer.")
  if not m.conv_layers or any(not 1 <= i <= n for i in m.conv_layers):
    raise ConfigError(f"config.model.conv_layers={tuple(m.conv_layers)} must name layers in 1..{n}.")
  if m.towers not in (1, 2):
    raise ConfigError(f"config.model.towers={m.towers}: use 1 or 2.")
  for i in m.conv_layers:
    if m.conv_features[i - 1] % m.towers:
      raise ConfigError(
          f"config.model.conv_features[{i - 1}]={m.conv_features[i - 1]} does not split over "
          f"{m.towers} towers; make it a multiple of config.model.towers.")
  for f in m.fc_features:
    if f % m.towers:
      raise ConfigError(f"config.model.fc_features={tuple(m.fc_features)} must be multiples of towers={m.towers}.")
  if not 0.0 <= m.dropout < 1.0:
    raise ConfigError(f"config.model.dropout={m.dropout} must be in [0, 1).")
  if m.lrn and m.lrn_size % 2 != 1:
    raise ConfigError(f"config.model.lrn_size={m.lrn_size} must be odd (a window centred on each channel).")
  if m.pool_window < 1 or m.pool_stride < 1:
    raise ConfigError("config.model.pool_window and pool_stride must be >= 1.")
  size = min(feature_map_sizes(c.model))
  if size < 1:
    raise ConfigError(
        f"config.model.input_size={m.input_size} is too small for these convs and pools: the maps "
        f"shrink to nothing ({feature_map_sizes(c.model)}). Use a larger input or fewer pools.")
  d = c.data
  if d.crop_size > d.image_size:
    raise ConfigError(f"config.data.crop_size={d.crop_size} exceeds data.image_size={d.image_size}.")
  if d.crop_size != m.input_size:
    raise ConfigError(
        f"config.data.crop_size={d.crop_size} != config.model.input_size={m.input_size}: the network "
        "sees the crops, so set both to the same value.")
  if (d.channel_mean is None) != (d.channel_std is None):
    raise ConfigError(
        "config.data.channel_mean and config.data.channel_std go together; set both (one value "
        "per channel, 0..255 scale) or neither.")
  if d.channel_mean is not None:
    if len(d.channel_mean) != len(d.channel_std):
      raise ConfigError(
          f"config.data.channel_mean={tuple(d.channel_mean)} and data.channel_std="
          f"{tuple(d.channel_std)} need one value per channel each.")
    if any(s <= 0 for s in d.channel_std):
      raise ConfigError(f"config.data.channel_std={tuple(d.channel_std)} must be > 0.")
    if d.normalize != "channel":
      raise ConfigError(
          f"config.data.channel_mean/channel_std are set but data.normalize={d.normalize!r} "
          "ignores them; set data.normalize='channel' or unset them.")
  if c.batch_size < 1 or c.eval_batch_size < 1:
    raise ConfigError("config.batch_size and config.eval_batch_size must be >= 1.")
  for field in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
    # 0 would divide by zero after compilation (the step counters) or, for keep_checkpoints,
    # let orbax delete every checkpoint it writes.
    if not isinstance(c[field], int) or c[field] < 1:
      raise ConfigError(f"config.{field}={c[field]!r} must be an integer >= 1.")
  if c.mesh.model not in (1, 2):
    raise ConfigError(f"config.mesh.model={c.mesh.model}: use 1 (towers together) or 2 (one tower per device).")
  if c.mesh.model == 2 and m.towers != 2:
    raise ConfigError(
        "config.mesh.model=2 puts one tower on each device, but config.model.towers="
        f"{m.towers}; set mesh.model=1 for a one-tower net.")
  # The LR schedule's own checks (a step past the last epoch, a warm-up longer than the run)
  # belong here too, so a sweep catches them before its first run rather than in the run.
  from alexnet_jax import optim  # Local: keeps `config` importable without JAX.
  try:
    optim.make_lr_policy(c.optim, c.num_epochs)
  except ValueError as e:
    raise ConfigError(str(e)) from None


def feature_map_sizes(m) -> list[int]:
  """Spatial size after each existing conv (and its pool), for shape checks and docs."""
  size = m.input_size
  sizes = []
  for i in range(1, len(m.conv_features) + 1):
    if i in m.conv_layers:
      k, s, p = m.conv_kernels[i - 1], m.conv_strides[i - 1], m.conv_padding[i - 1]
      size = (size + 2 * p - k) // s + 1
    if i in m.pool_after:
      size = (size - m.pool_window) // m.pool_stride + 1
    sizes.append(size)
  return sizes


def small_model(c: ml_collections.ConfigDict, *, num_classes=10, crop=28) -> None:
  """The paper's structure shrunk for 32x32 data: same layers, towers, LRN, pools and fc.

  5x5 convs at stride 1 replace the 11x11/4 and 5x5 convs, so a 28px crop gives maps
  28 -> 13 -> 13 -> 6 -> 6 -> 6 -> 6 -> 2; widths are about a third of the paper's.
  """
  m = c.model
  m.num_classes = num_classes
  m.input_size = crop
  m.conv_features = (32, 64, 96, 96, 64)
  m.conv_kernels = (5, 5, 3, 3, 3)
  m.conv_strides = (1, 1, 1, 1, 1)
  m.conv_padding = (2, 2, 1, 1, 1)
  m.fc_features = (512, 512)
  # N(0, 0.01) works in the paper's net because its fan-ins (2,000-9,000) give each layer a
  # gain of 0.5-1; with fan-ins of 250-600 it would shrink the signal ~5x per layer and the
  # net does not learn (measured: loss stuck at ln 10 for 2 epochs). 0.03 restores the gain.
  m.init_std = 0.03
