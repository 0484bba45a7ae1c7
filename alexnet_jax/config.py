"""The one place that knows every config field, its default and what values it may take.

Config files in `configs/` start from `base_config()` and change what their setup needs;
the named edits (`variants.apply_variant`: `lrn=0,towers=1,runlocal`, and the two readings
`convention=paper|cuda-convnet`) are in `alexnet_jax/variants.py`. `validate` runs before
anything is built and names the offending field and its fix.
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
  # The paper says 224. A 224px input gives 55x55 conv1 maps only if the conv's output
  # size is rounded up, as cuda-convnet does (1 + ceil((224 - 11) / 4) = 55: the last
  # windows overhang the far edge by 3 zero pixels; see conv_pad_far and
  # convention=cuda-convnet). With ordinary (floor) convs 227 gives 55, Caffe's choice.
  m.input_size = 227
  m.towers = 2
  # Widths summed over towers; each tower holds features // towers kernels.
  m.conv_features = (96, 256, 384, 384, 256)
  m.conv_kernels = (11, 5, 3, 3, 3)
  m.conv_strides = (4, 1, 1, 1, 1)
  m.conv_padding = (0, 2, 1, 1, 1)
  m.conv_pad_far = (0, 0, 0, 0, 0)  # Extra zeros on the bottom/right edge only, per conv.
  m.conv_layers = (1, 2, 3, 4, 5)  # Drop an index to remove that conv layer.
  m.cross_tower = (3,)  # Conv layers whose kernels see both towers' maps.
  m.lrn = True
  m.lrn_after = (1, 2)
  m.lrn_size = 5
  m.lrn_k = 2.0
  m.lrn_alpha = 1e-4
  m.lrn_beta = 0.75
  # False: alpha multiplies the raw window sum, as printed in section 3.3. True: alpha / size,
  # as cuda-convnet (and Caffe, PyTorch) compute it, so 1e-4 acts as 2e-5.
  m.lrn_alpha_per_size = False
  m.act_after_lrn = ()  # Convs whose ReLU follows their LRN (cuda-convnet's conv1).
  m.pool_after = (1, 2, 5)
  m.pool_window = 3
  m.pool_stride = 2
  m.fc_features = (4096, 4096)
  m.dropout = 0.5
  # "train": inverted dropout, kept units x 1/(1 - rate) while training, nothing at test.
  # "test": the paper's (section 4.2) and cuda-convnet's way, kept units unscaled while
  # training and every output x (1 - rate) at test. Same expectation, but with "train"
  # fc7 and fc8 see inputs twice as large during training.
  m.dropout_scaling = "train"
  m.activation = "relu"
  m.init = "paper"
  m.init_std = 0.01
  # Per-layer stds for init="paper" (conv1.. then fc layers and the class layer); () uses
  # init_std everywhere.
  m.init_stds = ()
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
  # Views of the per-epoch validation; None: eval_crops. "center" with eval_crops="ten" keeps
  # the paper's 10-crop final test while validation costs a tenth.
  d.val_crops = ml_collections.FieldReference(None, field_type=str)
  # >0 trains on the first N examples of the training range only (after val is carved out):
  # a fixed subset, the same in every run, for studies that need a net to overfit.
  d.train_examples = 0
  d.cache = False  # Decode and resize the process's shard once into memory (small datasets).
  # grain reads with `threads` threads in this process, each batch made whole by one of them,
  # and `prefetch` batches ahead; workers > 0 moves decoding and augmentation into that many
  # processes (ImageNet-sized JPEG decoding needs several cores per accelerator). Batches do
  # not depend on either number.
  d.threads = 4
  d.workers = 0
  d.prefetch = 4

  o = c.optim = ml_collections.ConfigDict()
  o.lr = 0.01
  o.momentum = 0.9
  o.weight_decay = 5e-4
  # Biases are not decayed: the paper's text decays "the weights", its authors' code never
  # decays biases (cuda-convnet builds them with weight cost 0), and a decayed bias only
  # pulls units towards zero output, which their bias of 1 (section 5) is there to avoid.
  o.decay_biases = False
  o.bias_lr_mult = 1.0  # Biases' learning rate as a multiple of the weights' (cuda-convnet: 2).
  o.schedule = "plateau"  # "plateau" (paper), "steps", "cosine", "constant".
  o.plateau_factor = 0.1
  # Evaluations in a row without improvement before a drop. With the threshold below,
  # simulated 90-epoch ImageNet curves drop three times, at about epochs 30, 50 and 60,
  # where patience 1 with no threshold spent all three drops on noise by epoch ~30
  # (tests/test_optim.py); the paper dropped three times in its ~90 epochs.
  o.plateau_patience = 5
  # An epoch improves on the best if below best * (1 - threshold) - min_delta. 0.01 is
  # about two binomial stds of the top-1 error on ILSVRC-2012's 50,000 validation images
  # (sqrt(0.4 * 0.6 / 50000) = 0.22 points at 40% error, 0.55% of it): less is noise.
  o.plateau_threshold = 0.01
  o.plateau_min_delta = 0.0
  o.plateau_max_drops = 3  # The paper divided by 10 three times.
  o.step_epochs = ()  # For "steps": epochs at which the LR is multiplied by plateau_factor.
  o.warmup_epochs = 0.0

  c.batch_size = 128
  c.num_epochs = 90
  c.eval_batch_size = 256
  c.eval_every_epochs = 1  # Validation (and its checkpoint) every N epochs, and after the last.
  # Also evaluate the training range in eval mode at each evaluation (`train_eval` rows): the
  # training error without dropout or augmentation, which shows overfitting. Costs one pass
  # over the training range per evaluation, so it suits training subsets.
  c.eval_train = False
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


_CHOICES = {
    "model.activation": ("relu", "tanh"),
    "model.init": ("paper", "he"),
    "model.dropout_scaling": ("train", "test"),
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
  for f in ("conv_kernels", "conv_strides", "conv_padding", "conv_pad_far"):
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
  if any(p < 0 for p in m.conv_pad_far):
    raise ConfigError(f"config.model.conv_pad_far={tuple(m.conv_pad_far)} must be >= 0.")
  n_layers = n + len(m.fc_features) + 1
  if m.init_stds and (len(m.init_stds) != n_layers or any(v <= 0 for v in m.init_stds)):
    raise ConfigError(
        f"config.model.init_stds={tuple(m.init_stds)} needs {n_layers} positive stds (one per "
        "conv layer, fc layer and the class layer), or () to use init_std everywhere.")
  if any(i not in m.lrn_after for i in m.act_after_lrn):
    raise ConfigError(
        f"config.model.act_after_lrn={tuple(m.act_after_lrn)} names convs without LRN "
        f"(lrn_after={tuple(m.lrn_after)}); list only convs in lrn_after.")
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
  if d.val_crops is not None and d.val_crops not in ("center", "ten"):
    raise ConfigError(f"config.data.val_crops={d.val_crops!r} is not one of (None, 'center', 'ten').")
  if d.train_examples < 0:
    raise ConfigError(f"config.data.train_examples={d.train_examples} must be >= 0 (0: all).")
  if d.threads < 1 or d.workers < 0 or d.prefetch < 1:
    raise ConfigError(
        f"config.data.threads={d.threads}, data.workers={d.workers}, data.prefetch={d.prefetch}: "
        "threads and prefetch must be >= 1, workers >= 0 (0 reads in the training process).")
  if c.optim.bias_lr_mult <= 0:
    raise ConfigError(f"config.optim.bias_lr_mult={c.optim.bias_lr_mult} must be > 0.")
  if c.batch_size < 1 or c.eval_batch_size < 1:
    raise ConfigError("config.batch_size and config.eval_batch_size must be >= 1.")
  if c.eval_every_epochs < 1:
    raise ConfigError(f"config.eval_every_epochs={c.eval_every_epochs} must be >= 1 (1: every epoch).")
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
      size = (size + 2 * p + m.conv_pad_far[i - 1] - k) // s + 1
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


def diff(a: dict, b: dict, ignore=()) -> dict[str, tuple]:
  """{dotted field: (a's value, b's value)} of the fields that differ between two configs as
  nested dicts (config.json, or `ConfigDict.to_dict()`); a field only one has reads as None.
  The resume warning and the report's "config change" column both use it."""
  def flat(d, prefix=""):
    if not isinstance(d, dict):
      return {prefix[:-1]: d}
    out = {}
    for k, v in d.items():
      out.update(flat(v, f"{prefix}{k}."))
    return out

  fa, fb = flat(a), flat(b)
  return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb))
          if k not in ignore and fa.get(k) != fb.get(k)}


# The named edits live in `variants`; config files and older callers reach them through here.
from alexnet_jax.variants import (CONVENTIONS, VARIANT_HELP, apply_variant,  # noqa: E402,F401
                                  cuda_convnet_convention, one_tower, paper_convention, parse_kv)
