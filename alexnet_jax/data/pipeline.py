"""Train and eval batch iterators: what train.py consumes.

Order and augmentation are functions of (config.seed, epoch, process, position) only: epoch e
is a fresh tf.data pipeline whose shuffles and random numbers are seeded from (seed, e), so
resuming at step k builds epoch k // steps_per_epoch and skips to its batch k % steps_per_epoch,
reading (not decoding) what it skips.

Two ways to read: with config.data.cache the process's shard is decoded and resized once into
a uint8 array kept in memory and each epoch is a full permutation of it; without, examples
stream from disk through a seeded file shuffle and shuffle buffer.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
from typing import Iterator

import numpy as np
import tensorflow as tf
from absl import logging

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
  """Opens (preparing if it can) the dataset; raises DatasetError saying how to get it."""
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


def _seed(*words: int) -> tuple[int, int]:
  """A stateless-op seed (two int64s) mixed from the words, e.g. (seed, epoch, process)."""
  state = np.random.SeedSequence([int(w) for w in words]).generate_state(2, np.uint32)
  return int(state[0]), int(state[1])


_ARRAYS: dict = {}


def _arrays(source, r: sources.Range, image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """The range decoded and resized into memory, once per process (config.data.cache)."""
  key = (source.key, r, image_size)
  if key not in _ARRAYS:
    need = r.size * image_size ** 2 * source.channels
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > ram // 2:
      raise config_lib.ConfigError(
          f"config.data.cache=True would hold {need / 2**30:.1f} GiB of {r.split} images in "
          f"memory (this machine has {ram / 2**30:.1f} GiB); set config.data.cache=False.")
    logging.info("Caching %s[%d:%d] at %dpx in memory", r.split, r.start, r.end, image_size)
    images, labels = [], []
    for x, y in _decoded(source, r, image_size).batch(1024).as_numpy_iterator():
      images.append(x)
      labels.append(y)
    _ARRAYS[key] = (np.concatenate(images) if images else
                    np.zeros((0, image_size, image_size, source.channels), np.uint8),
                    np.concatenate(labels) if labels else np.zeros((0,), np.int32))
  return _ARRAYS[key]


def _decoded(source, r, image_size) -> tf.data.Dataset:
  """The range as (uint8 image_size x image_size image, label), in stored order."""
  return source.read(r).map(
      lambda b, y: (ops.decode_square(b, source.channels, image_size), y),
      num_parallel_calls=tf.data.AUTOTUNE)


def _fixed_channel_stats(config) -> bool:
  d = config.data
  return d.normalize == "channel" and d.channel_mean is not None


def _needs_stats(config, train: bool) -> bool:
  d = config.data
  normalize_needs = d.normalize != "none" and not _fixed_channel_stats(config)
  return normalize_needs or (train and d.pca_noise > 0)


def _channel_mean_std(config, stats, channels: int):
  """Per-channel mean and std for normalize='channel': the config's, else the data's."""
  d = config.data
  if not _fixed_channel_stats(config):
    return tf.constant(stats.channel_mean), tf.constant(stats.channel_std)
  if len(d.channel_mean) != channels:
    raise config_lib.ConfigError(
        f"config.data.channel_mean={tuple(d.channel_mean)} has {len(d.channel_mean)} values but "
        f"{d.dataset!r} images have {channels} channels; give one mean and std per channel.")
  return (tf.constant(d.channel_mean, tf.float32), tf.constant(d.channel_std, tf.float32))


def _stats(config, source, splits, train: bool):
  if not _needs_stats(config, train):
    return None
  cached = None
  if config.data.cache:
    cached = _ARRAYS.get((source.key, splits.train, config.data.image_size), (None,))[0]
  return stats_lib.for_config(config, source, splits, train_images=cached)


def make_train_preprocess(config, stats, channels: int):
  """(uint8 (S, S, C) image, label, seed) -> train example, as config.data says."""
  d = config.data
  mode = d.normalize
  if mode == "mean_image":
    mean_image = tf.constant(stats.mean_image)
  elif mode == "channel":
    mean, std = _channel_mean_std(config, stats, channels)
  use_pca = d.pca_noise > 0
  if use_pca:
    vecs, vals = tf.constant(stats.pca_eigvecs), tf.constant(stats.pca_eigvals)

  def preprocess(image, label, seed):
    r = ops.draw_augmentation(seed, d.image_size, d.crop_size, channels,
                              random_crop=d.random_crop, flip=d.flip, pca_noise=d.pca_noise)
    flip = r["flip"] if d.flip else None
    x = tf.cast(ops.crop(image, r["offset"], d.crop_size, flip), tf.float32)
    if mode == "mean_image":
      x -= ops.crop(mean_image, r["offset"], d.crop_size, flip)
    if use_pca:
      x = ops.pca_noise(x, r["alphas"], vecs, vals)
    if mode == "channel":
      x = ops.channel_normalize(x, mean, std)
    return {"image": x, "label": label}

  return preprocess


def make_eval_preprocess(config, stats, channels: int = 3):
  """(uint8 image, label, mask) -> eval example with the center or the ten views."""
  d = config.data
  mode = d.normalize
  view = functools.partial(ops.ten_crop if d.eval_crops == "ten" else ops.center_crop,
                           size=d.crop_size)
  if mode == "mean_image":
    mean_view = view(tf.constant(stats.mean_image))
  elif mode == "channel":
    mean, std = _channel_mean_std(config, stats, channels)

  def preprocess(image, label, mask):
    x = tf.cast(view(image), tf.float32)
    if mode == "mean_image":
      x -= mean_view
    elif mode == "channel":
      x = ops.channel_normalize(x, mean, std)
    return {"image": x, "label": label, "mask": mask}

  return preprocess


def _options() -> tf.data.Options:
  o = tf.data.Options()
  o.deterministic = True
  o.experimental_optimization.map_parallelization = True
  return o


def train_batches(config, start_step: int = 0, process_index: int = 0,
                  process_count: int = 1) -> Iterator[dict]:
  """Endless training batches of this process's shard, from global step `start_step` on."""
  source = sources.open_source(config)
  splits = sources.resolve_splits(config, source)
  batch = _local_batch(config, "batch_size", process_count)
  spe = splits.train.size // config.batch_size
  if spe < 1:
    raise config_lib.ConfigError(
        f"config.batch_size={config.batch_size} exceeds the {splits.train.size} training examples.")
  shard = splits.train.shard(process_index, process_count)
  if config.data.cache:
    _arrays(source, shard, config.data.image_size)
  stats = _stats(config, source, splits, train=True)
  preprocess = make_train_preprocess(config, stats, source.channels)
  first_epoch, first_step = divmod(start_step, spe)

  def epochs():
    for epoch in itertools.count(first_epoch):
      skip = first_step if epoch == first_epoch else 0
      ds = _train_epoch(config, source, shard, epoch, process_index, spe, batch, skip, preprocess)
      yield from ds.as_numpy_iterator()

  return epochs()


