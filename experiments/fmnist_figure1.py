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
- a constant learning rate per run, from a grid (`lrs`); the report keeps, for each
  activation, the rate that reached the threshold in the fewest epochs (mean over seeds), and
  gives the tanh/ReLU ratio of epochs per seed (geometric mean, 95% CI), with the grid;
- several seeds (`seeds`, default 5), since tanh nets at a poor rate can stall at chance.

Both nets pass 25% training error within an epoch or two on Fashion-MNIST, so the report
interpolates the crossing between `train` rows, logged every 10 steps here (0.02 epochs).
Runs are named `<act>_lr<rate>.s<seed>`. Budget: 2 activations x 4 rates x 5 seeds = 40 runs
of 3 epochs of a net ~3x cheaper than the small AlexNet: ~3 min each on the 2-core CPU.

Sweep arguments: seeds=N (5), epochs=N (3), lrs=R+R+... (0.005+0.01+0.02+0.04), runlocal.
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
    "model.dropout": 0.0,
    "optim.weight_decay": 0.0,
    "optim.schedule": "constant",
    "log_every_steps": 10,
}


def get_sweep(arg=None):
  where = "experiments/fmnist_figure1.py"
  a = sweep.parse_arg(arg, {"seeds": 5, "epochs": 3, "lrs": "0.005+0.01+0.02+0.04", "runlocal": False}, where)
  try:
    lrs = [float(x) for x in a["lrs"].split("+") if x]
  except ValueError:
    raise sweep.SweepError(f"{where}: lrs={a['lrs']!r}: give learning rates joined by '+'.") from None
  if not lrs or any(lr <= 0 for lr in lrs):
    raise sweep.SweepError(f"{where}: lrs={a['lrs']!r}: give positive learning rates joined by '+'.")
  # aug=0 turns off crops and flips, pca=0 the colour noise: "no regularization of any kind".
  common = sweep.join_variant("aug=0,pca=0", f"epochs={a['epochs']}", "runlocal" if a["runlocal"] else "")
  return [sweep.Run(sweep.seeded(f"{act}_lr{lr:g}", s, a["seeds"]),
                    f"{CONFIG}:{sweep.join_variant(f'act={act}', common, f'seed={s}')}",
                    {**FOUR_LAYERS, "optim.lr": lr})
          for s in range(a["seeds"]) for act in ("relu", "tanh") for lr in lrs]  # seed-major: see fmnist_like_for_like
