"""An independent PyTorch AlexNet and paper-SGD step, the yardstick for the JAX step.

Written the way a PyTorch user would: NCHW, `groups=2` convs for the tower-local
layers, `F.local_response_norm` per tower, `nn.Dropout`, and the paper's update rule
(section 5 of the paper, the same as `alexnet_jax.optim.paper_sgd`) with foreach ops.
Built from the same `config.model`, so both frameworks train the same network;
tests/test_torch_reference.py loads the JAX params into it and compares logits,
gradients and one update.

torch is an optional extra (`pip install alexnet-jax[torch]`); importing this module
without it raises ImportError.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class TorchAlexNet(nn.Module):

  def __init__(self, m):
    super().__init__()
    self.m = m
    t = m.towers
    self.convs = nn.ModuleDict()
    channels, shared = 3, True
    size = m.input_size
    for i in range(1, len(m.conv_features) + 1):
      if i in m.conv_layers:
        k, s, p = m.conv_kernels[i - 1], m.conv_strides[i - 1], m.conv_padding[i - 1]
        # A grouped conv is exactly "each tower sees only its own channels".
        groups = 1 if (shared or i in m.cross_tower) else t
        self.convs[f"conv{i}"] = nn.Conv2d(channels, m.conv_features[i - 1], k, s, p,
                                           groups=groups)
        channels, shared = m.conv_features[i - 1], False
        size = (size + 2 * p - k) // s + 1
      if i in m.pool_after:
        size = (size - m.pool_window) // m.pool_stride + 1
    widths = [size * size * channels, *m.fc_features]
    self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
    self.fcs.append(nn.Linear(widths[-1], m.num_classes))
    self.drop = nn.Dropout(m.dropout)
    self.act = torch.relu if m.activation == "relu" else torch.tanh

  def lrn(self, x):
    m = self.m
    n, c, h, w = x.shape
    t = self.m.towers
    # LRN sums over channels of one tower only; torch's alpha is divided by `size`.
    y = F.local_response_norm(x.reshape(n * t, c // t, h, w), m.lrn_size,
                              alpha=m.lrn_alpha * m.lrn_size, beta=m.lrn_beta, k=m.lrn_k)
    return y.reshape(n, c, h, w)

  def forward(self, x):
    m = self.m
    for i in range(1, len(m.conv_features) + 1):
      if i in m.conv_layers:
        x = self.act(self.convs[f"conv{i}"](x))
      if m.lrn and i in m.lrn_after:
        x = self.lrn(x)
      if i in m.pool_after:
        x = F.max_pool2d(x, m.pool_window, m.pool_stride)
    x = torch.flatten(x, 1)
    for fc in self.fcs[:-1]:
      x = self.drop(self.act(fc(x)))
    return self.fcs[-1](x)


class PaperSGD:
  """v <- m v - wd lr w - lr g;  w <- w + v  (biases not decayed, as config default)."""

  def __init__(self, model, lr, momentum=0.9, weight_decay=5e-4, decay_biases=False):
    self.lr, self.momentum, self.wd = lr, momentum, weight_decay
    named = list(model.named_parameters())
    self.decayed = [p for n, p in named if decay_biases or not n.endswith("bias")]
    self.plain = [p for n, p in named if not (decay_biases or not n.endswith("bias"))]
    self.params = self.decayed + self.plain
    self.velocity = [torch.zeros_like(p) for p in self.params]

  @torch.no_grad()
  def step(self):
    grads = [p.grad for p in self.params]
    nd = len(self.decayed)
    if self.wd and nd:
      grads[:nd] = torch._foreach_add(grads[:nd], self.decayed, alpha=self.wd)
    torch._foreach_mul_(self.velocity, self.momentum)
    torch._foreach_add_(self.velocity, grads, alpha=-self.lr)
    torch._foreach_add_(self.params, self.velocity)


def make_train_step(model, opt):
  """step(images, labels) -> (loss sum, top-1 mistakes, top-5 mistakes), like the JAX step."""

  def step(images, labels):
    for p in opt.params:
      p.grad = None
    logits = model(images)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    opt.step()
    with torch.no_grad():
      top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
      hit = top == labels[:, None]
      return (loss.detach() * labels.shape[0], (~hit[:, 0]).sum(),
              (~hit.any(-1)).sum())

  return step


def load_jax_params(model: TorchAlexNet, params) -> None:
  """Copies a JAX params tree (stacked towers, NHWC flatten) into the torch model."""
  m = model.m

  def arr(x):
    return torch.from_numpy(np.asarray(x, dtype=np.float32).copy())

  with torch.no_grad():
    for name, conv in model.convs.items():
      k = np.asarray(params[name]["kernel"])  # (towers, kh, kw, cin, cout)
      k = np.concatenate(list(k), axis=-1)  # Towers' outputs side by side: (kh, kw, cin, C).
      conv.weight.copy_(arr(k.transpose(3, 2, 0, 1)))
      conv.bias.copy_(arr(np.concatenate(list(np.asarray(params[name]["bias"])))))
    for j, fc in enumerate(model.fcs):
      name = f"fc{6 + j}"
      k, b = np.asarray(params[name]["kernel"]), np.asarray(params[name]["bias"])
      if j < len(model.fcs) - 1:
        k, b = np.concatenate(list(k), axis=-1), np.concatenate(list(b))
      if j == 0:
        # JAX flattens (h, w, c); torch flattens (c, h, w).
        c = fc.in_features
        side = int(round((c / _channels(m)) ** 0.5))
        k = k.reshape(side, side, _channels(m), -1).transpose(2, 0, 1, 3).reshape(c, -1)
      fc.weight.copy_(arr(k.T))
      fc.bias.copy_(arr(b))


def _channels(m):
  return m.conv_features[max(m.conv_layers) - 1]
