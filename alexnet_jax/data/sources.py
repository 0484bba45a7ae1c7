"""Where examples come from: TFDS builders (the catalog, offline Fashion-MNIST) and image folders.

A source hands out `(encoded image bytes, int32 label)` pairs of an index range of one split,
so that carving validation out of train, per-process shards and resuming all reduce to index
arithmetic on `Range`s and work the same for every kind of dataset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from alexnet_jax import config as config_lib
from alexnet_jax.data import fashion_mnist_offline

FOLDER_PREFIX = "folder:"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
IMAGENET_TARS = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


class DatasetError(config_lib.ConfigError):
  """A dataset that is missing, unprepared or lacks a configured split; says how to fix it."""


@dataclasses.dataclass(frozen=True)
class Range:
  """Examples [start, end) of the named split."""
  split: str
  start: int
  end: int

  @property
  def size(self) -> int:
    return self.end - self.start

  def shard(self, index: int, count: int) -> "Range":
    """Contiguous, disjoint shards covering the range; sizes differ by at most one."""
    if not 0 <= index < count:
      raise ValueError(f"process_index={index} is outside process_count={count}")
    n = self.size
    return Range(self.split, self.start + n * index // count, self.start + n * (index + 1) // count)

  def max_shard_size(self, count: int) -> int:
    return -(-self.size // count)


def default_data_dir(config) -> str:
  return os.path.expanduser(config.data.data_dir or os.environ.get("TFDS_DATA_DIR")
                            or "~/tensorflow_datasets")


class TfdsSource:
  """A prepared TFDS dataset; images stay encoded until the pipeline decodes them."""

  def __init__(self, name: str, builder: tfds.core.DatasetBuilder, data_dir: str):
    self.name = name
    self.builder = builder
    self.image_key, self.label_key = builder.info.supervised_keys or ("image", "label")
    features = builder.info.features
    self.num_classes = int(features[self.label_key].num_classes)
    self.channels = int(features[self.image_key].shape[-1] or 3)
    # The configured data_dir, not builder.data_dir_root: tfds.testing.mock_data points the
    # latter at a fixed fake path, and stats must land where the user's data lives.
    self.stats_dir = os.path.join(data_dir, "alexnet_stats")
    self.key = f"{builder.info.full_name.replace('/', '_')}"
    self._counted: dict[str, int] = {}

  def split_names(self) -> list[str]:
    return list(self.builder.info.splits.keys())

  def split_size(self, split: str) -> int:
    known = self.builder.info.splits
    if split in known:
      return int(known[split].num_examples)
    if known:
      raise KeyError(split)
    # Datasets without split metadata (some community datasets, tfds.testing.mock_data)
    # still read fine; their sizes are only learnt by reading once.
    if split not in self._counted:
      logging.info("%s has no split sizes in its metadata; counting %r once", self.name, split)
      try:
        ds = self.builder.as_dataset(
            split=split, decoders={self.image_key: tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(add_tfds_id=False))
        self._counted[split] = int(ds.reduce(0, lambda n, _: n + 1))
      except (KeyError, ValueError, tf.errors.OpError):
        raise KeyError(split) from None
      logging.info("%s[%r] has %d examples", self.name, split, self._counted[split])
    return self._counted[split]

  def read(self, r: Range, *, shuffle_seed: int | None = None) -> tf.data.Dataset:
    """The range's (bytes, label) pairs; with a seed, the file order is shuffled by it."""
    if r.size == 0:
      return _empty()
    ds = self.builder.as_dataset(
        split=f"{r.split}[{r.start}:{r.end}]",
        shuffle_files=shuffle_seed is not None,
        decoders={self.image_key: tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed, add_tfds_id=False))
    # Eval padding assumes exactly r.size examples; builders that ignore the slice
    # (tfds.testing.mock_data) would otherwise hand out the whole split.
    ds = ds.take(r.size)
    return ds.map(lambda ex: (ex[self.image_key], tf.cast(ex[self.label_key], tf.int32)))


