"""Train and eval batches on grain: what train.py consumes.

The training stream of one process is a grain `MapDataset` of batches, so any batch is a pure
function of (config.seed, process, its index):
- epoch e is a permutation of the process's shard seeded by (seed, e, process), cut to
  steps_per_epoch * local batch examples (every epoch has the same number of steps, as the
  loop and the LR policy count them);
- each example's crop, flip and colour noise come from a generator grain seeds with the
  example's position in that stream;
- examples are grouped into batches before grain's worker processes or threads touch them, so
  the batches do not depend on how many workers made them.
The iterator's state (the index of the next batch) is saved in the orbax checkpoint, and a
resumed run jumps straight to that batch: nothing skipped is read again.

With config.data.cache the process's shard is decoded and resized once into a uint8 array in
memory, which small datasets (Fashion-MNIST, test folders) read from ever after.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Iterator

import grain
import numpy as np
from absl import flags, logging

from alexnet_jax import config as config_lib
from alexnet_jax.data import ops, sources
from alexnet_jax.data import stats as stats_lib


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  num_classes: int
  num_train: int
  num_val: int
  num_test: int | None
  channels: int


def dataset_info(config) -> DatasetInfo:
  """Opens the dataset; raises DatasetError saying how to get it."""
  source = sources.open_source(config)
  splits = sources.resolve_splits(config, source)
  return DatasetInfo(num_classes=source.num_classes, num_train=splits.train.size,
                     num_val=splits.val.size if splits.val else 0,
                     num_test=splits.test.size if splits.test else None,
                     channels=source.channels)


def steps_per_epoch(config, info: DatasetInfo) -> int:
  return info.num_train // config.batch_size


def _local_batch(config, field: str, process_count: int) -> int:
  size = config[field]
  if size % process_count:
    raise config_lib.ConfigError(
        f"config.{field}={size} does not split over {process_count} processes; make it a "
        "multiple of the process count.")
  return size // process_count


def _seed(*words: int) -> int:
  """A 32-bit seed mixed from the words, e.g. (seed, epoch, process); grain takes < 2**32."""
  return int(np.random.SeedSequence([int(w) for w in words]).generate_state(1, np.uint32)[0])


class CachedSquares:
  """`sources.SquareImages` read once into memory: the same records, from a uint8 array."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, ok: np.ndarray):
    self.images, self.labels, self.ok = images, labels, ok

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, i):
    return self.images[i], self.labels[i], bool(self.ok[i])


_CACHE: dict = {}


def _squares(config, source, r: sources.Range, *, replace: bool):
  """The range's records: from memory with config.data.cache (filled on first use), else read."""
  d = config.data
  view = sources.SquareImages(source, r, d.image_size, replace=replace)
  if not d.cache or r.size == 0:
    return view
  key = (source.name, source.key, r, d.image_size, replace)
  if key not in _CACHE:
    need = r.size * d.image_size ** 2 * source.channels
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > ram // 2:
      raise config_lib.ConfigError(
          f"config.data.cache=True would hold {need / 2**30:.1f} GiB of {r.split} images in "
          f"memory (this machine has {ram / 2**30:.1f} GiB); set config.data.cache=False.")
    logging.info("Caching %s[%d:%d] at %dpx in memory", r.split, r.start, r.end, d.image_size)
    images = np.empty((r.size, d.image_size, d.image_size, source.channels), np.uint8)
    labels = np.empty((r.size,), np.int32)
    ok = np.empty((r.size,), bool)
    reads = grain.MapDataset.source(view).to_iter_dataset(_read_options(config))
    for i, (x, y, good) in enumerate(reads):
      images[i], labels[i], ok[i] = x, y, good
    _CACHE[key] = CachedSquares(images, labels, ok)
  return _CACHE[key]


def _read_options(config) -> grain.ReadOptions:
  return grain.ReadOptions(num_threads=max(1, config.data.threads),
                           prefetch_buffer_size=max(1, config.data.prefetch))


def _stats(config, source, splits, train: bool):
  d = config.data
  fixed = d.normalize == "channel" and d.channel_mean is not None
  if not ((d.normalize != "none" and not fixed) or (train and d.pca_noise > 0)):
    return None
  cached = None
  if d.cache:
    cached = _CACHE.get((source.name, source.key, splits.train, d.image_size, True))
  return stats_lib.for_config(config, source, splits, train_squares=cached)


def _channel_mean_std(config, stats, channels: int):
  """Per-channel mean and std for normalize='channel': the config's, else the data's."""
  d = config.data
  if d.channel_mean is None:
    return stats.channel_mean, stats.channel_std
  if len(d.channel_mean) != channels:
    raise config_lib.ConfigError(
        f"config.data.channel_mean={tuple(d.channel_mean)} has {len(d.channel_mean)} values but "
        f"{d.dataset!r} images have {channels} channels; give one mean and std per channel.")
  return np.float32(d.channel_mean), np.float32(d.channel_std)


