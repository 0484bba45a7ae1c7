"""train_batches / eval_batches / stats on a tiny generated image folder (no network).

Channel 0 of every generated image is constant and equal to the image's id, so any crop,
flip or batch position still tells which example it came from (with normalize='none' and
no PCA noise); channels 1 and 2 are noise so that stats have something to measure.
"""

import os

import numpy as np
import pytest
from PIL import Image

from alexnet_jax import config as config_lib
from alexnet_jax import data
from alexnet_jax.data import sources
from alexnet_jax.data import stats as stats_lib

CLASSES = 3
PER_CLASS = {"train": 20, "test": 7}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("images")
  rng = np.random.default_rng(0)
  arrays = {}
  next_id = 1
  for split, n in PER_CLASS.items():
    for c in range(CLASSES):
      os.makedirs(root / split / f"class{c}")
      for i in range(n):
        image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        image[..., 0] = next_id
        path = str(root / split / f"class{c}" / f"{i}.png")
        Image.fromarray(image).save(path)
        arrays[path] = (image, c)
        next_id += 1
  return str(root), arrays


def make_config(folder, tmp_path, **data_fields):
  c = config_lib.base_config()
  d = c.data
  d.dataset = "folder:" + folder[0]
  d.data_dir = str(tmp_path / "tfds")
  d.train_split, d.test_split = "train", "test"
  d.val_fraction = 0.2
  d.image_size, d.crop_size = 32, 28
  d.normalize, d.pca_noise = "none", 0.0
  c.batch_size = 8
  c.eval_batch_size = 8
  for k, v in data_fields.items():
    d[k] = v
  return c


def ids(batch):
  return batch["image"][..., 0, 0, 0].round().astype(int) if batch["image"].ndim == 4 else \
      batch["image"][:, 0, 0, 0, 0].round().astype(int)


def test_dataset_info_and_val_carved_from_train(folder, tmp_path):
  c = make_config(folder, tmp_path)
  info = data.dataset_info(c)
  assert info == data.DatasetInfo(num_classes=3, num_train=48, num_val=12, num_test=21, channels=3)
  assert data.steps_per_epoch(c, info) == 6
  c.data.val_fraction = 0.0
  c.data.val_split = "test"
  assert data.dataset_info(c).num_val == 21


def test_range_shards_are_disjoint_and_cover():
  for n in (0, 1, 7, 100, 101):
    for count in (1, 2, 3, 8):
      r = sources.Range("train", 5, 5 + n)
      shards = [r.shard(i, count) for i in range(count)]
      covered = [j for s in shards for j in range(s.start, s.end)]
      assert covered == list(range(5, 5 + n))
      assert max(s.size for s in shards) == r.max_shard_size(count)


@pytest.mark.parametrize("cache", [False, True])
def test_train_shards_are_disjoint_and_batches_well_formed(folder, tmp_path, cache):
  c = make_config(folder, tmp_path, cache=cache)
  c.batch_size = 8
  seen = []
  for p in range(2):
    it = data.train_batches(c, process_index=p, process_count=2)
    epoch = [next(it) for _ in range(6)]
    b = epoch[0]
    assert b["image"].shape == (4, 28, 28, 3) and b["image"].dtype == np.float32
    assert b["label"].shape == (4,) and b["label"].dtype == np.int32
    got = np.concatenate([ids(b) for b in epoch])
    assert len(set(got)) == len(got) == 24  # each shard's 24 examples, once per epoch
    seen.append(set(got))
  assert not seen[0] & seen[1]
  _, arrays = folder
  train_ids = {int(a[0, 0, 0]) for a, _ in arrays.values() if a[0, 0, 0] <= CLASSES * 20}
  assert seen[0] | seen[1] <= train_ids


