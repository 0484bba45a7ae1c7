"""The real training loop on a catalog dataset faked by `tfds.testing.mock_data`.

Under mock_data (policy USE_CODE) the builder has no split metadata and `tfds.data_source`
serves random examples; the pipeline must still size the splits (by their length), read
exactly its ranges and keep its files in the configured data_dir. tensorflow-datasets is an
optional extra (the catalogue); CI installs it so this path stays tested.
"""

import json
import math
import os

import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from alexnet_jax import config as config_lib
from alexnet_jax import data, train
from alexnet_jax.data import sources
from alexnet_jax.metrics import read_metrics

NUM_EXAMPLES = 20


def mock_cifar10_config(data_dir, *, cache):
  c = config_lib.base_config()
  config_lib.small_model(c, num_classes=10, crop=28)
  c.model.conv_features = (8, 16, 16, 16, 16)
  c.model.fc_features = (32, 32)
  d = c.data
  d.dataset = "cifar10"
  d.data_dir = str(data_dir)
  d.val_split = "test"
  d.test_split = "test"
  d.image_size = 32
  d.crop_size = 28
  d.cache = cache
  d.eval_crops = "ten"  # The final test then runs both the center crop and the ten crops.
  c.batch_size = 4
  c.eval_batch_size = 6  # Does not divide 20: the last eval batch is padded and masked.
  c.num_epochs = 1
  c.log_every_steps = 2
  c.checkpoint_every_steps = 1000
  return c


@pytest.mark.parametrize("cache", [False, True])
def test_train_and_evaluate_under_mock_data(tmp_path, cache):
  config = mock_cifar10_config(tmp_path / "data", cache=cache)
  workdir = str(tmp_path / "run")
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    info = data.dataset_info(config)
    assert (info.num_train, info.num_val, info.num_test) == (NUM_EXAMPLES,) * 3
    assert (info.num_classes, info.channels) == (10, 3)
    final = train.train_and_evaluate(config, workdir)

  spe = NUM_EXAMPLES // config.batch_size
  assert final["step"] == spe
  for crops in ("center", "ten"):
    result = final["test"][crops]
    assert all(math.isfinite(v) for v in result.values()), result
    assert 0.0 <= result["top5_err"] <= result["top1_err"] <= 1.0
  with open(os.path.join(workdir, "final.json")) as f:
    assert json.load(f)["step"] == spe
  records = read_metrics(workdir)
  assert [r["step"] for r in records if r["kind"] == "val"] == [spe]
  # The default mean-image normalisation computed stats beside the configured data, not
  # under the fake directory mock_data gives the builder.
  stats_dir = tmp_path / "data" / "alexnet_stats"
  assert len(list(stats_dir.glob("cifar10*.npz"))) == 1


def test_slices_are_honoured_even_if_the_builder_ignores_them(tmp_path):
  config = mock_cifar10_config(tmp_path / "data", cache=False)
  config.data.val_split = None
  config.data.val_fraction = 0.25
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    source = sources.open_source(config)
    splits = sources.resolve_splits(config, source)
    assert (splits.train.size, splits.val.size) == (15, 5)
    view = sources.SquareImages(source, splits.val, 32, replace=False)
    assert len(view) == 5 and all(ok for _, _, ok in (view[i] for i in range(5)))
    batches = list(data.eval_batches(config, "val"))
  assert sum(float(b["mask"].sum()) for b in batches) == 5

