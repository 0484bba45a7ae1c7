"""The offline Fashion-MNIST builder on the real Debian package files."""

import collections
import hashlib
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from alexnet_jax.data import fashion_mnist_offline as fm

DIR = fm.DEFAULT_DIR

pytestmark = pytest.mark.skipif(
    bool(fm.missing_files(DIR)),
    reason=f"Fashion-MNIST files missing from {DIR} (apt-get install dataset-fashion-mnist)")


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
  b = fm.FashionMnistOffline(data_dir=str(tmp_path_factory.mktemp("tfds")))
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=DIR))
  return b


def _pairs(images, labels):
  return collections.Counter((hashlib.sha1(x.tobytes()).hexdigest(), int(y))
                             for x, y in zip(images, labels))


@pytest.mark.parametrize("split,n,prefix", [("train", 60000, "train"), ("test", 10000, "t10k")])
def test_examples_and_labels_match_the_idx_files(builder, split, n, prefix):
  assert builder.info.splits[split].num_examples == n
  ds = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
  assert ds["image"].shape == (n, 28, 28, 1) and ds["image"].dtype == np.uint8
  images = fm.read_idx(os.path.join(DIR, f"{prefix}-images-idx3-ubyte.gz"))
  labels = fm.read_idx(os.path.join(DIR, f"{prefix}-labels-idx1-ubyte.gz"))
  assert _pairs(ds["image"][..., 0], ds["label"]) == _pairs(images, labels)
  assert np.bincount(ds["label"]).tolist() == [n // 10] * 10


def test_features_match_tfds_fashion_mnist(builder):
  reference = tfds.builder("fashion_mnist", data_dir=builder.data_dir_root).info.features
  ours = builder.info.features
  assert ours["label"].names == reference["label"].names
  assert ours["image"].shape == reference["image"].shape
  assert ours["image"].dtype == reference["image"].dtype
