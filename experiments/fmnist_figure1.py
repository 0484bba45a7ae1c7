r"""The paper's Figure 1 as the paper ran it: a four-layer conv net, ReLU vs tanh, on Fashion-MNIST.

    python -m alexnet_jax.launch experiments/fmnist_figure1.py --workdir=runs/fmnist_figure1 --parallel=2
    python -m alexnet_jax.report runs/fmnist_figure1 --threshold=0.25 --export=experiments/results/fmnist_figure1 \
        --out=experiments/results/fmnist_figure1/report

Figure 1: "A four-layer convolutional neural network with ReLUs (solid line) reaches a 25%
training error rate on CIFAR-10 six times faster than an equivalent network with tanh neurons
(dashed line). The learning rates for each network were chosen independently to make training
as fast as possible. No regularization of any kind was employed."

Here, per that caption:
- four layers with weights: conv1 32x5x5, conv2 64x5x5, conv3 96x3x3 (each followed by 3/2
  max pooling: 28 -> 13 -> 6 -> 2) and the output layer (384 -> 10); one tower, no LRN, no
  hidden fc layer (the paper does not list its four layers; three convs and a classifier is
  our reading, the shape of cuda-convnet's CIFAR-10 nets of the time);
- no regularisation: no dropout, no weight decay, no crops, flips or colour noise;
- a constant learning rate per run, picked per activation in two stages so that the rate is
  not chosen on the seeds that measure it:
  1. the grid (`lrs`) on seed 0 only, for both activations;
  2. seeds 1 .. seeds-1 at each activation's fastest rate of stage 1 (`relu_lr`, `tanh_lr`).
  The report keeps, per activation, the rate that reached the threshold in the fewest epochs on
  the seeds every candidate rate has (seed 0 here) and gives the tanh/ReLU ratio of epochs per
  seed (geometric mean, 95% CI) over every seed of the two chosen rates. Without `relu_lr` and
  `tanh_lr` every seed runs at every rate (the full grid; dearer, same report);
- every bias starts at 0: the paper's bias of 1 (conv2, and the class layer here) is its
  ImageNet net's choice; in this net without LRN it made ReLU diverge at lr 0.01 by step 20.

Rates: this net's inputs are mean-subtracted 0..255 pixels (the paper's preprocessing), so its
rates are lower than the small AlexNet's. Pilots (seed 0, 100 steps, training error at step
100): ReLU 25% at lr 0.001, 30% at 0.005, NaN at 0.01 and 0.02; tanh 47% at 0.001, 32% at
0.005. The default grid spans both optima with a factor ~2 between rates; 0.04 and 0.08 were
added after stage 1 found tanh fastest at 0.02, the grid's top then (epochs to 25% on seed 0:
ReLU 0.195 at 0.001, 0.197 at 0.002; tanh 0.33 at 0.01, 0.31 at 0.02), and 0.00025 after
ReLU then came out fastest at 0.0005 (0.164), the bottom of that grid. A rate is
"the fastest" only where both its neighbours in the grid were run and were slower.

Both nets pass 25% training error within an epoch on Fashion-MNIST, so runs are one epoch and
the report interpolates the crossing between `train` rows, logged every 10 steps (0.02 epochs).
Runs are named `<act>_lr<rate>.s<seed>`. Budget: 18 grid runs (ReLU diverges within a few steps at 0.01 and above) + 8 seed runs of one epoch of
a net ~3x cheaper than the small AlexNet, ~1-2 min each on the 2-core CPU at --parallel=2.

    python -m alexnet_jax.launch experiments/fmnist_figure1.py --workdir=runs/fmnist_figure1 --parallel=2
    python -m alexnet_jax.report runs/fmnist_figure1 --no_plots    # read each activation's fastest rate
    python -m alexnet_jax.launch experiments/fmnist_figure1.py:relu_lr=R,tanh_lr=T --workdir=runs/fmnist_figure1 --parallel=2

Sweep arguments: seeds=N (5), epochs=N (1), lrs=R+R+... (0.00025+0.0005+...+0.04+0.08, factors of ~2),
relu_lr=R and tanh_lr=T (stage 2; 0 = every seed at every rate), runlocal.
"""

from alexnet_jax import sweep

CONFIG = "configs/small_fashion_mnist.py"
FOUR_LAYERS = {
    "model.towers": 1,
    "model.conv_features": (32, 64, 96, 96, 64),  # conv4 and conv5 are removed below.
    "model.conv_layers": (1, 2, 3),
    "model.cross_tower": (),
    "model.fc_features": (),
    "model.lrn": False,
    "model.bias_one": (),  # see the docstring
    "model.dropout": 0.0,
    "optim.weight_decay": 0.0,
    "optim.schedule": "constant",
    "log_every_steps": 10,
}


def get_sweep(arg=None):
  where = "experiments/fmnist_figure1.py"
  a = sweep.parse_arg(arg, {"seeds": 5, "epochs": 1, "lrs": "0.00025+0.0005+0.001+0.002+0.005+0.01+0.02+0.04+0.08",
                            "relu_lr": 0.0, "tanh_lr": 0.0, "runlocal": False}, where)
  try:
    lrs = [float(x) for x in a["lrs"].split("+") if x]
  except ValueError:
    raise sweep.SweepError(f"{where}: lrs={a['lrs']!r}: give learning rates joined by '+'.") from None
  if not lrs or any(lr <= 0 for lr in lrs):
    raise sweep.SweepError(f"{where}: lrs={a['lrs']!r}: give positive learning rates joined by '+'.")
  chosen = {act: a[f"{act}_lr"] for act in ("relu", "tanh")}
  if any(lr < 0 for lr in chosen.values()) or (0.0 in chosen.values() and any(chosen.values())):
    raise sweep.SweepError(f"{where}: relu_lr={chosen['relu']:g}, tanh_lr={chosen['tanh']:g}: give both "
                           "(each activation's fastest rate on seed 0) or neither.")
  # aug=0 turns off crops and flips, pca=0 the colour noise: "no regularization of any kind".
  common = sweep.join_variant("aug=0,pca=0", f"epochs={a['epochs']}", "runlocal" if a["runlocal"] else "")

  def rates(act, seed):
    return lrs if seed == 0 or not chosen[act] else [chosen[act]]

  # Seed-major (see fmnist_like_for_like): stage 1 is the seed-0 block.
  return [sweep.Run(sweep.seeded(f"{act}_lr{lr:g}", s, a["seeds"]),
                    f"{CONFIG}:{sweep.join_variant(f'act={act}', common, f'seed={s}')}",
                    {**FOUR_LAYERS, "optim.lr": lr})
          for s in range(a["seeds"]) for act in ("relu", "tanh") for lr in rates(act, s)]
