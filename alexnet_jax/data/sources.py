"""Where examples come from: offline Fashion-MNIST, image folders, prepared shards, TFDS.

Every source gives random access to `(uint8 square image, label)` pairs of an index range of one
split, so that carving validation out of train, per-process shards, resuming and grain's
random-access reads all reduce to index arithmetic on `Range`s and work alike for every kind of
dataset. None of them needs TensorFlow: TFDS datasets are read through `tfds.data_source`
(the array_record format), which decodes without it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import os
import threading

import numpy as np
from absl import logging

from alexnet_jax import config as config_lib
from alexnet_jax.data import decode as decode_lib
from alexnet_jax.data import fashion_mnist_offline

FOLDER_PREFIX = "folder:"
PREPARED_PREFIX = "prepared:"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


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


class Source:
  """What every source provides; subclasses fill in the fields and `_square`/`_label`."""
  name: str
  num_classes: int
  channels: int
  key: str  # names this dataset in cache file names
  stats_dir: str

  def split_names(self) -> list[str]:
    raise NotImplementedError

  def split_size(self, split: str) -> int:
    """Raises KeyError for a split the dataset does not have."""
    raise NotImplementedError

  def example(self, split: str, index: int, size: int) -> tuple[np.ndarray, int]:
    """(uint8 (size, size, C) image, label): shorter side resized to `size`, centre square.

    Raises decode.ImageError (naming the file) for an image that cannot be read.
    """
    raise NotImplementedError

  def fingerprint(self, split: str) -> str:
    """Changes whenever the split's content does: keys caches such as data statistics."""
    raise NotImplementedError


class ArraySource(Source):
  """Splits held as uint8 arrays in memory (Fashion-MNIST; caches of other sources)."""

  def __init__(self, name, splits: dict[str, tuple[np.ndarray, np.ndarray]], num_classes: int,
               stats_dir: str, key: str):
    self.name, self.key, self.stats_dir = name, key, stats_dir
    self.splits = splits
    self.num_classes = num_classes
    self.channels = next(iter(splits.values()))[0].shape[-1]

  def split_names(self):
    return list(self.splits)

  def split_size(self, split):
    return len(self.splits[split][1])

  def example(self, split, index, size):
    images, labels = self.splits[split]
    image = images[index]
    if image.shape[:2] != (size, size):
      image = decode_lib.resize_small(image, size)
    return image, int(labels[index])

  def fingerprint(self, split):
    images, labels = self.splits[split]
    h = hashlib.sha256(images.tobytes())
    h.update(labels.tobytes())
    return h.hexdigest()[:16]


def fashion_mnist(manual_dir: str | None, data_dir: str) -> ArraySource:
  directory = manual_dir or fashion_mnist_offline.DEFAULT_DIR
  missing = fashion_mnist_offline.missing_files(directory)
  if missing:
    raise DatasetError(
        f"config.data.dataset='fashion_mnist_offline' needs {missing} in {directory}: "
        f"{fashion_mnist_offline.HOW_TO_GET}.")
  try:
    splits = {s: fashion_mnist_offline.read_split(directory, s) for s in ("train", "test")}
  except ValueError as e:
    raise DatasetError(f"config.data.dataset='fashion_mnist_offline': {e}.") from None
  return ArraySource("fashion_mnist_offline", splits, 10,
                     os.path.join(data_dir, "alexnet_stats"), "fashion_mnist_offline")


