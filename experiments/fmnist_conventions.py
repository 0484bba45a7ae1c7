r"""The two readings of AlexNet on Fashion-MNIST: does the authors' code change the result?

    python -m alexnet_jax.launch experiments/fmnist_conventions.py:seeds=3,epochs=4 \
        --workdir=runs/fmnist_conventions --parallel=2
    python -m alexnet_jax.report runs/fmnist_conventions --baseline=paper

Two arms of the small net, each with `seeds` seeds:
- `paper` (`convention=paper`): the printed text. It differs from the project's default
  config only in dropout: outputs are multiplied by 0.5 at test time (section 4.2) instead of
  scaled by 2 while training.
- `cuda_convnet` (`convention=cuda-convnet`): what the authors' layer files ran, where it
  applies to the small net: LRN with alpha divided by the window size (2e-5 on the raw sum),
  conv1's ReLU after its LRN, test-time dropout scaling, biases at twice the weights' learning
  rate and undecayed. (The 224 crops and per-layer init stds belong to the paper-sized net
  only; see alexnet_jax/variants.py.)
The LR drops by 10 at three quarters of the run (the small config's fixed drop), so both arms
are compared annealed at the same point; validation uses the center crop, the final test the
center crop and 10 crops.

Sweep arguments: seeds=N (3), epochs=N (4), runlocal (a few steps per run).
"""

from alexnet_jax import sweep

WHERE = "experiments/fmnist_conventions.py"
ARMS = (("paper", "convention=paper"), ("cuda_convnet", "convention=cuda-convnet"))


def get_sweep(arg=None):
  a = sweep.parse_arg(arg, {"seeds": 3, "epochs": 4, "runlocal": False}, WHERE)
  common = sweep.join_variant("crops=ten", f"epochs={a['epochs']}",
                              "runlocal" if a["runlocal"] else "")
  # Validation on the center crop every epoch; the 10 crops only in the final test.
  return [sweep.Run(sweep.seeded(name, s, a["seeds"]),
                    f"configs/small_fashion_mnist.py:{sweep.join_variant(variant, common, f'seed={s}')}",
                    {"data.val_crops": "center"})
          for name, variant in ARMS for s in range(a["seeds"])]
