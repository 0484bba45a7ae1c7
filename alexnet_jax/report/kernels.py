r"""Figure 3 of the paper: the first conv layer's kernels of each tower, as an image grid.

    python -m alexnet_jax.report.kernels runs/fmnist_paper_ablations/full.s0 [--step=N] [--out=fig3.png]

Reads the run's config.json and its latest (or --step) checkpoint through
`alexnet_jax.checkpoint`, and writes `<run>/report/figure3.png` (and .svg). The paper's
Figure 3 shows the 48 kernels of GPU 1 (mostly colour-agnostic) above the 48 of GPU 2 (mostly
colour-specific); here each tower gets its own panel, each kernel scaled to its own range.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

from alexnet_jax.report import plots


def first_conv(params: dict) -> tuple[str, np.ndarray]:
  names = sorted((k for k in params if k.startswith("conv")), key=lambda k: int(k[4:]))
  if not names:
    raise ValueError("the checkpoint has no conv layer.")
  return names[0], np.asarray(params[names[0]]["kernel"])  # (towers, k, k, in, out per tower)


def kernel_grid(kernels: np.ndarray, cols: int | None = None, pad: int = 1) -> np.ndarray:
  """One tower's (k, k, in, out) kernels tiled into an image, each scaled to [0, 1] on its own
  (as the paper shows them: shapes, not magnitudes). Grey for one input channel, RGB for three."""
  k, _, cin, n = kernels.shape
  if cin not in (1, 3):
    raise ValueError(f"first-layer kernels with {cin} input channels cannot be drawn as images "
                     "(1 grey or 3 colour channels).")
  cols = cols or min(n, 16)  # Rows of 16, as the paper's strips of 48.
  rows = int(np.ceil(n / cols))
  grid = np.ones(((k + pad) * rows + pad, (k + pad) * cols + pad, cin))
  for i in range(n):
    w = kernels[..., i]
    lo, hi = w.min(), w.max()
    w = (w - lo) / (hi - lo) if hi > lo else np.full_like(w, 0.5)
    r, c = divmod(i, cols)
    grid[pad + r * (k + pad):pad + r * (k + pad) + k, pad + c * (k + pad):pad + c * (k + pad) + k] = w
  return grid[..., 0] if cin == 1 else grid


def plot_kernels(run: str | pathlib.Path, out: str | pathlib.Path | None = None, step: int | None = None):
  from alexnet_jax.evaluate import restore_params  # JAX and orbax load only to draw

  params, cfg, step = restore_params(run, step)
  name, kernels = first_conv(params)
  towers = kernels.shape[0]
  plt = plots._plt()
  grids = [kernel_grid(kernels[t]) for t in range(towers)]
  # Each panel's height follows its grid's aspect (a strip of 16 small kernels is ~8x wider than
  # tall), plus room for the titles; a fixed height left most of the page blank.
  width = 10.0
  panel = width * grids[0].shape[0] / grids[0].shape[1]
  fig, axes = plt.subplots(towers, 1, figsize=(width, towers * (panel + 0.45) + 0.5), squeeze=False)
  for t, ax in enumerate(axes[:, 0]):
    img = grids[t]
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(f"tower {t + 1}: {kernels.shape[-1]} kernels of {kernels.shape[1]}×{kernels.shape[2]}"
                 f"×{kernels.shape[3]}", fontsize=10)
  ds = (cfg.get("data") or {}).get("dataset", "?")
  fig.suptitle(f"Figure 3: {name} kernels of {pathlib.Path(run).name} at step {step} ({ds})", fontsize=12)
  fig.tight_layout()
  out = pathlib.Path(out) if out else pathlib.Path(run) / "report" / "figure3.png"
  return plots.save(fig, out)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m alexnet_jax.report.kernels", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("run", help="a run workdir with config.json and checkpoints/")
  p.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
  p.add_argument("--out", help="PNG path (default: <run>/report/figure3.png); an SVG goes beside it")
  a = p.parse_args(argv)
  try:
    paths = plot_kernels(a.run, a.out, a.step)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print("Wrote " + ", ".join(map(str, paths)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
