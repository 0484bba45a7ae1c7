r"""The paper's Figure 1: epochs to reach 25% training error with ReLU vs tanh (paper: ~6x).

    python -m alexnet_jax.launch experiments/relu_vs_tanh.py --workdir=runs/relu_vs_tanh
    python -m alexnet_jax.report runs/relu_vs_tanh --threshold=0.25   # figure1.png + speed-up

The paper used a four-layer net on CIFAR-10; here it is the full AlexNet on ImageNet with,
as in the caption, no regularisation of any kind (no dropout, weight decay, crops, flips or
colour noise) and a constant learning rate. The speed-up is measured on `train_epoch` rows
(mean training error over each epoch), as the paper's per-epoch curve.

Sweep arguments: seeds=N (names `relu.s0`, `tanh.s0` ...), epochs=N (default 30: the 25%
crossing comes well before 90), lr_relu=X, lr_tanh=X (the paper tuned each net's rate
separately), runlocal.
"""

from alexnet_jax import sweep


def get_sweep(arg=None):
  return sweep.relu_tanh_sweep("configs/alexnet_imagenet.py", arg, "experiments/relu_vs_tanh.py", epochs=30)