class FolderSource(Source):
  """Images laid out `root/split/class/*.jpg` (the TFDS ImageFolder layout).

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
        if not os.path.isdir(d):
          continue
        # scandir's file type comes from the directory listing itself (no stat per file): a
        # FIFO or socket named like an image would block or fail the reader, so it is left out.
        names, odd = [], []
        with os.scandir(d) as entries:
          for e in entries:
            if e.name.lower().endswith(IMAGE_EXTENSIONS):
              (names if e.is_file() else odd).append(e.name)
        names.sort()
        if odd:
          logging.warning("%s: skipping %d entries that are not regular files: %s", d, len(odd),
                          ", ".join(sorted(odd)[:5]) + (" ..." if len(odd) > 5 else ""))
        if not names:
          logging.warning("%s has no images (%s); class %r has no %s examples", d,
                          ", ".join(IMAGE_EXTENSIONS), c, split)
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
    self._fingerprints: dict[str, str] = {}

  def split_names(self):
    return list(self.files)

  def split_size(self, split):
    return len(self.files[split][0])

  def example(self, split, index, size):
    paths, labels = self.files[split]
    path = paths[index]
    try:
      with open(path, "rb") as f:
        data = f.read()
    except OSError as e:
      raise decode_lib.ImageError(f"cannot read {path}: {e.strerror}") from None
    return decode_lib.decode_square(data, self.channels, size, path=path), int(labels[index])

  def fingerprint(self, split):
    # Names, sizes and modification times: replacing images (even keeping their count and
    # names) changes it, without reading every byte of a large tree. Once per opened source
    # (a snapshot of the listing, like self.files): every evaluation asks for it again, and
    # a large tree would otherwise be stat'ed file by file each time.
    if split not in self._fingerprints:
      self._fingerprints[split] = self._fingerprint(split)
    return self._fingerprints[split]

  def _fingerprint(self, split):
    h = hashlib.sha256()
    paths, labels = self.files[split]
    for p, y in zip(paths, labels):
      try:
        st = os.stat(p)
        h.update(f"{p}\0{y}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
      except OSError:
        h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()[:16]


class PreparedSource(Source):
  """Splits written by `python -m alexnet_jax.data.prepare`: ROOT/<split>/ ArrayRecord shards of
  JPEGs with a 256px shorter side, each split with its manifest (classes, counts, checksums)."""

  def __init__(self, name: str, root: str, data_dir: str):
    from alexnet_jax.data import prepared as prepare  # noqa: PLC0415  (array_record loads only here)
    self.name, self.root = name, os.path.abspath(root)
    if not os.path.isdir(self.root):
      raise DatasetError(
          f"config.data.dataset={name!r}: {self.root} is not a directory. Make it with `python -m "
          "alexnet_jax.data.prepare --src=... --out=DIR --split=train` and set "
          f"config.data.dataset='{PREPARED_PREFIX}DIR'.")
    self._splits = {}
    for split in sorted(os.listdir(self.root)):
      if os.path.exists(os.path.join(self.root, split, prepare.MANIFEST)):
        try:
          self._splits[split] = prepare.ArrayRecordImages(self.root, split)
        except prepare.PrepareError as e:
          raise DatasetError(f"config.data.dataset={name!r}: {e}") from None
    if not self._splits:
      raise DatasetError(
          f"config.data.dataset={name!r}: no prepared split (<split>/{prepare.MANIFEST}) in "
          f"{self.root}; an unfinished `prepare` finishes when rerun with the same arguments.")
    classes = {tuple(s.classes) for s in self._splits.values()}
    if len(classes) > 1:
      raise DatasetError(
          f"config.data.dataset={name!r}: the splits in {self.root} list different classes; "
          "prepare the other splits with --classes_from=<the train split> so labels agree.")
    self.num_classes = len(classes.pop())
    self.channels = 3
    self.stats_dir = os.path.join(data_dir, "alexnet_stats")
    digest = hashlib.sha1(self.root.encode()).hexdigest()[:8]
    self.key = f"prepared_{os.path.basename(self.root)}_{digest}"

  def split_names(self):
    return list(self._splits)

  def split_size(self, split):
    return len(self._splits[split])

  def example(self, split, index, size):
    images = self._splits[split]
    jpeg, label, name = images.record(index)
    where = f"{self.root}/{split} record {index} ({name})"
    return decode_lib.decode_square(jpeg, self.channels, size, path=where), int(label)

  def fingerprint(self, split):
    h = hashlib.sha256()
    for shard in self._splits[split].manifest["shards"]:
      h.update(f"{shard['file']}:{shard['sha256']}\n".encode())
    return h.hexdigest()[:16]


class TfdsSource(Source):
  """A TFDS dataset prepared in the array_record format, read through `tfds.data_source`."""

  def __init__(self, name: str, data_dir: str):
    import tensorflow_datasets as tfds  # noqa: PLC0415  (only for TFDS names)
    self.name = name
    try:
      self.builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
      raise DatasetError(
          f"config.data.dataset={name!r} is not a TFDS dataset ({str(e).splitlines()[0]}). Use "
          f"fashion_mnist_offline, {FOLDER_PREFIX}/path/to/root, {PREPARED_PREFIX}/path/to/shards "
          "(made by `python -m alexnet_jax.data.prepare`), or a TFDS name prepared with "
          "--file_format=array_record.") from None
    self.image_key, self.label_key = self.builder.info.supervised_keys or ("image", "label")
    features = self.builder.info.features
    self.num_classes = int(features[self.label_key].num_classes)
    self.channels = int(features[self.image_key].shape[-1] or 3)
    self.stats_dir = os.path.join(data_dir, "alexnet_stats")
    self.key = self.builder.info.full_name.replace("/", "_")
    self._data_dir = data_dir
    self._sources: dict = {}

  def __getstate__(self):
    # Worker processes reopen the files; builders and open readers do not pickle.
    return {"name": self.name, "data_dir": self._data_dir}

  def __setstate__(self, state):
    self.__init__(state["name"], state["data_dir"])

  def split_names(self):
    return list(self.builder.info.splits.keys())

  def _source(self, split):
    if split not in self._sources:
      import tensorflow_datasets as tfds  # noqa: PLC0415
      self._sources[split] = tfds.data_source(self.name, split=split, data_dir=self._data_dir,
                                              download=False)
    return self._sources[split]

  def split_size(self, split):
    known = self.builder.info.splits
    if split in known:
      return int(known[split].num_examples)
    if known:
      raise KeyError(split)
    try:  # Datasets without split metadata (tfds.testing.mock_data) still have a length.
      return len(self._source(split))
    except Exception:  # pylint: disable=broad-except
      raise KeyError(split) from None

  def example(self, split, index, size):
    ex = self._source(split)[index]
    image = np.asarray(ex[self.image_key])
    if image.ndim == 2:
      image = image[..., None]
    if image.shape[-1] != self.channels:
      image = np.broadcast_to(image, image.shape[:2] + (self.channels,))
    return decode_lib.resize_small(image, size), int(ex[self.label_key])

  def fingerprint(self, split):
    return hashlib.sha256(f"{self.builder.info.full_name}:{split}:"
                          f"{self.split_size(split)}".encode()).hexdigest()[:16]


def open_source(config) -> Source:
  d = config.data
  return _open(d.dataset, default_data_dir(config), d.manual_dir)


@functools.lru_cache(maxsize=8)
def _open(name: str, data_dir: str, manual_dir: str | None) -> Source:
  if name.startswith(FOLDER_PREFIX):
    return FolderSource(name, os.path.expanduser(name[len(FOLDER_PREFIX):]), data_dir)
  if name.startswith(PREPARED_PREFIX):
    return PreparedSource(name, os.path.expanduser(name[len(PREPARED_PREFIX):]), data_dir)
  if name == "fashion_mnist_offline":
    return fashion_mnist(manual_dir, data_dir)
  try:
    import tensorflow_datasets  # noqa: F401,PLC0415
  except ImportError:
    raise DatasetError(
        f"config.data.dataset={name!r} is a TFDS name, and tensorflow-datasets is not installed. "
        f"Install it (`pip install -e '.[tfds]'`), or use fashion_mnist_offline, "
        f"{FOLDER_PREFIX}/path/to/root or {PREPARED_PREFIX}/path/to/shards.") from None
  source = TfdsSource(name, data_dir)
  if not _tfds_prepared(source):
    raise DatasetError(_unprepared_message(name, data_dir, manual_dir))
  return source


def _tfds_prepared(source: TfdsSource) -> bool:
  b = source.builder
  if b.is_prepared():
    fmt = getattr(b.info, "file_format", None)
    return fmt is None or "array_record" in str(fmt).lower()
  # Builders without metadata (tfds.testing.mock_data) may still serve a data source.
  try:
    return len(source._source("train")) > 0  # pylint: disable=protected-access
  except Exception:  # pylint: disable=broad-except  (any failure means: not readable)
    return False


def _unprepared_message(name: str, data_dir: str, manual_dir: str | None) -> str:
  manual = manual_dir or os.path.join(data_dir, "downloads", "manual")
  if name.startswith("imagenet2012"):
    return (
        f"config.data.dataset={name!r} is not prepared in config.data.data_dir={data_dir}. "
        "Convert the ILSVRC-2012 tars once, without TensorFlow: `python -m alexnet_jax.data.prepare "
        "--src=ILSVRC2012_img_train.tar --split=train --out=DIR` (and the val tar), then set "
        f"config.data.dataset='{PREPARED_PREFIX}DIR'. Or, with TensorFlow installed, put "
        f"ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in {manual} and run "
        f"`tfds build {name} --data_dir={data_dir} --manual_dir={manual} --file_format=array_record`.")
  return (f"config.data.dataset={name!r} is not prepared in the array_record format in "
          f"config.data.data_dir={data_dir}. Build it once where TensorFlow is installed with "
          f"`tfds build {name} --data_dir={data_dir} --file_format=array_record` (copy the folder "
          "here if that machine is another), or set config.data.data_dir to where it is.")


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
  if d.train_examples:
    if d.train_examples > train.size:
      raise DatasetError(f"config.data.train_examples={d.train_examples} exceeds the {train.size} "
                         f"training examples of {d.dataset!r}; use at most {train.size} (0: all).")
    train = Range(train.split, train.start, train.start + d.train_examples)
  test = whole("test_split", d.test_split) if d.test_split else None
  return Splits(train, val, test)


class BadImages:
  """Images that failed to decode, each logged once per process, with a running count."""

  def __init__(self):
    self._lock = threading.Lock()
    self.paths: list[str] = []

  def note(self, error: Exception) -> None:
    with self._lock:
      text = str(error)
      if text not in self.paths:
        self.paths.append(text)
        logging.warning("Skipping an unreadable image (%d so far): %s", len(self.paths), text)


BAD_IMAGES = BadImages()


class SquareImages:
  """Random access to one range's `(uint8 image, label, ok)` at a fixed size: what grain reads.

  An image that cannot be decoded is logged once and, for training (`replace=True`), replaced
  by the next readable one of the range, so a batch keeps its size and a rerun meets the same
  replacement at the same step instead of crashing there again; for evaluation it becomes a
  blank, masked-out example (`ok=False`), so it counts nowhere.
  """

  def __init__(self, source: Source, r: Range, size: int, *, replace: bool):
    self.source, self.range, self.size, self.replace = source, r, size, replace

  def __len__(self) -> int:
    return self.range.size

  def __getitem__(self, i: int):
    r = self.range
    for k in range(r.size if self.replace else 1):
      j = r.start + (int(i) + k) % r.size
      try:
        image, label = self.source.example(r.split, j, self.size)
        return image, np.int32(label), True
      except decode_lib.ImageError as e:
        BAD_IMAGES.note(e)
    if self.replace:
      raise DatasetError(f"no image of {self.source.name} {r.split}[{r.start}:{r.end}] can be "
                         "decoded; see the warnings above for the files.")
    blank = np.zeros((self.size, self.size, self.source.channels), np.uint8)
    return blank, np.int32(0), False
