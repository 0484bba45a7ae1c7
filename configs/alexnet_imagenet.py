r"""The paper's ImageNet (ILSVRC-2012) setup: two-tower AlexNet, 90 epochs, batch 128.

Reproduces: Table 2, "1 CNN" row (40.7% top-1 / 18.2% top-5 on ILSVRC-2012 val, 10 crops).

    python -m alexnet_jax.main --config=configs/alexnet_imagenet.py --workdir=runs/alexnet

Ablations (section numbers of the paper) are config arguments, e.g.

    --config=configs/alexnet_imagenet.py:lrn=0            # 3.3, no LRN
    --config=configs/alexnet_imagenet.py:pool=2x2         # 3.4, non-overlapping pools
    --config=configs/alexnet_imagenet.py:towers=1         # 3.2, one tower, half the kernels
    --config=configs/alexnet_imagenet.py:pca=0,crops=ten  # 4.1, no colour noise

Two readings of the paper are presets: `convention=paper` (the printed text; it differs
from the default only in scaling dropout at test time) and `convention=cuda-convnet` (what
the authors' code ran: LRN alpha divided by the window size, ReLU of conv1 after its LRN,
224px crops with conv1's output rounded up to 55, biases at twice the weights' learning
rate, per-layer init stds). Each difference is a field; see config.CONVENTIONS.

    --config=configs/alexnet_imagenet.py:convention=cuda-convnet

`runlocal` shrinks the run to a few steps on a laptop (needs the dataset prepared).
"""

import os

from alexnet_jax import config as C


def get_config(arg=None):
  c = C.base_config()
  c.data.dataset = "imagenet2012"
  c.data.eval_crops = "ten"  # The paper's test-time procedure.
  # JPEG decoding and augmentation of ~2,000+ img/s want their own processes; the launcher's
  # cores minus the one that feeds the device.
  c.data.workers = max(1, (os.cpu_count() or 2) - 1)

  def runlocal(c):
    c.batch_size = 8
    c.eval_batch_size = 8
    c.max_steps = 5
    c.log_every_steps = 1

  C.apply_variant(c, arg, runlocal)
  return c