def _train_epoch(config, source, shard, epoch, process_index, spe, batch, skip, preprocess):
  d = config.data
  seed = _seed(config.seed, epoch, process_index)
  first = skip * batch  # position in the epoch of the first example to produce

  if d.cache:
    images, labels = (tf.constant(a) for a in _arrays(source, shard, d.image_size))
    order = np.random.default_rng(seed).permutation(shard.size)[first:spe * batch]
    ds = tf.data.Dataset.from_tensor_slices(order)
    load = lambda i: (tf.gather(images, i), tf.gather(labels, i))  # noqa: E731
  else:
    ds = source.read(shard, shuffle_seed=seed[0])
    if d.shuffle_buffer > 1:
      ds = ds.shuffle(d.shuffle_buffer, seed=seed[1])
    # Skipping before decoding: resuming reads the skipped records but decodes none.
    ds = ds.take(spe * batch).skip(first)
    load = lambda xy: (ops.decode_square(xy[0], source.channels, d.image_size), xy[1])  # noqa: E731

  # Each example's random numbers come from (seed, epoch, process, its position in the epoch).
  key = tf.constant(seed, tf.int64)

  def example(position, item):
    image, label = load(item)
    return preprocess(image, label, tf.random.experimental.stateless_fold_in(key, position))

  ds = ds.enumerate(start=first).map(example, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch, drop_remainder=True)
  return ds.prefetch(d.prefetch).with_options(_options())


def eval_batches(config, split: str = "val", process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict]:
  """One pass over `split` ('val' or 'test'), padded so that every process yields as many
  batches; `mask` is 1 on real examples and 0 on padding."""
  if split not in ("val", "test"):
    raise ValueError(f"split must be 'val' or 'test', got {split!r}")
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
  stats = _stats(config, source, splits, train=False)
  if d.cache:
    images, labels = _arrays(source, shard, d.image_size)
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
  else:
    ds = _decoded(source, shard, d.image_size)
  ds = ds.map(lambda x, y: (x, y, tf.constant(1.0)))
  pad = num_batches * batch - shard.size
  blank = (tf.zeros([d.image_size, d.image_size, source.channels], tf.uint8), tf.constant(0),
           tf.constant(0.0))
  ds = ds.concatenate(tf.data.Dataset.from_tensors(blank).repeat(pad))
  ds = ds.map(make_eval_preprocess(config, stats, source.channels),
              num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch, drop_remainder=True)
  return ds.prefetch(d.prefetch).with_options(_options()).as_numpy_iterator()
