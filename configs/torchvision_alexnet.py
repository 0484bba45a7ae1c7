r"""torchvision's AlexNet (`alexnet-owt-7be5be79.pth`) expressed with this repo's model switches.

torchvision's net is the "one weird trick" variant (Krizhevsky, 2014), not the paper's: one
tower, 64-192-384-256-256 kernels, conv1 padded by 2, no LRN, and torchvision's ImageNet
preprocessing (shorter side 256, central 224, channel mean/std). Feature maps for 224px:
55 -> 27 -> 27 -> 13 -> 13 -> 13 -> 13 -> 6, so its AdaptiveAvgPool2d(6) is the identity.

Import the weights and evaluate them on ImageNet val (center crop and 10 crops):

    python -m alexnet_jax.pretrained --torch_weights=alexnet-owt-7be5be79.pth \
        --workdir=runs/tv_alexnet --config.data.data_dir=/path/to/tensorflow_datasets

Published (torchvision model zoo, center crop): 56.522% top-1 / 79.066% top-5 accuracy.
"""

from alexnet_jax import config as C

# torchvision normalises pixels in [0, 1]; ours are 0..255, so its mean and std scale by 255.
TORCHVISION_MEAN = tuple(255 * v for v in (0.485, 0.456, 0.406))
TORCHVISION_STD = tuple(255 * v for v in (0.229, 0.224, 0.225))


def get_config(arg=None):
  c = C.base_config()
  m = c.model
  m.num_classes = 1000
  m.input_size = 224
  m.towers = 1
  m.conv_features = (64, 192, 384, 256, 256)
  m.conv_kernels = (11, 5, 3, 3, 3)
  m.conv_strides = (4, 1, 1, 1, 1)
  m.conv_padding = (2, 2, 1, 1, 1)
  m.conv_layers = (1, 2, 3, 4, 5)
  m.cross_tower = ()
  m.lrn = False
  m.pool_after = (1, 2, 5)
  m.pool_window = 3
  m.pool_stride = 2
  m.fc_features = (4096, 4096)
  m.activation = "relu"
  m.init = "he"  # Only for fine-tuning from scratch layers; imported weights replace it.

  d = c.data
  d.dataset = "imagenet2012"
  d.val_split = "validation"
  d.image_size = 256
  d.crop_size = 224
  d.normalize = "channel"
  d.channel_mean = TORCHVISION_MEAN
  d.channel_std = TORCHVISION_STD
  d.pca_noise = 0.0  # torchvision trained without it; only matters if fine-tuning.
  d.eval_crops = "center"
  c.eval_batch_size = 128

  C.apply_variant(c, arg)
  return c