@pytest.mark.parametrize("cache", [False, True])
def test_resume_equals_uninterrupted(folder, tmp_path, cache):
  c = make_config(folder, tmp_path, cache=cache, pca_noise=0.1, normalize="channel")
  it = data.train_batches(c)
  full = [next(it) for _ in range(9)]  # crosses into epoch 2 (6 steps per epoch)
  assert not np.array_equal(ids(full[0]), ids(full[6]))  # epochs are shuffled differently
  for start in (2, 6, 7):
    resumed = data.train_batches(c, start_step=start)
    for want in full[start:start + 2]:
      got = next(resumed)
      for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_augmentation_differs_by_seed(folder, tmp_path):
  c = make_config(folder, tmp_path, cache=True)
  a = next(data.train_batches(c))
  c.seed = 1
  b = next(data.train_batches(c))
  assert not np.array_equal(a["image"], b["image"])


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("split,num", [("val", 12), ("test", 21)])
def test_eval_mask_counts_every_example_once(folder, tmp_path, count, split, num):
  c = make_config(folder, tmp_path)
  c.eval_batch_size = 6
  lengths, found = [], []
  for p in range(count):
    batches = list(data.eval_batches(c, split, process_index=p, process_count=count))
    lengths.append(len(batches))
    for b in batches:
      assert b["image"].shape == (6 // count, 28, 28, 3) and b["mask"].dtype == np.float32
      found += list(ids(b)[b["mask"] == 1])
      assert (ids(b)[b["mask"] == 0] == 0).all()
  assert len(set(lengths)) == 1  # every process steps the same number of times
  assert len(found) == len(set(found)) == num


def test_eval_ten_crops_and_labels(folder, tmp_path):
  c = make_config(folder, tmp_path, eval_crops="ten")
  root, arrays = folder
  by_id = {int(a[0, 0, 0]): (a, y) for a, y in arrays.values()}
  for b in data.eval_batches(c, "test"):
    assert b["image"].shape == (8, 10, 28, 28, 3)
    for x, y, m in zip(b["image"], b["label"], b["mask"]):
      if m:
        image, label = by_id[int(x[0, 0, 0, 0])]
        assert y == label
        np.testing.assert_array_equal(x[4], image[2:30, 2:30])  # view 4 is the centre
        np.testing.assert_array_equal(x[5], image[:28, :28][:, ::-1])


def test_stats_match_numpy_and_are_saved(folder, tmp_path):
  c = make_config(folder, tmp_path, normalize="mean_image")
  source = sources.open_source(c)
  splits = sources.resolve_splits(c, source)
  _, arrays = folder
  paths = source.files["train"][0][:splits.train.end]
  x = np.stack([arrays[p][0] for p in paths]).astype(np.float64)
  st = stats_lib.for_config(c, source, splits)
  assert os.path.exists(stats_lib.default_path(c, source, splits.train))
  np.testing.assert_allclose(st.mean_image, x.mean(0), rtol=1e-5)
  flat = x.reshape(-1, 3)
  np.testing.assert_allclose(st.channel_mean, flat.mean(0), rtol=1e-5)
  np.testing.assert_allclose(st.channel_std, flat.std(0), rtol=1e-4)
  cov = np.cov(flat.T, bias=True)
  np.testing.assert_allclose(st.pca_eigvecs @ np.diag(st.pca_eigvals) @ st.pca_eigvecs.T, cov,
                             rtol=1e-4, atol=1e-2)
  assert np.all(np.diff(st.pca_eigvals) <= 0)
  # Training with mean_image then removes the mean image of the crop window.
  batch = next(data.train_batches(c))
  assert abs(batch["image"].mean()) < 20


def test_stats_accumulator_batches_add_up():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (50, 4, 4, 3), dtype=np.uint8)
  acc = stats_lib.Accumulator()
  for i in range(0, 50, 7):
    acc.update(x[i:i + 7])
  st = acc.result("test")
  np.testing.assert_allclose(st.mean_image, x.mean(0), rtol=1e-5)
  path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"stats_{os.getpid()}.npz")
  st.save(path)
  loaded = stats_lib.Stats.load(path)
  os.remove(path)
  np.testing.assert_array_equal(loaded.pca_eigvecs, st.pca_eigvecs)
  assert loaded.num_examples == 50 and loaded.origin == "test"


def test_imagenet_defaults_are_variances_that_predict_imagenet_channel_stds():
  st = stats_lib.imagenet_defaults(256)
  assert st.mean_image.shape == (256, 256, 3)
  # Read as variances of [0, 1] pixels, fb.resnet's eigenvalues rebuild ImageNet's measured
  # per-channel stds (0.281/0.274/0.288 in [0, 1]); read as stds they would give ~0.125.
  cov = st.pca_eigvecs @ np.diag(st.pca_eigvals) @ st.pca_eigvecs.T / 255.0**2
  np.testing.assert_allclose(np.sqrt(np.diag(cov)), [0.281, 0.274, 0.288], atol=0.01)


