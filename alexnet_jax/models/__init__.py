"""Network definitions: the AlexNet module, its towers, LRN and pooling."""

from alexnet_jax.models.alexnet import AlexNet, ModelSpec, count_params

__all__ = ["AlexNet", "ModelSpec", "count_params"]