class FolderSource:
  """Images laid out `root/split/class/*.jpg` (the TFDS ImageFolder layout).

  Unlike tfds.ImageFolder this supports index ranges, which val carving and sharding need.
  Files are put in a fixed pseudo-random order so that a range taken from the end of a split
  (the carved validation set) samples every class.
  """

  def __init__(self, name: str, root: str, data_dir: str):
    self.name = name
    self.root = root
    if not os.path.isdir(root):
      raise DatasetError(
          f"config.data.dataset={name!r}: {root} is not a directory. Point it at a folder laid "
          "out root/<split>/<class>/<image>.jpg.")
    splits = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    self.classes = sorted({c for s in splits for c in os.listdir(os.path.join(root, s))
                           if os.path.isdir(os.path.join(root, s, c))})
    self.files = {}
    for split in splits:
      paths, labels = [], []
      for label, c in enumerate(self.classes):
        d = os.path.join(root, split, c)
        if os.path.isdir(d):
          names = sorted(f for f in os.listdir(d) if f.lower().endswith(IMAGE_EXTENSIONS))
          paths += [os.path.join(d, f) for f in names]
          labels += [label] * len(names)
      order = np.random.default_rng(0).permutation(len(paths))
      self.files[split] = (np.asarray(paths, dtype=object)[order],
                           np.asarray(labels, np.int32)[order])
    if not any(len(p) for p, _ in self.files.values()):
      raise DatasetError(
          f"config.data.dataset={name!r}: no images ({', '.join(IMAGE_EXTENSIONS)}) found under "
          f"{root}/<split>/<class>/.")
    self.num_classes = len(self.classes)
    self.channels = 3
    self.stats_dir = os.path.join(data_dir, "alexnet_stats")
    digest = hashlib.sha1(os.path.abspath(root).encode()).hexdigest()[:8]
    self.key = f"folder_{os.path.basename(os.path.normpath(root))}_{digest}"

  def split_names(self) -> list[str]:
    return list(self.files)

  def split_size(self, split: str) -> int:
    return len(self.files[split][0])

  def read(self, r: Range, *, shuffle_seed: int | None = None) -> tf.data.Dataset:
    if r.size == 0:
      return _empty()
    paths, labels = (a[r.start:r.end] for a in self.files[r.split])
    if shuffle_seed is not None:
      order = np.random.default_rng(shuffle_seed).permutation(len(paths))
      paths, labels = paths[order], labels[order]
    ds = tf.data.Dataset.from_tensor_slices((paths.astype(str), labels))
    return ds.map(lambda p, y: (tf.io.read_file(p), y), num_parallel_calls=tf.data.AUTOTUNE)


def _empty() -> tf.data.Dataset:
  return tf.data.Dataset.from_tensor_slices((tf.zeros([0], tf.string), tf.zeros([0], tf.int32)))


def open_source(config):
  d = config.data
  return _open(d.dataset, default_data_dir(config), d.manual_dir)


@contextlib.contextmanager
def file_lock(path: str, what: str):
  """An exclusive lock between processes (fcntl.flock on `path`, which is created).

  flock is per open file, so threads of one process that each open the file exclude each
  other too; on NFS, Linux maps it onto POSIX locks the server sees.
  """
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "a") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      logging.info("Waiting for another process %s (lock %s)", what, path)
      fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _lock_path(directory: str, name: str) -> str:
  return os.path.join(directory, f".alexnet-{name.replace('/', '_')}.lock")


@functools.lru_cache(maxsize=8)
def _open(name: str, data_dir: str, manual_dir: str | None):
  if name.startswith(FOLDER_PREFIX):
    return FolderSource(name, os.path.expanduser(name[len(FOLDER_PREFIX):]), data_dir)
  builder = _builder(name, data_dir)
  if not builder.is_prepared():
    # Runs started together would otherwise all prepare into the same directory, and all
    # but one fail renaming their result into place. The lock is only taken when preparing,
    # so prepared datasets in read-only directories open as before.
    with file_lock(_lock_path(data_dir, name), f"preparing {name} in {data_dir}"):
      # A fresh builder: one made before another process finished has no split metadata.
      builder = _builder(name, data_dir)
      if not builder.is_prepared():
        if name == "fashion_mnist_offline":
          _prepare_offline_fashion_mnist(builder, manual_dir or fashion_mnist_offline.DEFAULT_DIR)
        else:
          _prepare_catalog(name, builder, data_dir, manual_dir)
  return TfdsSource(name, builder, data_dir)


