r"""`paper_ablations` on Fashion-MNIST with the small AlexNet: the same switches, on a laptop CPU.

    python -m alexnet_jax.launch experiments/fmnist_paper_ablations.py:seeds=3,epochs=4,drops=3 \
        --workdir=runs/fmnist_ablations_e4 --parallel=2
    python -m alexnet_jax.report runs/fmnist_ablations_e4   # mean ± spread and paired p over seeds
    tensorboard --logdir runs/fmnist_ablations_e4

That sweep gave the first Fashion-MNIST results (27 runs, about 2 hours on a 2-core CPU: 4
epochs, the LR divided by 10 after epoch 3). They were removed from experiments/results when the
like-for-like study replaced them (experiments/fmnist_like_for_like.py; git show d2bfe8a:
experiments/results/README.md has them): their raw runs were never committed, and on the small
net 2x2 pooling and one tower are not like-for-like comparisons (see that file's docstring).
This file stays as the quick way to run every switch on the README's main-job net.

Reproduces the direction and rough size of the paper's ablation deltas (3.2 two towers
1.7/1.2, 3.3 LRN 1.4/1.2, 3.4 overlapping pools 0.4/0.3, 4.1 PCA colour noise >1 top-1,
7 middle layer ~2 top-1); the paper has no Fashion-MNIST numbers, so the report marks every
row as run on another dataset. Runs: full, no_lrn, pool_2x2, one_tower, no_pca, no_dropout,
no_aug, no_conv4, tanh; each tested on the center crop and on 10 crops.

Sweep arguments: seeds=N, epochs=N, drops=E[+E] (fixed LR drops instead of the plateau rule),
middle=3|4|3+4, runlocal (20 steps per run).
"""

from alexnet_jax import sweep


def get_sweep(arg=None):
  return sweep.ablation_sweep("configs/small_fashion_mnist.py", arg, "experiments/fmnist_paper_ablations.py")
