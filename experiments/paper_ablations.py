r"""The paper's design decisions, one at a time, on ImageNet (ILSVRC-2012) with the paper's net.

    python -m alexnet_jax.launch experiments/paper_ablations.py --workdir=runs/paper_ablations
    python -m alexnet_jax.report runs/paper_ablations          # tables + curves in runs/paper_ablations/report/
    tensorboard --logdir runs/paper_ablations                  # every run's tb/ side by side

Runs (each tested on the center crop and on 10 crops, so "center vs 10 crops" is in every row):

| run        | switch                            | paper (Krizhevsky et al. 2012)                   |
|------------|-----------------------------------|--------------------------------------------------|
| full       | -                                 | Table 2 "1 CNN": 40.7 top-1 / 18.2 top-5 (val)   |
| no_lrn     | lrn=0                             | 3.3: LRN lowers top-1/top-5 by 1.4 / 1.2         |
| pool_2x2   | pool=2x2 (z=2, s=2)               | 3.4: overlap lowers top-1/top-5 by 0.4 / 0.3     |
| one_tower  | towers=1, half the kernels        | 3.2: two GPUs lower top-1/top-5 by 1.7 / 1.2     |
| no_pca     | pca=0                             | 4.1: PCA colour noise lowers top-1 by over 1     |
| no_dropout | dropout=0                         | 4.2: substantial overfitting without it          |
| no_aug     | aug=0 (no random crops, flips)    | 4.1: substantial overfitting without it          |
| no_conv4   | drop_conv=4                       | 7: removing a middle layer costs ~2 top-1        |
| tanh       | act=tanh                          | 3.1 / Figure 1: ReLU trains ~6x faster           |

Sweep arguments (after `:`): seeds=N (names become `no_lrn.s0` ...), epochs=N, middle=3|4|3+4,
runlocal. E.g. `experiments/paper_ablations.py:seeds=2,middle=3+4`.
"""

from alexnet_jax import sweep


def get_sweep(arg=None):
  return sweep.ablation_sweep("configs/alexnet_imagenet.py", arg, "experiments/paper_ablations.py")
