"""Fashion-MNIST as a TFDS dataset built from the Debian package `dataset-fashion-mnist`.

TFDS's own `fashion_mnist` downloads the gzipped IDX files and checks their checksums; the
Debian package ships the same images re-gzipped, so the checksums differ. This builder reads
the files from a local directory instead and yields features identical to `fashion_mnist`
(image 28x28x1 uint8, label ClassLabel(10)), so everything downstream treats both alike.
"""

from __future__ import annotations

import gzip
import os

import numpy as np
import tensorflow_datasets as tfds

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
  with gzip.open(path, "rb") as f:
    raw = f.read()
  ndim = raw[3]
  if raw[:2] != b"\0\0" or raw[2] != 0x08:
    raise ValueError(f"{path} is not an unsigned-byte IDX file")
  shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
  if data.size != int(np.prod(shape)):
    raise ValueError(f"{path} holds {data.size} bytes but its header promises {shape}")
  return data.reshape(shape)


class FashionMnistOffline(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST from local IDX files; registered in TFDS as `fashion_mnist_offline`."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Same examples as fashion_mnist 3.0.1, read from local files."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"The four gzipped IDX files of Fashion-MNIST: {HOW_TO_GET}."

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    # No checksums to look up, as nothing is downloaded; TFDS's lookup of this path also
    # needs importlib_resources, which not every install has.
    return None

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Fashion-MNIST (Xiao et al., 2017) read from the Debian package files.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(28, 28, 1)),
            "label": tfds.features.ClassLabel(names=LABELS),
        }),
        supervised_keys=("image", "label"),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
    )

  def _split_generators(self, dl_manager):
    directory = os.fspath(dl_manager.manual_dir)
    return {split: self._generate_examples(os.path.join(directory, images),
                                           os.path.join(directory, labels))
            for split, (images, labels) in FILES.items()}

  def _generate_examples(self, images_path, labels_path):
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if len(images) != len(labels):
      raise ValueError(f"{images_path} has {len(images)} images but {labels_path} "
                       f"{len(labels)} labels")
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": image[..., None], "label": int(label)}
