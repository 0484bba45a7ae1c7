r"""Training-set statistics for normalisation and PCA colour noise, and the command that makes them.

    python -m alexnet_jax.data.stats --config=configs/alexnet_imagenet.py [--out=stats.npz]

scans the training split (as the config defines it: val carved out, images resized to
data.image_size) in fixed-size batches, so memory stays bounded for any dataset size, and
writes the mean image, per-channel mean/std and the eigen-decomposition of the colour
covariance to config.data.stats_file, or by default to
<data_dir>/alexnet_stats/<dataset>-<split>-<start>-<end>-<size>px-<content fingerprint>.npz.
The fingerprint changes when the images do (same count or not), so a replaced dataset never
reuses stale statistics; the run logs which file it used.

Small datasets get their statistics computed automatically on first use. For imagenet2012
without a stats file the well-known values are used (below); the mean image is then the
per-channel mean everywhere, which is what ImageNet's mean image nearly is.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile

import grain
import numpy as np
from absl import logging

from alexnet_jax import files
from alexnet_jax.data import sources

# Whole-image sizes (examples x pixels x channels) up to which stats are computed unasked.
AUTO_COMPUTE_MAX_VALUES = 2_000_000_000

# ImageNet in 0..255: torchvision/fb.resnet channel mean and std, and fb.resnet's colour PCA
# ("Lighting"). fb.resnet's "eigval" (0.2175, 0.0188, 0.0045) are the eigenvalues, i.e. the
# variances, of the colour covariance of pixels in [0, 1]: with these eigenvectors they give
# per-channel stds of 0.284/0.276/0.290, as measured on ImageNet (0.281/0.274/0.288), while
# read as standard deviations they would give 0.125. So they are scaled by 255^2 (variances)
# here, the one place the defaults are stated; ops.pca_noise takes their square roots.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
IMAGENET_EIGVALS_UNIT = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVALS = tuple(v * 255.0 ** 2 for v in IMAGENET_EIGVALS_UNIT)
IMAGENET_EIGVECS = ((-0.5675, 0.7192, 0.4009),
                    (-0.5808, -0.0045, -0.8140),
                    (-0.5836, -0.6948, 0.4203))


_LOADED: dict = {}


@dataclasses.dataclass
class Stats:
  mean_image: np.ndarray  # (S, S, C) float32, at data.image_size
  channel_mean: np.ndarray  # (C,)
  channel_std: np.ndarray  # (C,)
  pca_eigvals: np.ndarray  # (C,) colour-covariance eigenvalues (variances), descending
  pca_eigvecs: np.ndarray  # (C, C), eigenvector i in column i
  num_examples: int
  origin: str  # where the numbers come from, for logs
  # The file they were read from or saved to; not stored in it.
  path: str = dataclasses.field(default="", compare=False)

  def save(self, path: str) -> None:
    """Atomic: concurrent processes may all compute and write; readers never see half a file."""
    with files.atomic_write(path, binary=True) as f:
      np.savez(f, **{k: v for k, v in dataclasses.asdict(self).items() if k != "path"})

  @classmethod
  def load(cls, path: str) -> "Stats":
    """The file's statistics; read once per version of the file (each evaluation asks)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_mtime_ns, st.st_size)
    if key not in _LOADED:
      _LOADED[key] = cls._read(path)
    return _LOADED[key]

  @classmethod
  def _read(cls, path: str) -> "Stats":
    try:
      with np.load(path) as z:
        kw = {f.name: z[f.name] for f in dataclasses.fields(cls) if f.name != "path"}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
      raise sources.DatasetError(
          f"The statistics file {path} is damaged or not a stats file ({type(e).__name__}: {e}); "
          "delete it to have it recomputed, or recompute it with `python -m alexnet_jax.data.stats "
          "--config=...`.") from None
    kw["num_examples"] = int(kw["num_examples"])
    kw["origin"] = str(kw["origin"])
    return cls(**kw, path=path)


class Accumulator:
  """Running sums in float64 over batches of uint8 (B, S, S, C) images."""

  def __init__(self):
    self.n = 0
    self.pixels = 0
    self.image_sum = None
    self.channel_sum = None
    self.outer_sum = None

  def update(self, images: np.ndarray) -> None:
    x = np.asarray(images, np.float64)
    if self.image_sum is None:
      c = x.shape[-1]
      self.image_sum = np.zeros(x.shape[1:])
      self.channel_sum = np.zeros(c)
      self.outer_sum = np.zeros((c, c))
    self.n += x.shape[0]
    self.image_sum += x.sum(0)
    flat = x.reshape(-1, x.shape[-1])
    self.pixels += flat.shape[0]
    self.channel_sum += flat.sum(0)
    self.outer_sum += flat.T @ flat

  def result(self, origin: str) -> Stats:
    if not self.n:
      raise ValueError("no images to compute statistics from")
    mean = self.channel_sum / self.pixels
    cov = self.outer_sum / self.pixels - np.outer(mean, mean)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1]
    return Stats(mean_image=(self.image_sum / self.n).astype(np.float32),
                 channel_mean=mean.astype(np.float32),
                 channel_std=np.sqrt(np.diag(cov)).astype(np.float32),
                 pca_eigvals=np.maximum(vals[order], 0).astype(np.float32),
                 pca_eigvecs=vecs[:, order].astype(np.float32),
                 num_examples=self.n, origin=origin)


