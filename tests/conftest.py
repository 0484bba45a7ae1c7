"""Shared helpers for the model/config tests: watch every layer of an AlexNet as it runs."""

from __future__ import annotations

import alexnet_jax

# The tests train in this process, so they start it as the programs do (before any backend).
alexnet_jax.use_default_xla_flags()

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402


def run_layers(model, variables, images, **apply_kwargs):
  """Applies `model`, returning (logits, {layer name: (input, output)}).

  Every sub-module call (conv1..5, fc6..8) is intercepted, so the tests see what each
  layer actually received and produced: for tower layers these are lists with one array
  per tower; fc layers receive the gathered (flattened) activations.
  """
  seen = {}

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == "__call__" and context.module.name is not None:
      seen[context.module.name] = (args[0], out)
    return out

  with nn.intercept_methods(interceptor):
    logits = model.apply(variables, images, **apply_kwargs)
  return logits, seen


def abstract_layers(model, batch=1, channels=3):
  """Shapes only (no FLOPs): (param shapes, {layer: (input shapes, output shapes)}, logits).

  Uses `jax.eval_shape`, so the full 227px paper net costs nothing to inspect.
  """
  size = model.spec.input_size
  holder = {}

  def go():
    x = jnp.zeros((batch, size, size, channels), jnp.float32)
    variables = model.init({"params": jax.random.key(0)}, x, train=False)
    logits, seen = run_layers(model, variables, x, train=False)
    holder["seen"] = jax.tree.map(lambda a: tuple(a.shape), seen)
    return variables["params"], logits

  params, logits = jax.eval_shape(go)
  return jax.tree.map(lambda a: tuple(a.shape), params), holder["seen"], logits


def map_sizes_from_layers(spec, seen) -> list[int]:
  """Spatial size after each conv stage (conv, LRN, pool), read off what the layers got.

  A stage's output is the input of the next existing conv; after the last stage it is the
  flattened fc6 input divided by the channels of the last existing conv.
  """
  n = len(spec.conv_features)
  sizes = []
  for i in range(1, n + 1):
    later = [j for j in range(i + 1, n + 1) if f"conv{j}" in seen]
    if later:
      sizes.append(seen[f"conv{later[0]}"][0][0][1])
    else:
      last = max(j for j in range(1, n + 1) if f"conv{j}" in seen)
      flat = seen["fc6"][0][-1]
      channels = spec.conv_features[last - 1]
      side = round((flat / channels) ** 0.5)
      assert side * side * channels == flat
      sizes.append(side)
  return sizes
