"""Config files, variant strings, `validate` and the CLI's refusal of unknown fields."""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
import subprocess
import sys

import pytest

from alexnet_jax import config as config_lib
from alexnet_jax import variants
from alexnet_jax.config import ConfigError, feature_map_sizes, validate
from alexnet_jax.models import AlexNet, ModelSpec
from conftest import abstract_layers, map_sizes_from_layers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def _load(path):
  name = "cfg_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _get(name, arg=None):
  return _load(os.path.join(ROOT, "configs", f"{name}.py")).get_config(arg)


def test_the_two_configs_exist():
  names = [os.path.basename(p) for p in CONFIG_FILES]
  assert "alexnet_imagenet.py" in names and "small_fashion_mnist.py" in names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
@pytest.mark.parametrize("arg", [None, ""])
def test_every_config_file_loads_and_validates(path, arg):
  c = _load(path).get_config(arg)
  validate(c)
  assert c.data.crop_size == c.model.input_size
  # The config is JSON-serialisable (train.py writes it to the workdir).
  assert "conv_features" in c.to_json_best_effort()


@pytest.mark.parametrize("name", ["alexnet_imagenet", "small_fashion_mnist"])
@pytest.mark.parametrize("arg", ["runlocal", "lrn=0,pool=2x2,towers=1,act=tanh,runlocal"])
def test_issue_configs_take_variants_and_validate(name, arg):
  validate(_get(name, arg))


def test_imagenet_config_is_the_paper():
  c = _get("alexnet_imagenet")
  assert c.model.num_classes == 1000 and c.model.input_size == 227
  assert c.model.towers == 2 and tuple(c.model.conv_features) == (96, 256, 384, 384, 256)
  assert tuple(c.model.fc_features) == (4096, 4096) and c.model.dropout == 0.5
  assert c.model.lrn and (c.model.lrn_size, c.model.lrn_k, c.model.lrn_alpha,
                          c.model.lrn_beta) == (5, 2.0, 1e-4, 0.75)
  assert (c.model.pool_window, c.model.pool_stride) == (3, 2)
  assert c.batch_size == 128 and c.optim.lr == 0.01 and c.optim.momentum == 0.9
  assert c.optim.weight_decay == 5e-4 and c.num_epochs == 90
  assert c.data.eval_crops == "ten" and c.data.pca_noise == 0.1
  assert c.model.init == "paper" and c.model.init_std == 0.01


def test_small_config():
  c = _get("small_fashion_mnist")
  assert c.model.num_classes == 10 and c.model.input_size == 28 == c.data.crop_size
  assert c.data.dataset == "fashion_mnist_offline" and c.model.towers == 2


# Variant -> {field path: expected value}, for both config files.
VARIANT_FIELDS = {
    "lrn=0": {"model.lrn": False},
    "lrn=1": {"model.lrn": True},
    "pool=2x2": {"model.pool_window": 2, "model.pool_stride": 2},
    "pool=3x2": {"model.pool_window": 3, "model.pool_stride": 2},
    "pca=0": {"data.pca_noise": 0.0},
    "pca=1": {"data.pca_noise": 0.1},
    "dropout=0": {"model.dropout": 0.0},
    "dropout=0.3": {"model.dropout": 0.3},
    "aug=0": {"data.random_crop": False, "data.flip": False},
    "act=tanh": {"model.activation": "tanh"},
    "drop_conv=3": {"model.conv_layers": (1, 2, 4, 5), "model.cross_tower": (4,)},
    "drop_conv=4": {"model.conv_layers": (1, 2, 3, 5), "model.cross_tower": (3,)},
    "crops=ten": {"data.eval_crops": "ten"},
    "crops=center": {"data.eval_crops": "center"},
    "init=he": {"model.init": "he"},
    "convention=paper": {"model.dropout_scaling": "test"},
    "seed=7": {"seed": 7},
    "epochs=3": {"num_epochs": 3},
}


def _field(c, path):
  node = c
  for p in path.split("."):
    node = node[p]
  return tuple(node) if isinstance(node, (list, tuple)) else node


