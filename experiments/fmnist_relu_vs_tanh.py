r"""Figure 1 on Fashion-MNIST with the small AlexNet: ReLU vs tanh training speed, on a CPU.

    python -m alexnet_jax.launch experiments/fmnist_relu_vs_tanh.py:seeds=2 \
        --workdir=runs/fmnist_relu_vs_tanh --parallel=2
    python -m alexnet_jax.report runs/fmnist_relu_vs_tanh --threshold=0.12

Paper: Figure 1, a four-layer CNN on CIFAR-10 reaches 25% training error ~6x faster with
ReLUs. Fashion-MNIST is easier: both nets pass 25% within the first epoch, so the report then
measures fractional epochs from the `train` rows (every log_every_steps) and says so; a lower
threshold (`--threshold=0.12`) gives a crossing several epochs in, closer to the paper's setup.
No regularisation, constant learning rate, as in the ImageNet sweep.

Sweep arguments: seeds=N, epochs=N, lr_relu=X, lr_tanh=X, runlocal.
"""

from alexnet_jax import sweep


def get_sweep(arg=None):
  return sweep.relu_tanh_sweep("configs/small_fashion_mnist.py", arg, "experiments/fmnist_relu_vs_tanh.py")
