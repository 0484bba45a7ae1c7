"""Fashion-MNIST read straight from the Debian package `dataset-fashion-mnist` (no build step).

The package ships the four gzipped IDX files of the original release; they are small (30 MB
unpacked), so a split is read whole into memory. The examples are those of TFDS's
`fashion_mnist` (image 28x28x1 uint8, ten labels), in the files' own order.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
          "Bag", "Ankle boot")
HOW_TO_GET = (f"install them with `apt-get install dataset-fashion-mnist` (puts them in "
              f"{DEFAULT_DIR}), or set config.data.manual_dir to a directory holding "
              + ", ".join(f for pair in FILES.values() for f in pair))


def missing_files(directory: str) -> list[str]:
  return [f for pair in FILES.values() for f in pair
          if not os.path.exists(os.path.join(directory, f))]


def read_idx(path: str) -> np.ndarray:
  """Reads a gzipped IDX file (the MNIST format: magic, dims, big-endian sizes, raw bytes)."""
  try:
    with gzip.open(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError) as e:
    raise ValueError(f"{path} is not a readable gzipped IDX file ({e}); reinstall it with "
                     "`apt-get install --reinstall dataset-fashion-mnist`") from None
  if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
    raise ValueError(f"{path} is not an unsigned-byte IDX file")
  ndim = raw[3]
  if len(raw) < 4 + 4 * ndim:
    raise ValueError(f"{path} ends inside its IDX header")
  shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
  if data.size != int(np.prod(shape)):
    raise ValueError(f"{path} holds {data.size} bytes but its header promises {shape}")
  return data.reshape(shape)


def read_split(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 (N, 28, 28, 1) images, int32 (N,) labels) of 'train' or 'test'."""
  images_file, labels_file = FILES[split]
  images = read_idx(os.path.join(directory, images_file))
  labels = read_idx(os.path.join(directory, labels_file))
  if len(images) != len(labels):
    raise ValueError(f"{images_file} has {len(images)} images but {labels_file} "
                     f"{len(labels)} labels in {directory}")
  return images[..., None], labels.astype(np.int32)
