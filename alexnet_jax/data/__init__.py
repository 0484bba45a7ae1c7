"""The input pipeline: TFDS datasets and image folders, the paper's augmentation, 10-crop eval.

    info = data.dataset_info(config)
    for batch in data.train_batches(config, start_step, process_index, process_count): ...
    for batch in data.eval_batches(config, "val" | "test", process_index, process_count): ...
"""

import tensorflow as tf

# TF only feeds the model; on a GPU machine it must leave the accelerators to JAX.
try:
  tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # TF already initialised its devices elsewhere; nothing left to do.
  pass

from alexnet_jax.data.pipeline import (DatasetInfo, dataset_info, eval_batches,  # noqa: E402
                                       steps_per_epoch, train_batches)
from alexnet_jax.data.sources import DatasetError  # noqa: E402

__all__ = ["DatasetInfo", "DatasetError", "dataset_info", "eval_batches", "steps_per_epoch",
           "train_batches"]