@pytest.mark.parametrize("name", ["alexnet_imagenet", "small_fashion_mnist"])
@pytest.mark.parametrize("variant", sorted(VARIANT_FIELDS))
def test_variant_sets_its_fields(name, variant):
  base = _get(name)
  c = _get(name, variant)
  changed = dict(VARIANT_FIELDS[variant])
  if name == "small_fashion_mnist" and variant.startswith("epochs="):
    # Its fixed LR drop sits at three quarters of the run, so the epochs move it.
    changed["optim.step_epochs"] = (round(0.75 * changed["num_epochs"]),)
  for path, value in changed.items():
    assert _field(c, path) == value, path
  validate(c)
  # Nothing else moved (the variant is a small named edit).
  flat = lambda cfg: {k: v for k, v in _flatten(cfg.to_dict())}
  diff = {k for k, v in flat(c).items() if flat(base)[k] != v}
  assert diff <= set(changed)


def _flatten(d, prefix=""):
  for k, v in d.items():
    if isinstance(v, dict):
      yield from _flatten(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}", tuple(v) if isinstance(v, list) else v


@pytest.mark.parametrize("name,halved", [
    ("alexnet_imagenet", (48, 128, 192, 192, 256)),
    ("small_fashion_mnist", (16, 32, 48, 48, 64)),
])
def test_towers_1_halves_conv1_to_4_keeps_conv5_and_fc(name, halved):
  base = _get(name)
  c = _get(name, "towers=1")
  assert c.model.towers == 1
  assert tuple(c.model.conv_features) == halved
  assert tuple(c.model.fc_features) == tuple(base.model.fc_features)
  assert _get(name, "towers=2").model.to_dict() == base.model.to_dict()
  validate(c)


def test_runlocal_variants():
  c = _get("alexnet_imagenet", "runlocal")
  assert c.batch_size == 8 and c.max_steps == 5
  s = _get("small_fashion_mnist", "runlocal")
  assert s.num_epochs == 1 and s.max_steps == 20
  assert _get("small_fashion_mnist").max_steps == -1


def test_variants_combine():
  c = _get("alexnet_imagenet", "lrn=0, pool=2x2 ,towers=1,dropout=0")
  assert (c.model.lrn, c.model.pool_window, c.model.towers, c.model.dropout) == (False, 2, 1, 0.0)


@pytest.mark.parametrize("arg", ["frobnicate=1", "nosuchflag", "lrn=maybe", "towers=3",
                                 "pool=3", "drop_conv=x", "dropout=half"])
def test_bad_variant_is_a_value_error_listing_known_args(arg):
  with pytest.raises(ValueError) as e:
    _get("small_fashion_mnist", arg)
  msg = str(e.value)
  assert repr(arg.split(",")[0]) in msg or arg in msg
  for known in ("lrn=0|1", "pool=3x2|2x2", "towers=1|2", "act=relu|tanh", "drop_conv=N",
                "runlocal"):
    assert known in msg


def test_unknown_variant_names_the_key():
  with pytest.raises(ValueError, match="frobnicate"):
    config_lib.apply_variant(config_lib.base_config(), "frobnicate=1")


def test_runlocal_needs_a_runlocal_edit():
  with pytest.raises(ValueError, match="runlocal"):
    config_lib.apply_variant(config_lib.base_config(), "runlocal")


# ---------------------------------------------------------------------------------------
# validate()

def _small():
  return _get("small_fashion_mnist")


def _set(**fields):
  def edit(c):
    for path, value in fields.items():
      node = c
      *parents, leaf = path.split("__")
      for p in parents:
        node = node[p]
      node[leaf] = value
  return edit


