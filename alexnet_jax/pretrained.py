r"""torchvision's pretrained AlexNet in this repo's model, evaluated through this repo's pipeline.

    python -m alexnet_jax.pretrained --torch_weights=alexnet-owt-7be5be79.pth \
        --workdir=runs/tv_alexnet [--config.data.data_dir=...] [--crops=center,ten]

converts the `.pth` state dict (torch is an optional extra: `pip install -e '.[torch]'`)
for the model of configs/torchvision_alexnet.py, checks on random images that the converted
net gives torch's logits, saves the params to <workdir>/params.npz (`load_params` reads them
back) and evaluates them on ImageNet val: center crop and the paper's 10 crops, next to the
published 56.5% top-1 / 79.1% top-5 accuracy.

The layout differences the conversion bridges:
  * conv kernels: torch OIHW -> our HWIO, with the leading tower axis (of length 1);
  * linear weights: torch (out, in) -> our (in, out); fc8 is a plain Dense (no tower axis);
  * fc6's rows: torch flattens conv5's output as (C, H, W), we flatten NHWC as (H, W, C).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, logging

from alexnet_jax import config as config_lib
from alexnet_jax import files
from alexnet_jax.models import AlexNet, ModelSpec

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "configs", "torchvision_alexnet.py")
PUBLISHED_ACCURACY = {"top1": 56.522, "top5": 79.066}  # torchvision model zoo, center crop, %.

# Our layer -> torchvision's module path (Sequential indices count the ReLUs, pools, dropouts).
TORCH_NAMES = {"conv1": "features.0", "conv2": "features.3", "conv3": "features.6",
               "conv4": "features.8", "conv5": "features.10", "fc6": "classifier.1",
               "fc7": "classifier.4", "fc8": "classifier.6"}
# What the weights' shapes cannot tell: these must match for the numbers to mean anything.
TORCHVISION_MODEL = {"towers": 1, "conv_layers": (1, 2, 3, 4, 5), "conv_strides": (4, 1, 1, 1, 1),
                     "conv_padding": (2, 2, 1, 1, 1), "lrn": False, "pool_after": (1, 2, 5),
                     "pool_window": 3, "pool_stride": 2, "activation": "relu"}
NEEDS_TORCH = "Reading .pth files needs PyTorch: pip install -e '.[torch]'"


class ConversionError(config_lib.ConfigError):
  """A state dict that does not fit the configured model; says which side to change."""


def _torch():
  try:
    import torch  # noqa: PLC0415  (optional extra, imported only when needed)
  except ImportError:
    raise ImportError(NEEDS_TORCH) from None
  return torch


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """A torchvision AlexNet `.pth` as {torch key: float32 array}."""
  torch = _torch()
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"--torch_weights={path} does not exist. torchvision's file is alexnet-owt-7be5be79.pth "
        "(in ~/.cache/torch/hub/checkpoints/ once torchvision has downloaded it).")
  state = torch.load(path, map_location="cpu", weights_only=True)
  if isinstance(state, Mapping) and "state_dict" in state:  # Training checkpoints wrap it.
    state = state["state_dict"]
  # DataParallel prefixes every key with "module.".
  return {k.removeprefix("module."): v.detach().cpu().float().numpy() for k, v in state.items()}


def _expected_shapes(spec: ModelSpec) -> dict:
  model = AlexNet(spec)
  x = jnp.zeros((1, spec.input_size, spec.input_size, 3), jnp.float32)
  shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, x, train=False))
  return jax.tree.map(lambda a: tuple(a.shape), shapes["params"])


def convert(state_dict: Mapping[str, np.ndarray], spec: ModelSpec) -> dict:
  """torchvision AlexNet state dict -> params of `AlexNet(spec)` (NumPy float32)."""
  for field, want in TORCHVISION_MODEL.items():
    have = getattr(spec, field)
    if (tuple(have) if isinstance(want, tuple) else have) != want:
      raise ConversionError(
          f"config.model.{field}={have!r}, but torchvision's AlexNet has {want!r}; use "
          "configs/torchvision_alexnet.py.")
  if len(spec.fc_features) != 2:
    raise ConversionError(
        f"config.model.fc_features={tuple(spec.fc_features)}: torchvision's AlexNet has two "
        "hidden fc layers (4096, 4096); use configs/torchvision_alexnet.py.")
  side = config_lib.feature_map_sizes(spec)[-1]
  if side != 6:
    # torchvision's AdaptiveAvgPool2d(6) is the identity only on 6x6 maps; we have none.
    raise ConversionError(
        f"config.model.input_size={spec.input_size} gives {side}x{side} maps before fc6, but "
        "torchvision's fc6 was trained on 6x6 (its AdaptiveAvgPool2d((6, 6)) output); use "
        "input_size=224 (with data.crop_size=224).")
  wanted = {f"{TORCH_NAMES[n]}.{p}" for n in TORCH_NAMES for p in ("weight", "bias")}
  missing, extra = wanted - set(state_dict), set(state_dict) - wanted
  if missing or extra:
    raise ConversionError(
        f"Not a torchvision AlexNet state dict: missing {sorted(missing)}, unexpected "
        f"{sorted(extra)}.")

  sd = {k: np.asarray(v, np.float32) for k, v in state_dict.items()}
  params = {}
  for i in range(1, 6):
    w, b = sd[f"{TORCH_NAMES[f'conv{i}']}.weight"], sd[f"{TORCH_NAMES[f'conv{i}']}.bias"]
    params[f"conv{i}"] = {"kernel": w.transpose(2, 3, 1, 0)[None], "bias": b[None]}
  w6 = sd["classifier.1.weight"]
  channels = sd["features.10.weight"].shape[0]
  if w6.shape[1] != channels * side * side:
    raise ConversionError(
        f"classifier.1.weight takes {w6.shape[1]} inputs, not conv5's {channels}x{side}x{side}.")
  fc6 = w6.reshape(-1, channels, side, side).transpose(2, 3, 1, 0).reshape(side * side * channels, -1)
  params["fc6"] = {"kernel": fc6[None], "bias": sd["classifier.1.bias"][None]}
  params["fc7"] = {"kernel": sd["classifier.4.weight"].T[None], "bias": sd["classifier.4.bias"][None]}
  params["fc8"] = {"kernel": sd["classifier.6.weight"].T, "bias": sd["classifier.6.bias"]}

  expected = _expected_shapes(spec)
  got = jax.tree.map(lambda a: tuple(a.shape), params)
  if got != expected:
    diff = {f"{layer}/{p}": (got[layer][p], expected[layer][p]) for layer in expected
            for p in expected[layer] if got[layer][p] != expected[layer][p]}
    raise ConversionError(
        f"The weights do not fit config.model (layer: (from .pth, model wants)): {diff}. "
        "Use configs/torchvision_alexnet.py, or set config.model.conv_features / fc_features / "
        "num_classes to the checkpoint's.")
  return {layer: {p: np.ascontiguousarray(a) for p, a in ps.items()} for layer, ps in params.items()}


def save_params(params, path: str) -> None:
  """Atomically, as an .npz with 'layer/param' keys."""
  flat = {f"{layer}/{p}": np.asarray(a) for layer, ps in params.items() for p, a in ps.items()}
  with files.atomic_write(path, binary=True) as f:
    np.savez(f, **flat)


def load_params(path: str) -> dict:
  with np.load(path) as z:
    params: dict = {}
    for key in z.files:
      layer, p = key.split("/")
      params.setdefault(layer, {})[p] = jnp.asarray(z[key])
  return params


def torch_reference(num_classes: int = 1000):
  """torchvision's AlexNet, rebuilt module for module so its state-dict keys match.

  Written here rather than imported because torchvision is not a dependency; used to check
  the conversion on random images.
  """
  nn = _torch().nn

  class AlexNetTorchvision(nn.Module):
    def __init__(self):
      super().__init__()
      self.features = nn.Sequential(
          nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
          nn.MaxPool2d(kernel_size=3, stride=2),
          nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
          nn.MaxPool2d(kernel_size=3, stride=2),
          nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
          nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
          nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
          nn.MaxPool2d(kernel_size=3, stride=2))
      self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
      self.classifier = nn.Sequential(
          nn.Dropout(p=0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
          nn.Dropout(p=0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
          nn.Linear(4096, num_classes))

    def forward(self, x):
      x = self.avgpool(self.features(x))
      return self.classifier(x.flatten(1))

  return AlexNetTorchvision()


def check_against_torch(state_dict, params, spec: ModelSpec, batch: int = 2, seed: int = 0):
  """Max |logit difference| between torch (eval mode) and the converted net on random images."""
  torch = _torch()
  net = torch_reference(spec.num_classes)
  net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()})
  net.eval()
  x = np.random.default_rng(seed).standard_normal(
      (batch, 3, spec.input_size, spec.input_size)).astype(np.float32)
  with torch.no_grad():
    expected = net(torch.from_numpy(x)).numpy()
  ours = AlexNet(spec).apply({"params": params}, jnp.asarray(x.transpose(0, 2, 3, 1)), train=False)
  return float(np.max(np.abs(np.asarray(ours) - expected))), float(np.max(np.abs(expected)))


def evaluate(config: ml_collections.ConfigDict, params, crops=("center", "ten")) -> dict:
  """{crops: {loss, top1_err, top5_err}} on config.data.val_split, through the eval pipeline.

  One process, the default device: an ImageNet val pass is short next to training.
  """
  from alexnet_jax import data  # noqa: PLC0415  (the input pipeline loads only to evaluate)
  from alexnet_jax import step as step_lib  # noqa: PLC0415

  config_lib.validate(config)
  info = data.dataset_info(config)
  if info.num_classes != config.model.num_classes:
    raise ConversionError(
        f"config.data.dataset={config.data.dataset!r} has {info.num_classes} classes but the "
        f"weights have {config.model.num_classes}; evaluate them on imagenet2012.")
  if not info.num_val:
    raise config_lib.ConfigError("config.data.val_split is empty; set it to 'validation'.")
  eval_step = jax.jit(step_lib.make_eval_step(AlexNet(ModelSpec.from_config(config.model))))
  results = {}
  for view in crops:
    view_config = ml_collections.ConfigDict(config.to_dict())
    view_config.data.eval_crops = view
    sums = None
    for batch in data.eval_batches(view_config, split="val"):
      m = eval_step(params, batch)
      sums = step_lib.add_sums(sums, m)
    results[view] = step_lib.means(jax.device_get(sums))
    logging.info("%s: %s", view, results[view])
  return results


def report(results: dict) -> str:
  """Accuracies in percent beside torchvision's published center-crop numbers."""
  lines = ["torchvision AlexNet on ImageNet val",
           f"{'':12s}{'top-1 acc':>10s}{'top-5 acc':>10s}{'top-1 err':>10s}{'top-5 err':>10s}"]
  for view, m in results.items():
    a1, a5 = 100 * (1 - m["top1_err"]), 100 * (1 - m["top5_err"])
    lines.append(f"{view + (' crop' if view == 'center' else ' crops'):12s}"
                 f"{a1:10.2f}{a5:10.2f}{100 - a1:10.2f}{100 - a5:10.2f}")
  p1, p5 = PUBLISHED_ACCURACY["top1"], PUBLISHED_ACCURACY["top5"]
  lines.append(f"{'published':12s}{p1:10.2f}{p5:10.2f}{100 - p1:10.2f}{100 - p5:10.2f}"
               "  (torchvision, center crop)")
  return "\n".join(lines)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  crops = [c for c in _CROPS.value.split(",") if c]
  if any(c not in ("center", "ten") for c in crops):
    raise app.UsageError(f"--crops={_CROPS.value!r}: use center, ten, both (center,ten) or ''.")
  try:
    _convert_and_evaluate(_CONFIG.value, _TORCH_WEIGHTS.value, _WORKDIR.value, crops)
  except (config_lib.ConfigError, ImportError, FileNotFoundError) as e:
    logging.error("%s", e)
    sys.exit(2)


