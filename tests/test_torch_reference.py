"""The PyTorch yardstick of benchmarks/ trains the same network as the JAX model."""

import dataclasses
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import torch_alexnet as ta  # noqa: E402

from alexnet_jax import config as C  # noqa: E402
from alexnet_jax.models import AlexNet, ModelSpec  # noqa: E402


@pytest.mark.parametrize("kw", [{}, {"towers": 1, "conv_features": (16, 32, 48, 48, 64)}])
def test_same_logits_and_gradients(kw):
  c = C.base_config()
  C.small_model(c)
  spec = dataclasses.replace(ModelSpec.from_config(c.model), dropout=0.0, **kw)
  model = AlexNet(spec)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 28, 28, 3)).astype(np.float32)
  y = rng.integers(0, 10, 3)
  params = model.init({"params": jax.random.key(0)}, jnp.asarray(x), train=False)["params"]

  def loss(p):
    logits = model.apply({"params": p}, jnp.asarray(x), train=False)
    return jnp.mean(-jax.nn.log_softmax(logits)[jnp.arange(3), y]), logits

  (jl, jlogits), jgrads = jax.value_and_grad(loss, has_aux=True)(params)

  tm = ta.TorchAlexNet(spec)
  ta.load_jax_params(tm, params)
  tlogits = tm(torch.from_numpy(x.transpose(0, 3, 1, 2)))
  tl = torch.nn.functional.cross_entropy(tlogits, torch.from_numpy(y))
  tl.backward()
  np.testing.assert_allclose(tlogits.detach().numpy(), jlogits, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(float(tl.detach()), float(jl), rtol=1e-5)
  # Gradients through the same loader: load the JAX gradients into a twin and compare.
  twin = ta.TorchAlexNet(spec)
  ta.load_jax_params(twin, jgrads)
  for (name, p), (_, q) in zip(tm.named_parameters(), twin.named_parameters()):
    scale = float(q.detach().abs().max()) or 1.0
    np.testing.assert_allclose(p.grad.numpy() / scale, q.detach().numpy() / scale,
                               atol=1e-4, err_msg=name)


def test_paper_sgd_matches_optax_rule():
  from alexnet_jax import optim
  lin = torch.nn.Linear(3, 2)
  opt = ta.PaperSGD(lin, lr=0.1, momentum=0.9, weight_decay=0.01)
  params = {"kernel": jnp.asarray(lin.weight.detach().numpy().T),
            "bias": jnp.asarray(lin.bias.detach().numpy())}
  tx = optim.paper_sgd(0.1, 0.9, 0.01, decay_mask={"kernel": True, "bias": False})
  state = tx.init(params)
  rng = np.random.default_rng(1)
  for _ in range(3):
    gw, gb = rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=2).astype(np.float32)
    lin.weight.grad, lin.bias.grad = torch.from_numpy(gw), torch.from_numpy(gb)
    opt.step()
    updates, state = tx.update({"kernel": jnp.asarray(gw.T), "bias": jnp.asarray(gb)},
                               state, params)
    params = jax.tree.map(jnp.add, params, updates)
  np.testing.assert_allclose(lin.weight.detach().numpy().T, params["kernel"], rtol=1e-5)
  np.testing.assert_allclose(lin.bias.detach().numpy(), params["bias"], rtol=1e-5)
