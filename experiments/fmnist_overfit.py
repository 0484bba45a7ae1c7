r"""Issue 18: the paper's ablations on Fashion-MNIST in the paper's regime (nets that converge and overfit).

Written before the runs; the numbers that fixed each choice are filled in from the stages below.

Stages (`stage=`), each a separate launch into its own workdir; every run is seed-suffixed so
`--only` picks blocks:

1. `pilot`: where the nets overfit. `full`, `no_dropout` and `no_aug` at 1,000, 2,000 and 5,000
   training images, each for about 700-780 steps (100, 50 and 20 epochs), LR divided by 10 at
   50% and 75% of the run, on seed 100 (a seed the comparison does not use).

       python -m alexnet_jax.launch experiments/fmnist_overfit.py:stage=pilot --workdir=runs/overfit_pilot --parallel=2

2. `lrgrid`: a learning rate for each arm, chosen for it by one procedure: every arm at
   ×½, ×1 and ×2 the base rate (`lr`), seed 100, the chosen subset; the arm's rate is the one
   with the lowest final validation error (center crop). The comparison never uses seed 100.

       python -m alexnet_jax.launch experiments/fmnist_overfit.py:stage=lrgrid --workdir=runs/overfit_lrgrid --parallel=2

3. `study` (default): every arm at its own rate (`ARM_LR` below), seeds 0..seeds-1, run in seed
   blocks that export into one results folder:

       python -m alexnet_jax.launch experiments/fmnist_overfit.py --workdir=runs/overfit --parallel=2 --only='*.s[0-1]'
       python -m alexnet_jax.report runs/overfit --export=experiments/results/fmnist_overfit

The regime criterion, fixed before the study (checked on the pilots and again on the study):
- `full` has converged: its validation error over the last LR stage (the last quarter of the
  run) moves by less than 1 point between its first and last evaluation;
- the nets overfit: `full`'s training error in eval mode (`train_eval` rows: center crop, no
  dropout) is far below its validation error (gap >= 3 points), and the test-train gaps of
  `no_dropout` and `no_aug` are clearly larger than `full`'s.

Arms (the like-for-like geometry of `fmnist_like_for_like.py`: 23 px crops of 26 px images, so
3/2 and 2/2 pooling give the same maps, and fc 1792 holds 96% of the parameters as in the
paper; tests/test_experiments.py checks it):

| arm          | switch                                  | paper claim (section)        | endpoint |
|--------------|-----------------------------------------|------------------------------|----------|
| `full`       | -                                       | baseline                     | - |
| `no_lrn`     | `lrn=0`                                 | LRN: +1.4 top-1 (3.3)        | 10-crop test error |
| `lrn_const`  | `model.lrn_alpha=0`: LRN becomes the constant rescale k^-β, no normalisation | LRN's normalisation (3.3) | 10-crop test error |
| `pool_2x2`   | `pool=2x2`                              | overlap: +0.4 (3.4)          | 10-crop test error |
| `one_tower`  | `towers=1`                              | two towers: +1.7 (3.2)       | 10-crop test error |
| `no_conv4`   | `drop_conv=4`                           | a middle layer: ~+2 (7)      | 10-crop test error |
| `no_dropout` | `dropout=0`                             | dropout vs overfitting (4.2) | test - train gap (10-crop test, eval-mode train) |
| `no_aug`     | `aug=0`                                 | augmentation vs overfitting (4.1) | test - train gap |
| (none)       | `pca=0`                                 | PCA noise (4.1)              | not testable: on grey images the PCA noise is a brightness shift |
| `full`       | center crop vs 10 crops                 | 10-crop test (4.1)           | test error, center - ten |

Why `lrn_const`: at init on Fashion-MNIST the window sum α·Σa² averages ~0.025 against k = 2,
so LRN is mostly the fixed factor (k + ~0)^-0.75 ≈ 0.59 on conv1/2; `no_lrn` then measures a
rescale (an LR change for conv1/2) as much as the normalisation. `lrn_const` keeps the rescale
and drops the normalisation; `full` vs `lrn_const` is the normalisation alone.

Verdict rules (`alexnet_jax/report/claims.py`), one Holm family over every row that gets a
verdict, simultaneous (Bonferroni) 95% CIs over the same family:
- held: the paper's direction, Holm-adjusted paired p < 0.05;
- refuted: the paper's Δ (or, where it gave a direction only, every Δ in its direction) is
  outside the simultaneous CI;
- otherwise not resolved; "not testable" with its reason (PCA here).

Sweep arguments: stage=pilot|lrgrid|study (study), seeds=N (10), subset=N (1000), epochs=N
(100), lr=X (0.003: the base rate of the grid), eval_every=N (epochs/20), runlocal.
"""

