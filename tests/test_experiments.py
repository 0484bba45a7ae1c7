"""The study's sweep files say what they run: like-for-like sizes, the paper's regime, Figure 1's net."""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import pytest

from alexnet_jax import config as C
from alexnet_jax import sweep
from alexnet_jax.models import AlexNet, ModelSpec, count_params

REPO = pathlib.Path(__file__).resolve().parents[1]


def _params(cfg, channels=1):
  model = AlexNet(ModelSpec.from_config(cfg.model))
  s = cfg.model.input_size
  return jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0)}, jnp.zeros((1, s, s, channels)),
                                           train=False)["params"])


def test_like_for_like_pools_and_towers_match_the_papers_comparisons():
  runs = sweep.load_sweep(str(REPO / "experiments/fmnist_like_for_like.py:subset=0,seeds=2"))
  assert len(runs) == 16
  cfg = {r.name: sweep.resolve(r) for r in runs}
  full, pool, tower = cfg["full.s0"], cfg["pool_2x2.s0"], cfg["one_tower.s0"]
  # 3/2 and 2/2 pooling give the same maps (the paper: 55 -> 27 either way), so the same params.
  assert C.feature_map_sizes(full.model) == C.feature_map_sizes(pool.model) == [11, 5, 5, 5, 2]
  assert (pool.model.pool_window, pool.model.pool_stride) == (2, 2)
  n_full, n_pool, n_tower = (count_params(_params(c)) for c in (full, pool, tower))
  assert n_full == n_pool == 3_842_698
  # The one-tower net loses about what the paper's did (1.91%), conv5 and the fc layers keeping width.
  paper, paper_one = C.base_config(), C.base_config()
  C.one_tower(paper_one)
  paper_change = 1 - count_params(_params(paper_one, 3)) / count_params(_params(paper, 3))
  assert paper_change == pytest.approx(0.0191, abs=1e-4)
  assert 1 - n_tower / n_full == pytest.approx(0.0197, abs=1e-4)
  assert tower.model.conv_features[4] == full.model.conv_features[4]
  assert tower.model.fc_features == full.model.fc_features
  # The regime: every run annealed twice, at the same epochs.
  for c in cfg.values():
    assert c.optim.schedule == "steps" and len(c.optim.step_epochs) == 2 and c.num_epochs == 16
    assert max(c.optim.step_epochs) < c.num_epochs and c.data.eval_crops == "ten"
    assert c.data.val_crops == "center"  # 10 crops for the final test only
    assert (c.optim.lr, c.model.init_std) == (0.003, 0.03)
  assert {sweep.split_name(n)[0] for n in cfg} == {"full", "no_lrn", "pool_2x2", "one_tower", "no_pca",
                                                  "no_dropout", "no_aug", "no_conv4"}


def test_like_for_like_subset_needs_the_config_field():
  spec = str(REPO / "experiments/fmnist_like_for_like.py")
  if "train_examples" in C.base_config().data:
    runs = sweep.load_sweep(spec)
    assert all(sweep.resolve(r).data.train_examples == 5_000 for r in runs[:2])
  else:
    with pytest.raises(sweep.SweepError, match="config.data.train_examples.*subset=0"):
      sweep.load_sweep(spec)


def test_figure1_is_a_four_layer_net_without_regularisation_on_an_lr_grid():
  runs = sweep.load_sweep(str(REPO / "experiments/fmnist_figure1.py:seeds=3,lrs=0.01+0.03"))
  assert len(runs) == 12
  cfg = {r.name: sweep.resolve(r) for r in runs}
  assert {sweep.split_name(n)[0] for n in cfg} == {"relu_lr0.01", "relu_lr0.03", "tanh_lr0.01", "tanh_lr0.03"}
  for name, c in cfg.items():
    act, lr = sweep.split_name(name)[0].split("_lr")
    assert c.model.activation == act and c.optim.lr == float(lr)
    assert (c.model.dropout, c.optim.weight_decay, c.data.pca_noise) == (0.0, 0.0, 0.0)
    assert not (c.data.random_crop or c.data.flip or c.model.lrn) and c.optim.schedule == "constant"
  params = _params(cfg["relu_lr0.01.s0"])
  kernels = [k for k, v in params.items() if "kernel" in v]
  assert sorted(kernels) == ["conv1", "conv2", "conv3", "fc6"]  # Four layers with weights.
  assert params["fc6"]["kernel"].shape == (2 * 2 * 96, 10)
  with pytest.raises(sweep.SweepError, match="lrs"):
    sweep.load_sweep(str(REPO / "experiments/fmnist_figure1.py:lrs=fast"))


@pytest.mark.parametrize("path", sorted(p.name for p in (REPO / "experiments").glob("*.py")))
def test_every_sweep_file_resolves_with_runlocal(path):
  # `runlocal` is how people try a sweep before spending hours on it: every run's config must
  # build and validate (the like-for-like sweep's LR drops once fell past runlocal's one epoch).
  runs = sweep.load_sweep(str(REPO / "experiments" / path) + ":runlocal")
  assert runs
  for r in runs:
    c = sweep.resolve(r)
    assert 0 < c.max_steps <= 20  # each config's runlocal caps the run at a few steps