@pytest.mark.parametrize("which", ["imagenet_defaults", "computed"])
def test_pca_noise_covariance_is_alpha_squared_lambda(folder, tmp_path, which):
  """The colour shift of the training pipeline, in the eigenbasis, has covariance sigma^2 diag(L)."""
  c = make_config(folder, tmp_path, pca_noise=0.1, cache=True, normalize="none", random_crop=False,
                  flip=False)
  source = sources.open_source(c)
  splits = sources.resolve_splits(c, source)
  if which == "computed":
    st = stats_lib.for_config(c, source, splits)
  else:
    st = stats_lib.imagenet_defaults(c.data.image_size)
  pre = data.pipeline.TrainPreprocess(c, st, 3)
  image = np.zeros((32, 32, 3), np.uint8)
  shifts = np.stack([pre((image, 0, True), np.random.default_rng(i))["image"][0, 0]
                     for i in range(20000)])
  coords = shifts @ st.pca_eigvecs  # shift along each p_i
  np.testing.assert_allclose(np.var(coords, axis=0), 0.01 * st.pca_eigvals, rtol=0.05)
  assert abs(np.corrcoef(coords.T)[0, 1]) < 0.05


def test_missing_folder_names_the_field(tmp_path):
  c = config_lib.base_config()
  c.data.dataset = f"folder:{tmp_path}/nope"
  with pytest.raises(data.DatasetError, match="config.data.dataset"):
    data.dataset_info(c)


def test_unknown_split_names_the_field(folder, tmp_path):
  c = make_config(folder, tmp_path, val_fraction=0.0, val_split="validation")
  with pytest.raises(data.DatasetError, match="config.data.val_split='validation'.*'test', 'train'"):
    data.dataset_info(c)


def test_imagenet_missing_says_how_to_prepare_it(tmp_path):
  pytest.importorskip("tensorflow_datasets")  # The catalogue is optional; the message is TFDS's path.
  c = config_lib.base_config()
  c.data.data_dir = str(tmp_path)
  with pytest.raises(data.DatasetError) as e:
    data.dataset_info(c)
  msg = str(e.value)
  assert "python -m alexnet_jax.data.prepare" in msg and "ILSVRC2012_img_train.tar" in msg
  assert os.path.join(str(tmp_path), "downloads", "manual") in msg


def test_fashion_mnist_files_missing_says_apt_get(tmp_path):
  c = config_lib.base_config()
  c.data.dataset = "fashion_mnist_offline"
  c.data.data_dir = str(tmp_path / "tfds")
  c.data.manual_dir = str(tmp_path / "empty")
  with pytest.raises(data.DatasetError, match="apt-get install dataset-fashion-mnist.*manual_dir"):
    data.dataset_info(c)


def _batches_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_iterator_state_resumes_at_the_same_batch(folder, tmp_path):
  c = make_config(folder, tmp_path, cache=True, pca_noise=0.1, normalize="channel")
  it = data.train_iterator(c)
  for _ in range(4):
    next(it)
  state = it.get_state()
  want = [next(it) for _ in range(4)]  # crosses into epoch 2
  again = data.train_iterator(c)
  again.set_state(state)
  for w in want:
    _batches_equal(next(again), w)
  # The same batches as the plain stream from step 4: the state is the position, nothing else.
  plain = data.train_batches(c, start_step=4)
  for w in want:
    _batches_equal(next(plain), w)


def test_batches_do_not_depend_on_worker_processes(folder, tmp_path):
  c = make_config(folder, tmp_path, cache=False, pca_noise=0.1, normalize="channel")
  in_process = data.train_iterator(c)
  want = [next(in_process) for _ in range(3)]
  c.data.workers = 2
  workers = data.train_iterator(c)
  for w in want:
    _batches_equal(next(workers), w)


def image_tree(root, splits, classes, per_class, image, ext="jpg", prefix="c"):
  """root/<split>/<prefix><class>/<i>.<ext> with `image(class, rng)` as each image."""
  rng = np.random.default_rng(0)
  for split in splits:
    for c in range(classes):
      os.makedirs(root / split / f"{prefix}{c}")
      for i in range(per_class):
        Image.fromarray(image(c, rng)).save(root / split / f"{prefix}{c}" / f"{i}.{ext}")
  return root