BAD_CONFIGS = {
    "conv_features_vs_towers": (
        _set(model__conv_features=(32, 63, 96, 96, 64)), r"config\.model\.conv_features\[1\]=63"),
    "fc_features_vs_towers": (_set(model__fc_features=(511, 512)), r"config\.model\.fc_features"),
    "crop_vs_input": (_set(data__crop_size=24), r"config\.data\.crop_size=24.*config\.model\.input_size=28"),
    "input_too_small": (_set(model__input_size=8, data__crop_size=8, data__image_size=8),
                        r"config\.model\.input_size=8 is too small"),
    "mesh_model_one_tower": (lambda c: (config_lib.one_tower(c), _set(mesh__model=2)(c)),
                             r"config\.mesh\.model=2.*config\.model\.towers=1"),
    "mesh_model_3": (_set(mesh__model=3), r"config\.mesh\.model=3"),
    "activation": (_set(model__activation="gelu"), r"config\.model\.activation='gelu'"),
    "init": (_set(model__init="xavier"), r"config\.model\.init='xavier'"),
    "dtype": (_set(model__dtype="float16"), r"config\.model\.dtype='float16'"),
    "normalize": (_set(data__normalize="zca"), r"config\.data\.normalize='zca'"),
    "eval_crops": (_set(data__eval_crops="five"), r"config\.data\.eval_crops='five'"),
    "schedule": (_set(optim__schedule="linear"), r"config\.optim\.schedule='linear'"),
    "lrn_size_even": (_set(model__lrn_size=4), r"config\.model\.lrn_size=4"),
    "towers_3": (_set(model__towers=3), r"config\.model\.towers=3"),
    "dropout_1": (_set(model__dropout=1.0), r"config\.model\.dropout=1\.0"),
    "conv_layers": (_set(model__conv_layers=(1, 2, 6)), r"config\.model\.conv_layers"),
    "kernels_length": (_set(model__conv_kernels=(5, 5, 3, 3)), r"config\.model\.conv_kernels"),
    "crop_vs_image": (_set(model__input_size=40, data__crop_size=40), r"config\.data\.crop_size=40"),
    "lr": (_set(optim__lr=0.0), r"config\.optim\.lr"),
    "dropout_scaling": (_set(model__dropout_scaling="both"), r"config\.model\.dropout_scaling='both'"),
    "conv_pad_far_length": (_set(model__conv_pad_far=(0, 0)), r"config\.model\.conv_pad_far has 2"),
    "conv_pad_far_negative": (_set(model__conv_pad_far=(-1, 0, 0, 0, 0)), r"config\.model\.conv_pad_far"),
    "init_stds_length": (_set(model__init_stds=(0.01,) * 5), r"config\.model\.init_stds=.*needs 8"),
    "act_after_lrn": (_set(model__act_after_lrn=(3,)), r"config\.model\.act_after_lrn=\(3,\)"),
    "bias_lr_mult": (_set(optim__bias_lr_mult=0.0), r"config\.optim\.bias_lr_mult"),
    "plateau_threshold": (_set(optim__schedule="plateau", optim__plateau_threshold=-0.1),
                          r"config\.optim\.plateau_threshold"),
    "lr_step_past_end": (_set(optim__schedule="steps", optim__step_epochs=(100,)),
                         r"config\.optim\.step_epochs=\(100,\).*num_epochs"),
    "batch": (_set(batch_size=0), r"config\.batch_size"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_validate_rejects_naming_the_field(case):
  edit, pattern = BAD_CONFIGS[case]
  c = _small()
  validate(c)
  edit(c)
  with pytest.raises(ConfigError, match=pattern):
    validate(c)


def test_config_error_is_a_value_error():
  assert issubclass(ConfigError, ValueError)


def test_even_lrn_size_is_fine_without_lrn():
  c = _small()
  c.model.lrn = False
  c.model.lrn_size = 4
  validate(c)


def test_mesh_model_2_with_two_towers_is_valid():
  c = _get("alexnet_imagenet")
  c.mesh.model = 2
  validate(c)


# ---------------------------------------------------------------------------------------
# convention=paper|cuda-convnet: each preset sets its fields and nothing else.

CONVENTION_FIELDS = {
    "paper": {"model.dropout_scaling": "test"},
    "cuda-convnet": {"model.lrn_alpha_per_size": True, "model.act_after_lrn": (1,),
                     "model.dropout_scaling": "test", "optim.bias_lr_mult": 2.0},
}
CUDA_CONVNET_IMAGENET = {
    "model.input_size": 224, "data.crop_size": 224, "model.conv_pad_far": (3, 0, 0, 0, 0),
    "model.init_stds": (0.01, 0.01, 0.03, 0.03, 0.03, 0.01, 0.01, 0.01)}


@pytest.mark.parametrize("name", ["alexnet_imagenet", "small_fashion_mnist"])
@pytest.mark.parametrize("convention", sorted(CONVENTION_FIELDS))
def test_convention_sets_its_fields_and_nothing_else(name, convention):
  base = _get(name)
  c = _get(name, f"convention={convention}")
  want = dict(CONVENTION_FIELDS[convention])
  if convention == "cuda-convnet" and name == "alexnet_imagenet":
    want.update(CUDA_CONVNET_IMAGENET)
  flat = lambda cfg: dict(_flatten(cfg.to_dict()))
  diff = {k: v for k, v in flat(c).items() if flat(base)[k] != v}
  assert diff == want
  validate(c)
  # A convention combines with the ablations.
  validate(_get(name, f"convention={convention},towers=1,drop_conv=3,lrn=0,runlocal"))


def test_bad_convention_names_the_choices():
  with pytest.raises(ValueError, match="convention must be one of"):
    _get("alexnet_imagenet", "convention=caffe")


def test_cuda_convnet_far_padding_rounds_up_like_cuda_convnet():
  # layer.py: modulesX = 1 + ceil((2 * padding + imgSize - filterSize) / stride).
  m = config_lib.base_config().model
  for size in (224, 225, 226, 227, 230):
    m.input_size = size
    far = variants.cuda_convnet_far_padding(m)
    out = 1 + -(-(size - 11) // 4)
    assert far[1:] == (0, 0, 0, 0)
    assert (size + far[0] - 11) // 4 + 1 == out, size
    assert 0 <= far[0] < 4
  m.input_size = 227
  assert variants.cuda_convnet_far_padding(m) == (0,) * 5  # 227 fits exactly.


def test_cuda_convnet_crops_give_the_papers_2048_translations():
  c = _get("alexnet_imagenet", "convention=cuda-convnet")
  # Section 4.1: 224x224 patches of 256x256 images and their reflections, "a factor of 2048".
  assert (c.data.image_size - c.data.crop_size) ** 2 * 2 == 2048
  assert feature_map_sizes(c.model) == feature_map_sizes(_get("alexnet_imagenet").model)


# ---------------------------------------------------------------------------------------
# feature_map_sizes is what the model actually builds.

def test_feature_map_sizes_paper_values():
  assert feature_map_sizes(config_lib.base_config().model) == [27, 13, 13, 13, 6]
  assert feature_map_sizes(_small().model) == [13, 6, 6, 6, 2]


@pytest.mark.parametrize("name,arg", [
    ("alexnet_imagenet", None), ("alexnet_imagenet", "pool=2x2"),
    ("alexnet_imagenet", "drop_conv=3"), ("alexnet_imagenet", "towers=1"),
    ("alexnet_imagenet", "convention=cuda-convnet"),
    ("small_fashion_mnist", None), ("small_fashion_mnist", "pool=2x2"),
    ("small_fashion_mnist", "drop_conv=4"),
])
def test_feature_map_sizes_match_the_model(name, arg):
  c = _get(name, arg)
  spec = ModelSpec.from_config(c.model)
  _, seen, logits = abstract_layers(AlexNet(spec))
  assert map_sizes_from_layers(spec, seen) == feature_map_sizes(c.model)
  assert logits.shape == (1, c.model.num_classes)


def test_model_spec_takes_every_model_field():
  # A model field the spec silently ignored would be a switch that does nothing.
  c = config_lib.base_config()
  spec_fields = {f.name for f in dataclasses.fields(ModelSpec)}
  assert set(c.model.keys()) == spec_fields


# ---------------------------------------------------------------------------------------
# The command line refuses unknown fields and bad values before training.

def test_cli_unknown_field_fails_naming_it(tmp_path):
  workdir = tmp_path / "run"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "alexnet_jax.main", "--config=configs/small_fashion_mnist.py",
         f"--workdir={workdir}", "--config.model.nonexistent=1"]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert "nonexistent" in proc.stdout + proc.stderr
  # Refused while parsing flags: no workdir content, let alone a training step.
  assert not workdir.exists() or not any(workdir.iterdir())