def _builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  if name == "fashion_mnist_offline":
    return fashion_mnist_offline.FashionMnistOffline(data_dir=data_dir)
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DatasetError(
        f"config.data.dataset={name!r} is not a TFDS dataset ({str(e).splitlines()[0]}). Use a TFDS "
        "name (imagenet2012, imagenette, imagenet_resized/64x64, cifar10, cifar100, fashion_mnist), "
        f"fashion_mnist_offline, or {FOLDER_PREFIX}/path/to/root.") from None


def _prepare_offline_fashion_mnist(builder, manual_dir: str) -> None:
  missing = fashion_mnist_offline.missing_files(manual_dir)
  if missing:
    raise DatasetError(
        f"config.data.dataset='fashion_mnist_offline' is not prepared in {builder.data_dir_root} "
        f"and its source files {missing} are missing from {manual_dir}: "
        f"{fashion_mnist_offline.HOW_TO_GET}.")
  logging.info("Preparing fashion_mnist_offline from %s into %s", manual_dir, builder.data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))


def _prepare_catalog(name, builder, data_dir, manual_dir) -> None:
  manual_dir = manual_dir or os.path.join(data_dir, "downloads", "manual")
  build_cmd = f"tfds build {name} --data_dir={data_dir}"
  if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
    build_cmd += f" --manual_dir={manual_dir}"
    required = IMAGENET_TARS if name.startswith("imagenet2012") else ()
    missing = [f for f in required if not os.path.exists(os.path.join(manual_dir, f))]
    if missing or not os.path.isdir(manual_dir) or not os.listdir(manual_dir):
      raise DatasetError(
          f"config.data.dataset={name!r} is not prepared in config.data.data_dir={data_dir} and "
          f"needs a manual download: put {', '.join(missing or ['its files'])} in {manual_dir} "
          "(or set config.data.manual_dir to where they are), then rerun, or prepare it once "
          f"with `{build_cmd}`. TFDS says: {builder.MANUAL_DOWNLOAD_INSTRUCTIONS.strip()}")
  logging.info("Preparing %s into %s (first use; may take long)", name, data_dir)
  try:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  except Exception as e:  # Network errors come in many types; all mean the same to the user.
    raise DatasetError(
        f"config.data.dataset={name!r} is not prepared in config.data.data_dir={data_dir} and "
        f"preparing it failed ({type(e).__name__}: {e}). Prepare it on a machine with internet "
        f"with `{build_cmd}` and copy {data_dir}/{name.split('/')[0]} here, or set "
        "config.data.data_dir to where it is prepared.") from e


@dataclasses.dataclass(frozen=True)
class Splits:
  train: Range
  val: Range | None
  test: Range | None


def resolve_splits(config, source) -> Splits:
  """Turns train_split/val_split/val_fraction/test_split into example ranges."""
  d = config.data

  def whole(field, split):
    try:
      return Range(split, 0, source.split_size(split))
    except KeyError:
      names = source.split_names()
      raise DatasetError(
          f"config.data.{field}={split!r} is not a split of {d.dataset!r}; "
          + (f"it has {names}." if names else "its metadata lists no splits and reading "
             "that one failed.")) from None

  train = whole("train_split", d.train_split)
  if d.val_fraction > 0:
    if not d.val_fraction < 1:
      raise DatasetError(f"config.data.val_fraction={d.val_fraction} must be in [0, 1).")
    n_val = int(round(train.size * d.val_fraction))
    val = Range(train.split, train.end - n_val, train.end)
    train = Range(train.split, 0, train.end - n_val)
  else:
    val = whole("val_split", d.val_split) if d.val_split else None
  test = whole("test_split", d.test_split) if d.test_split else None
  return Splits(train, val, test)