@pytest.fixture
def folder_with_bad_files(tmp_path):
  root = image_tree(tmp_path / "bad", ("train", "test"), 2, 6,
                    lambda c, rng: rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
  (root / "train" / "c0" / "0.jpg").write_bytes(b"")  # empty
  (root / "train" / "c1" / "1.jpg").write_bytes(b"not an image at all")
  good = (root / "test" / "c0" / "2.jpg").read_bytes()
  (root / "test" / "c0" / "2.jpg").write_bytes(good[:len(good) // 3])  # truncated
  os.makedirs(root / "test" / "c2")  # an empty class folder: a warning, not an error
  os.mkfifo(root / "train" / "c1" / "fifo.jpg")  # would block a reader forever
  return str(root)


def test_unreadable_images_are_skipped_counted_and_named(folder_with_bad_files, tmp_path, caplog):
  c = make_config((folder_with_bad_files, None), tmp_path, val_fraction=0.0, val_split="test",
                  cache=False)
  c.batch_size = 4
  before = len(data.BAD_IMAGES.paths)
  with caplog.at_level("WARNING"):
    batches = [next(data.train_batches(c, start_step=s)) for s in range(3)]
    evals = list(data.eval_batches(c, "test"))
  assert all(b["image"].shape == (4, 28, 28, 3) for b in batches)
  named = data.BAD_IMAGES.paths[before:]
  assert any("train/c0/0.jpg" in p for p in named) and any("train/c1/1.jpg" in p for p in named)
  assert any("test/c0/2.jpg" in p for p in named)
  # The truncated test image is masked out: 11 of 12 test images count.
  assert sum(float(b["mask"].sum()) for b in evals) == 11
  assert "c2" in caplog.text  # the empty class folder was reported
  assert "not regular files: fifo.jpg" in caplog.text


def test_stats_are_recomputed_when_images_change_and_a_damaged_file_is_named(tmp_path):
  root = tmp_path / "imgs"
  for split in ("train", "test"):
    os.makedirs(root / split / "a")
    for i in range(4):
      Image.fromarray(np.full((32, 32, 3), 99, np.uint8)).save(root / split / "a" / f"{i}.png")
  c = make_config((str(root), None), tmp_path, normalize="channel", val_fraction=0.0,
                  val_split="test")
  source = sources.open_source(c)
  splits = sources.resolve_splits(c, source)
  first = stats_lib.for_config(c, source, splits)
  np.testing.assert_allclose(first.channel_mean, 99)
  for i in range(4):  # the same names and count, new content
    Image.fromarray(np.full((32, 32, 3), 24, np.uint8)).save(root / "train" / "a" / f"{i}.png")
    os.utime(root / "train" / "a" / f"{i}.png", ns=(1, 10**18 + i))
  sources._open.cache_clear()  # pylint: disable=protected-access
  source = sources.open_source(c)
  second = stats_lib.for_config(c, source, splits)
  np.testing.assert_allclose(second.channel_mean, 24)
  assert second.path != first.path
  with open(second.path, "r+b") as f:
    f.truncate(40)
  with pytest.raises(data.DatasetError, match=os.path.basename(second.path) + ".*damaged"):
    stats_lib.for_config(c, source, splits)


def test_train_examples_is_a_fixed_prefix_and_val_is_unchanged(folder, tmp_path):
  c = make_config(folder, tmp_path)
  full = sources.resolve_splits(c, sources.open_source(c))
  c.data.train_examples = 16
  sub = sources.resolve_splits(c, sources.open_source(c))
  assert sub.train == sources.Range("train", 0, 16) and sub.val == full.val
  assert data.dataset_info(c).num_train == 16
  seen = {int(i) for s in range(2) for i in ids(next(data.train_batches(c, start_step=s)))}
  _, arrays = folder
  view = sources.SquareImages(sources.open_source(c), sub.train, 32, replace=False)
  assert seen == {int(view[i][0][0, 0, 0]) for i in range(16)}
  c.data.train_examples = 49
  with pytest.raises(data.DatasetError, match="train_examples=49 exceeds the 48"):
    data.dataset_info(c)


def test_prepared_shards_feed_the_same_examples_as_their_folder(tmp_path):
  """`prepare` output read as prepared:DIR gives the folder's images, resized once, by label."""
  from alexnet_jax.data import prepare
  # Class 0 dark, class 1 bright, with a little noise.
  root = image_tree(tmp_path / "src", ("train", "val"), 2, 5,
                    lambda c, rng: (40 + 150 * c + rng.integers(0, 10, (48, 64, 3))).astype(np.uint8),
                    ext="png", prefix="k")
  out = tmp_path / "prepared"
  prepare.prepare(str(root / "train"), str(out), "train", size=32, progress=False, workers=1)
  prepare.prepare(str(root / "val"), str(out), "val", size=32, progress=False, workers=1,
                  classes_from=str(out / "train"))
  c = make_config((str(out), None), tmp_path, val_fraction=0.0, val_split="val", test_split="val")
  c.data.dataset = f"prepared:{out}"
  info = data.dataset_info(c)
  assert info == data.DatasetInfo(num_classes=2, num_train=10, num_val=10, num_test=10, channels=3)
  c.batch_size = 10
  b = next(data.train_batches(c))
  # Class 0 is dark (~45), class 1 bright (~195): the label follows the image through the shards.
  means = b["image"].mean(axis=(1, 2, 3))
  assert ((means > 120) == (b["label"] == 1)).all()
  evals = list(data.eval_batches(c, "val"))
  assert sum(float(e["mask"].sum()) for e in evals) == 10
