"""alexnet-jax: a faithful, ablation-friendly JAX/Flax reproduction of AlexNet (2012)."""
