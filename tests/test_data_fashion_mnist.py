"""Fashion-MNIST read from the real Debian package files."""

import gzip
import os

import numpy as np
import pytest

from alexnet_jax.data import fashion_mnist_offline as fm

DIR = fm.DEFAULT_DIR

pytestmark = pytest.mark.skipif(
    bool(fm.missing_files(DIR)),
    reason=f"Fashion-MNIST files missing from {DIR} (apt-get install dataset-fashion-mnist)")


@pytest.mark.parametrize("split,n,prefix", [("train", 60000, "train"), ("test", 10000, "t10k")])
def test_examples_and_labels_are_the_idx_payloads(split, n, prefix):
  images, labels = fm.read_split(DIR, split)
  assert images.shape == (n, 28, 28, 1) and images.dtype == np.uint8
  assert labels.shape == (n,) and labels.dtype == np.int32
  # The IDX headers are 16 bytes (images) and 8 bytes (labels); everything after is the data.
  with gzip.open(os.path.join(DIR, f"{prefix}-images-idx3-ubyte.gz")) as f:
    assert images.tobytes() == f.read()[16:]
  with gzip.open(os.path.join(DIR, f"{prefix}-labels-idx1-ubyte.gz")) as f:
    assert labels.astype(np.uint8).tobytes() == f.read()[8:]
  assert np.bincount(labels).tolist() == [n // 10] * 10


def test_a_damaged_file_is_named(tmp_path):
  for images, labels in fm.FILES.values():
    (tmp_path / images).write_bytes(gzip.compress(b"\0\0\x08\x03" + (5).to_bytes(4, "big") * 3))
    (tmp_path / labels).write_bytes(b"not gzip")
  with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz holds 0 bytes"):
    fm.read_split(str(tmp_path), "train")