from alexnet_jax import sweep

CONFIG = "configs/small_fashion_mnist.py"
CROP, IMAGE, FC = 23, 26, (1792, 1792)  # As in fmnist_like_for_like.py.
ARMS = {
    "full": ("", {}),
    "no_lrn": ("lrn=0", {}),
    "lrn_const": ("", {"model.lrn_alpha": 0.0}),
    "pool_2x2": ("pool=2x2", {}),
    "one_tower": ("towers=1", {}),
    "no_conv4": ("drop_conv=4", {}),
    "no_dropout": ("dropout=0", {}),
    "no_aug": ("aug=0", {}),
}
PILOT_ARMS = ("full", "no_dropout", "no_aug")
PILOT_SUBSETS = {1_000: 100, 2_000: 50, 5_000: 20}  # Training images: epochs (~700-780 steps).
PILOT_SEED = 100  # Pilots and the LR grid; the comparison uses seeds 0..seeds-1.
GRID = (0.5, 1.0, 2.0)
# Each arm's rate, chosen by the LR grid (stage 2); None: not yet chosen (the base rate).
ARM_LR = {arm: None for arm in ARMS}


def _overrides(a, subset, epochs, lr):
  drops = (round(epochs * 0.5), round(epochs * 0.75))
  return {"model.input_size": CROP, "data.crop_size": CROP, "data.image_size": IMAGE,
          "model.fc_features": FC, "model.init_std": 0.03, "optim.lr": lr,
          "optim.schedule": "constant" if a["runlocal"] else "steps",
          "optim.step_epochs": () if a["runlocal"] else drops,
          "data.train_examples": subset, "data.val_crops": "center",
          "eval_every_epochs": a["eval_every"] or max(1, epochs // 20), "eval_train": True}


def get_sweep(arg=None):
  where = "experiments/fmnist_overfit.py"
  a = sweep.parse_arg(arg, {"stage": "study", "seeds": 10, "subset": 1_000, "epochs": 100,
                            "lr": 0.003, "eval_every": 0, "runlocal": False}, where)
  def run(name, variant, seed, subset, epochs, lr, extra):
    common = sweep.join_variant("crops=ten", f"epochs={epochs}", "runlocal" if a["runlocal"] else "")
    return sweep.Run(f"{name}.s{seed}", f"{CONFIG}:{sweep.join_variant(variant, common, f'seed={seed}')}",
                     {**_overrides(a, subset, epochs, lr), **extra})

  if a["stage"] == "pilot":
    return [run(f"{arm}_n{n}", ARMS[arm][0], PILOT_SEED, n, e, a["lr"], ARMS[arm][1])
            for n, e in PILOT_SUBSETS.items() for arm in PILOT_ARMS]
  if a["stage"] == "lrgrid":
    return [run(f"{arm}_lr{a['lr'] * f:g}", variant, PILOT_SEED, a["subset"], a["epochs"], a["lr"] * f, extra)
            for f in GRID for arm, (variant, extra) in ARMS.items()]
  if a["stage"] != "study":
    raise sweep.SweepError(f"{where}: stage={a['stage']!r}: give pilot, lrgrid or study.")
  # Seed-major: a study stopped part-way has every arm at the seeds it finished.
  return [run(arm, variant, s, a["subset"], a["epochs"], ARM_LR[arm] or a["lr"], extra)
          for s in range(a["seeds"]) for arm, (variant, extra) in ARMS.items()]
