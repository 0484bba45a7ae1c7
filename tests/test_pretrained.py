"""torchvision AlexNet weights -> our AlexNet: same logits, and torchvision's preprocessing."""

import os
import subprocess
import sys

import numpy as np
import pytest

from alexnet_jax import config as config_lib
from alexnet_jax import pretrained
from alexnet_jax.data import pipeline
from alexnet_jax.models import AlexNet, ModelSpec
from alexnet_jax.sweep import load_config

torch = pytest.importorskip("torch", reason="torch is an optional extra: pip install "
                            "'alexnet-jax[torch]' (CI installs it)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def config():
  c = load_config("configs/torchvision_alexnet.py")
  config_lib.validate(c)
  return c


@pytest.fixture(scope="module")
def spec(config):
  return ModelSpec.from_config(config.model)


@pytest.fixture(scope="module")
def random_torch_state():
  torch.manual_seed(0)
  net = pretrained.torch_reference()
  # The default init gives logits of ~1e-2, where any layout mistake hides under atol; a
  # larger final layer makes them O(1).
  with torch.no_grad():
    net.classifier[6].weight.mul_(30.0)
  return net.eval(), {k: v.numpy() for k, v in net.state_dict().items()}


def test_config_gives_torchvision_map_sizes(config):
  # 224 + 2*2 padding: 55 after conv1, then 27 / 13 / 13 / 13 / 6 after each stage.
  assert config_lib.feature_map_sizes(config.model) == [27, 13, 13, 13, 6]
  assert (config.model.towers, config.model.lrn) == (1, False)


def test_reference_keys_are_torchvision_keys(random_torch_state):
  _, state = random_torch_state
  assert list(state) == [f"{p}.{n}" for p in ("features.0", "features.3", "features.6",
                                               "features.8", "features.10", "classifier.1",
                                               "classifier.4", "classifier.6")
                         for n in ("weight", "bias")]
  assert state["features.0.weight"].shape == (64, 3, 11, 11)
  assert state["classifier.1.weight"].shape == (4096, 9216)


def test_converted_logits_equal_torch(random_torch_state, spec):
  net, state = random_torch_state
  params = pretrained.convert(state, spec)
  assert params["conv1"]["kernel"].shape == (1, 11, 11, 3, 64)
  assert params["fc6"]["kernel"].shape == (1, 9216, 4096)
  assert params["fc8"]["kernel"].shape == (4096, 1000)

  x = np.random.default_rng(1).standard_normal((3, 3, 224, 224)).astype(np.float32)
  with torch.no_grad():
    expected = net(torch.from_numpy(x)).numpy()
  ours = np.asarray(AlexNet(spec).apply({"params": params}, x.transpose(0, 2, 3, 1), train=False))
  assert np.abs(expected).max() > 0.5  # Logits large enough for the comparison to mean something.
  np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=1e-4)
  assert (ours.argmax(-1) == expected.argmax(-1)).all()


def test_fc6_rows_follow_our_flatten_order(random_torch_state, spec):
  # Without the (C, H, W) -> (H, W, C) permutation the shapes still fit; only logits tell.
  net, state = random_torch_state
  w = state["classifier.1.weight"]
  unpermuted = dict(state)
  unpermuted["classifier.1.weight"] = w.reshape(4096, 6, 6, 256).transpose(0, 3, 1, 2).reshape(4096, -1)
  diff, _ = pretrained.check_against_torch(state, pretrained.convert(unpermuted, spec), spec)
  assert diff > 1e-2
  diff, scale = pretrained.check_against_torch(state, pretrained.convert(state, spec), spec)
  assert diff < 1e-4 * max(1.0, scale)


def test_save_and_load_params_round_trip(tmp_path, random_torch_state, spec):
  _, state = random_torch_state
  params = pretrained.convert(state, spec)
  path = str(tmp_path / "params.npz")
  pretrained.save_params(params, path)
  loaded = pretrained.load_params(path)
  assert set(loaded) == set(params)
  for layer in params:
    for p in params[layer]:
      np.testing.assert_array_equal(np.asarray(loaded[layer][p]), params[layer][p])


def test_pth_file_round_trip(tmp_path, random_torch_state):
  net, state = random_torch_state
  path = str(tmp_path / "alexnet.pth")
  torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)  # DataParallel keys.
  loaded = pretrained.load_torch_state_dict(path)
  assert set(loaded) == set(state)
  np.testing.assert_array_equal(loaded["features.3.weight"], state["features.3.weight"])


def test_mismatches_name_the_config_field(random_torch_state, spec):
  _, state = random_torch_state
  with pytest.raises(pretrained.ConversionError, match="towers"):
    pretrained.convert(state, ModelSpec())  # The paper's two-tower net.
  with pytest.raises(pretrained.ConversionError, match="config.model.lrn"):
    pretrained.convert(state, ModelSpec.from_config({**spec.__dict__, "lrn": True}))
  with pytest.raises(pretrained.ConversionError, match="input_size"):
    pretrained.convert(state, ModelSpec.from_config({**spec.__dict__, "input_size": 256}))
  with pytest.raises(pretrained.ConversionError, match="num_classes"):
    pretrained.convert(state, ModelSpec.from_config({**spec.__dict__, "num_classes": 10}))
  broken = {k: v for k, v in state.items() if k != "features.8.bias"}
  with pytest.raises(pretrained.ConversionError, match="features.8.bias"):
    pretrained.convert(broken, spec)


def test_eval_preprocessing_is_torchvisions(config):
  # torchvision: ToTensor (x / 255), Normalize(mean, std), on the central 224 of the
  # 256 image; ours does the same on 0..255 pixels with the config's mean and std.
  image = np.random.default_rng(2).integers(0, 256, (256, 256, 3), dtype=np.uint8)
  preprocess = pipeline.EvalPreprocess(config, stats=None, channels=3)
  out = preprocess((image, 0, True))["image"]
  crop = image[16:240, 16:240].astype(np.float32) / 255.0
  expected = (crop - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
  np.testing.assert_allclose(out, expected, atol=1e-5)


def test_command_converts_and_checks(tmp_path, random_torch_state):
  net, _ = random_torch_state
  weights = str(tmp_path / "alexnet.pth")
  torch.save(net.state_dict(), weights)
  workdir = tmp_path / "run"
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-m", "alexnet_jax.pretrained", f"--torch_weights={weights}",
                        f"--workdir={workdir}", "--crops="], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "max |logit - torch logit|" in out.stdout
  assert (workdir / "params.npz").exists() and (workdir / "config.json").exists()


def test_evaluate_through_the_imagenet_pipeline(tmp_path, random_torch_state, spec, config):
  # imagenet2012 faked by mock_data: the real eval path (decode, resize 256, center crop or
  # 10 crops of 224, channel normalisation, eval step) on converted weights.
  tfds = pytest.importorskip("tensorflow_datasets")  # an optional extra; CI installs it

  _, state = random_torch_state
  params = pretrained.convert(state, spec)
  c = load_config("configs/torchvision_alexnet.py")
  c.data.data_dir = str(tmp_path / "data")
  c.eval_batch_size = 2
  with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
    results = pretrained.evaluate(c, params, crops=("center", "ten"))
  assert set(results) == {"center", "ten"}
  for m in results.values():
    assert np.isfinite(m["loss"]) and 0.0 <= m["top5_err"] <= m["top1_err"] <= 1.0
  text = pretrained.report(results)
  assert "published" in text and "56.52" in text