def imagenet_defaults(image_size: int) -> Stats:
  mean = np.asarray(IMAGENET_MEAN, np.float32)
  return Stats(mean_image=np.broadcast_to(mean, (image_size, image_size, 3)).copy(),
               channel_mean=mean, channel_std=np.asarray(IMAGENET_STD, np.float32),
               pca_eigvals=np.asarray(IMAGENET_EIGVALS, np.float32),
               pca_eigvecs=np.asarray(IMAGENET_EIGVECS, np.float32),
               num_examples=0, origin="well-known ImageNet values (fb.resnet/torchvision)")


def default_path(config, source, train: sources.Range) -> str:
  return os.path.join(source.stats_dir, f"{source.key}-{train.split}-{train.start}-{train.end}-"
                      f"{config.data.image_size}px-{source.fingerprint(train.split)}.npz")


def compute(config, source=None, batch_size: int = 64, squares=None) -> Stats:
  """Streams the training range once; memory is one batch plus the (S, S, C) sums.

  `squares`: the range's records already in memory (a cache), to skip reading them again.
  """
  source = source or sources.open_source(config)
  train = sources.resolve_splits(config, source).train
  size = config.data.image_size
  if squares is None:
    squares = sources.SquareImages(source, train, size, replace=False)
  threads = max(1, config.data.threads)
  records = grain.MapDataset.source(squares).batch(batch_size).to_iter_dataset(
      grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads))
  acc = Accumulator()
  for images, _, ok in records:
    acc.update(images[ok])
  return acc.result(f"computed from {config.data.dataset} {train.split}[{train.start}:{train.end}] "
                    f"at {size}px")


def for_config(config, source, splits, train_squares=None) -> Stats:
  """The stats a run uses: its stats file, else computed (small data) or ImageNet defaults."""
  d = config.data
  path = d.stats_file or default_path(config, source, splits.train)
  if os.path.exists(path):
    stats = Stats.load(path)
  elif d.stats_file:
    raise sources.DatasetError(
        f"config.data.stats_file={d.stats_file!r} does not exist. Create it with `python -m "
        "alexnet_jax.data.stats --config=<your config>` or unset the field.")
  elif d.dataset.startswith("imagenet2012") or "imagenet" in d.dataset.lower():
    logging.warning("No stats file %s; using %s. Compute exact ones with `python -m "
                    "alexnet_jax.data.stats --config=...`.", path, "ImageNet defaults")
    stats = imagenet_defaults(d.image_size)
    path = "(built-in ImageNet defaults)"
  elif splits.train.size * d.image_size ** 2 * source.channels <= AUTO_COMPUTE_MAX_VALUES:
    # One process computes while runs started beside it wait and then load its file.
    with sources.file_lock(path + ".lock", f"computing {path}"):
      if os.path.exists(path):
        stats = Stats.load(path)
      else:
        logging.info("Computing training-set statistics into %s", path)
        stats = compute(config, source, squares=train_squares)
        stats.save(path)
  else:
    raise sources.DatasetError(
        f"config.data.normalize={d.normalize!r} / data.pca_noise={d.pca_noise} need training-set "
        f"statistics of {d.dataset!r}, and none are at {path}. Compute them once with "
        "`python -m alexnet_jax.data.stats --config=<your config>` (or set data.stats_file, or "
        "data.normalize='none' and data.pca_noise=0).")
  want = (d.image_size, d.image_size, source.channels)
  if stats.mean_image.shape != want:
    raise sources.DatasetError(
        f"The stats in {path} are for images of shape {stats.mean_image.shape}, but "
        f"config.data.image_size={d.image_size} with {source.channels} channels needs {want}; "
        "recompute them with `python -m alexnet_jax.data.stats --config=...`.")
  logging.info("Data statistics from %s: %s", path, stats.origin)
  stats.path = path
  return stats


def main(argv) -> None:
  del argv
  config = _CONFIG.value
  source = sources.open_source(config)
  path = _OUT.value or config.data.stats_file or default_path(
      config, source, sources.resolve_splits(config, source).train)
  stats = compute(config, source)
  stats.save(path)
  print(f"wrote {path}: {stats.origin}, {stats.num_examples} images\n"
        f"  channel mean {np.round(stats.channel_mean, 3)} std {np.round(stats.channel_std, 3)}\n"
        f"  PCA eigenvalues {np.round(stats.pca_eigvals, 3)}\n  eigenvectors (columns)\n"
        f"{np.round(stats.pca_eigvecs, 4)}")


if __name__ == "__main__":
  from absl import app, flags
  from ml_collections import config_flags

  _CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (as for training).")
  _OUT = flags.DEFINE_string("out", None, "Output .npz; default config.data.stats_file or "
                             "beside the prepared dataset.")
  flags.mark_flags_as_required(["config"])
  app.run(main)