class TrainPreprocess:
  """(uint8 (S, S, C) image, label, ok) + generator -> {'image', 'label'}, as config.data says.

  A class rather than a closure so that grain can pickle it into worker processes.
  """

  def __init__(self, config, stats, channels: int):
    d = config.data
    self.image_size, self.crop_size, self.channels = d.image_size, d.crop_size, channels
    self.random_crop, self.flip, self.pca = d.random_crop, d.flip, d.pca_noise
    self.mode = d.normalize
    self.mean_image = stats.mean_image if self.mode == "mean_image" else None
    if self.mode == "channel":
      self.mean, self.std = _channel_mean_std(config, stats, channels)
    if self.pca > 0:
      self.eigvecs, self.eigvals = stats.pca_eigvecs, stats.pca_eigvals

  def __call__(self, record, rng: np.random.Generator) -> dict:
    image, label, _ = record
    a = ops.draw_augmentation(rng, self.image_size, self.crop_size, self.channels,
                              random_crop=self.random_crop, flip=self.flip, pca_noise=self.pca)
    # The same numbers as ops.crop -> mean-image crop -> ops.pca_noise -> channel_normalize,
    # in place on one float32 copy: each step over a whole 227px crop is a pass over memory,
    # and these passes are most of the per-image cost after decoding.
    x = ops.crop(image, a.offset, self.crop_size, a.flip).astype(np.float32)
    if self.mode == "mean_image":
      x -= ops.crop(self.mean_image, a.offset, self.crop_size, a.flip)
    if self.pca > 0:
      x += ops.pca_shift(a.alphas, self.eigvecs, self.eigvals)
    if self.mode == "channel":
      x -= self.mean
      x /= self.std
    return {"image": x, "label": np.int32(label)}


class EvalPreprocess:
  """(uint8 image, label, ok) -> {'image', 'label', 'mask'} with the center or the ten views."""

  def __init__(self, config, stats, channels: int):
    d = config.data
    self.view = functools.partial(ops.ten_crop if d.eval_crops == "ten" else ops.center_crop,
                                  size=d.crop_size)
    self.mode = d.normalize
    if self.mode == "mean_image":
      self.mean_view = self.view(stats.mean_image)
    elif self.mode == "channel":
      self.mean, self.std = _channel_mean_std(config, stats, channels)

  def __call__(self, record) -> dict:
    image, label, ok = record
    x = self.view(image).astype(np.float32)
    if self.mode == "mean_image":
      x -= self.mean_view
    elif self.mode == "channel":
      x = ops.channel_normalize(x, self.mean, self.std)
    return {"image": x, "label": np.int32(label), "mask": np.float32(ok)}


def train_dataset(config, process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
  """This process's training batches, for num_epochs epochs, as a random-access dataset."""
  source = sources.open_source(config)
  splits = sources.resolve_splits(config, source)
  batch = _local_batch(config, "batch_size", process_count)
  spe = splits.train.size // config.batch_size
  if spe < 1:
    raise config_lib.ConfigError(
        f"config.batch_size={config.batch_size} exceeds the {splits.train.size} training examples.")
  shard = splits.train.shard(process_index, process_count)
  squares = _squares(config, source, shard, replace=True)
  preprocess = TrainPreprocess(config, _stats(config, source, splits, train=True), source.channels)
  examples = grain.MapDataset.source(squares)
  # grain's own shuffle-then-repeat would use every example of the shard in each epoch; the
  # loop counts steps_per_epoch full batches per epoch, so each epoch's permutation is cut to
  # that many examples here and the epochs are laid end to end.
  epochs = [examples.shuffle(seed=_seed(config.seed, e, process_index))[:spe * batch]
            for e in range(max(1, config.num_epochs))]
  stream = grain.MapDataset.concatenate(epochs)
  stream = stream.random_map(preprocess, seed=_seed(config.seed, process_index, 0x5EED))
  return stream.batch(batch, drop_remainder=True)


def train_iterator(config, process_index: int = 0, process_count: int = 1):
  """A checkpointable iterator over train_dataset (grain DatasetIterator: get/set_state)."""
  ds = train_dataset(config, process_index, process_count).to_iter_dataset(_read_options(config))
  if config.data.workers > 0:
    # grain's worker processes read its absl flags; outside an absl program (tests,
    # notebooks) they are unparsed, which grain treats as an error rather than as defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.data.workers))
  return iter(ds)


def train_batches(config, start_step: int = 0, process_index: int = 0,
                  process_count: int = 1) -> Iterator[dict]:
  """Training batches from global step `start_step` on (without restoring an iterator)."""
  ds = train_dataset(config, process_index, process_count)[start_step:]
  return iter(ds.to_iter_dataset(_read_options(config)))


def eval_batches(config, split: str = "val", process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict]:
  """One pass over `split` ('val', 'test', or 'train': the training range as trained, in eval
  mode), padded so that every process yields as many batches; `mask` is 1 on real examples
  and 0 on padding (and on unreadable images)."""
  if split not in ("train", "val", "test"):
    raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
  source = sources.open_source(config)
  splits = sources.resolve_splits(config, source)
  r = getattr(splits, split)
  if r is None:
    field = "test_split" if split == "test" else "val_split (or data.val_fraction)"
    raise config_lib.ConfigError(f"No {split} data: config.data.{field} is not set.")
  batch = _local_batch(config, "eval_batch_size", process_count)
  d = config.data
  shard = r.shard(process_index, process_count)
  num_batches = -(-r.max_shard_size(process_count) // batch)
  preprocess = EvalPreprocess(config, _stats(config, source, splits, train=False),
                              source.channels)
  records = grain.MapDataset.source(_squares(config, source, shard, replace=False))
  pad = num_batches * batch - shard.size
  blank = (np.zeros((d.image_size, d.image_size, source.channels), np.uint8), np.int32(0), False)
  padding = grain.MapDataset.range(pad).map(lambda _: blank)
  ds = grain.MapDataset.concatenate([records, padding]) if pad and shard.size else (
      records if not pad else padding)
  ds = ds.map(preprocess).batch(batch, drop_remainder=True)
  return iter(ds.to_iter_dataset(_read_options(config)))
