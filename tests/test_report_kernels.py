"""Figure 3 from a checkpoint written by alexnet_jax.checkpoint (no training)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from alexnet_jax import checkpoint, evaluate, optim, sweep
from alexnet_jax import step as step_lib
from alexnet_jax.models import AlexNet, ModelSpec
from alexnet_jax.report import kernels


def _run_with_checkpoint(wd, variant=""):
  cfg = sweep.resolve(sweep.Run("x", "configs/small_fashion_mnist.py" + (f":{variant}" if variant else "")))
  wd.mkdir(parents=True)
  (wd / "config.json").write_text(cfg.to_json_best_effort(indent=2))
  model = AlexNet(ModelSpec.from_config(cfg.model))
  rng = jax.random.PRNGKey(3)
  params = model.init({"params": rng}, jax.numpy.zeros((1, 28, 28, 1)), train=False)["params"]
  state = step_lib.init_state(model, optim.make_optimizer(cfg.optim, params), rng, (28, 28, 1))
  ckpt = checkpoint.Checkpointer(str(wd / "checkpoints"), async_save=False)
  ckpt.save(12, state, {"wall_time": 0.0}, force=True)
  ckpt.close()
  return np.asarray(state.params["conv1"]["kernel"])


def test_figure3_draws_each_towers_first_layer_kernels(tmp_path):
  want = _run_with_checkpoint(tmp_path / "run")
  params, cfg, step = evaluate.restore_params(tmp_path / "run")
  assert step == 12 and cfg["model"]["towers"] == 2
  name, got = kernels.first_conv(params)
  assert name == "conv1" and got.shape == (2, 5, 5, 1, 16) and np.array_equal(got, want)
  grid = kernels.kernel_grid(got[1], pad=1)
  # Kernel i of tower 2 sits at row i // 16, column i % 16, scaled to [0, 1] on its own.
  w = got[1][..., 0, 5]
  assert grid[1:6, 1 + 5 * 6:6 + 5 * 6] == pytest.approx((w - w.min()) / (w.max() - w.min()))
  assert kernels.main([str(tmp_path / "run")]) == 0
  png = tmp_path / "run" / "report" / "figure3.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.with_suffix(".svg").is_file()


def test_one_tower_run_and_errors(tmp_path, capsys):
  _run_with_checkpoint(tmp_path / "one", "towers=1")
  params, _, _ = evaluate.restore_params(tmp_path / "one")
  assert kernels.first_conv(params)[1].shape == (1, 5, 5, 1, 16)
  (tmp_path / "empty").mkdir()
  assert kernels.main([str(tmp_path / "empty")]) == 2
  assert "config.json" in capsys.readouterr().err
  with pytest.raises(ValueError, match="3 colour"):
    kernels.kernel_grid(np.zeros((5, 5, 4, 2)))
