r"""`paper_ablations` on Fashion-MNIST with the small AlexNet: the same switches, on a laptop CPU.

    python -m alexnet_jax.launch experiments/fmnist_paper_ablations.py:seeds=2 \
        --workdir=runs/fmnist_paper_ablations --parallel=2
    python -m alexnet_jax.report runs/fmnist_paper_ablations   # mean ± spread over seeds
    tensorboard --logdir runs/fmnist_paper_ablations

Reproduces the direction and rough size of the paper's ablation deltas (3.2 two towers
1.7/1.2, 3.3 LRN 1.4/1.2, 3.4 overlapping pools 0.4/0.3, 4.1 PCA colour noise >1 top-1,
6 middle layer ~2 top-1); the paper has no Fashion-MNIST numbers, so the report marks every
row as run on another dataset. Runs: full, no_lrn, pool_2x2, one_tower, no_pca, no_dropout,
no_aug, no_conv4, tanh; each tested on the center crop and on 10 crops.

Sweep arguments: seeds=N, epochs=N, middle=3|4|3+4, runlocal (20 steps per run).
"""

from alexnet_jax import sweep


def get_sweep(arg=None):
  return sweep.ablation_sweep("configs/small_fashion_mnist.py", arg, "experiments/fmnist_paper_ablations.py")
