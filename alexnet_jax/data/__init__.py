"""The input pipeline on grain, without TensorFlow: datasets, the paper's augmentation, 10 crops.

    info = data.dataset_info(config)
    batches = data.train_iterator(config, process_index, process_count)  # checkpointable
    for batch in data.eval_batches(config, "val" | "test", process_index, process_count): ...
"""

from alexnet_jax.data.pipeline import (DatasetInfo, dataset_info, eval_batches, steps_per_epoch,
                                       train_batches, train_dataset, train_iterator)
from alexnet_jax.data.sources import BAD_IMAGES, DatasetError

__all__ = ["BAD_IMAGES", "DatasetInfo", "DatasetError", "dataset_info", "eval_batches",
           "steps_per_epoch", "train_batches", "train_dataset", "train_iterator"]