def _convert_and_evaluate(config, torch_weights: str, workdir: str, crops) -> None:
  spec = ModelSpec.from_config(config.model)
  os.makedirs(workdir, exist_ok=True)
  state_dict = load_torch_state_dict(torch_weights)
  params = convert(state_dict, spec)
  diff, scale = check_against_torch(state_dict, params, spec)
  print(f"converted {torch_weights}: max |logit - torch logit| = {diff:.2e} "
        f"(logits up to {scale:.1f}) on random images")
  if diff > 1e-3 * max(1.0, scale):
    raise ConversionError(f"The converted net disagrees with torch by {diff}; not evaluating.")
  path = os.path.join(workdir, "params.npz")
  save_params(params, path)
  files.write_text(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2))
  print(f"saved {path}")
  if not crops:
    return
  results = evaluate(config, jax.tree.map(jnp.asarray, params), crops)
  files.write_json(os.path.join(workdir, "pretrained_eval.json"),
                   {"results": results, "published_accuracy": PUBLISHED_ACCURACY,
                    "spec": dataclasses.asdict(spec)})
  print(report(results))


if __name__ == "__main__":
  from absl import flags
  from ml_collections import config_flags

  _CONFIG = config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Model and data config.")
  _TORCH_WEIGHTS = flags.DEFINE_string("torch_weights", None, "torchvision AlexNet .pth file.")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Where params.npz and the results go.")
  _CROPS = flags.DEFINE_string("crops", "center,ten", "Test views to evaluate, comma-separated "
                               "('center', 'ten'); empty to only convert.")
  flags.mark_flags_as_required(["torch_weights", "workdir"])
  app.run(main)
