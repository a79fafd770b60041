"""He et al.'s CIFAR ResNets (depth 6n+2): 3x3 stem, three stages of 16-32-64 channels.

The shortcut is option A of the paper, as the tutorial's `IdentityPadding`: subsample by the
stride and append zero channels, so shortcuts have no parameters (ResNet-20: 269,722 at 10
classes). Global average pooling replaces the tutorial's AvgPool2d(8), which is the same on
32x32 inputs and works at any size. Init as resnet.py (Kaiming-normal fan-out convs).
"""

from functools import partial

import jax
import jax.numpy as jnp

from jaxcnn.models.layers import ModuleDef
from jaxcnn.models.resnet import BasicBlock, ResNet


def zero_pad_shortcut(x: jax.Array, features: int, strides: int, conv: ModuleDef,
                      norm: ModuleDef) -> jax.Array:
    """Option A: x[:, ::s, ::s] (torch's MaxPool2d(1, s)) with zero channels appended."""
    del conv, norm  # parameter-free by design
    x = x[:, ::strides, ::strides, :]
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, features - x.shape[-1])))


CifarResNet = partial(ResNet, block_cls=BasicBlock, stage_widths=(16, 32, 64), stem="cifar",
                      shortcut=zero_pad_shortcut)
ResNet20 = partial(CifarResNet, stage_sizes=(3, 3, 3))
ResNet32 = partial(CifarResNet, stage_sizes=(5, 5, 5))
ResNet44 = partial(CifarResNet, stage_sizes=(7, 7, 7))
ResNet56 = partial(CifarResNet, stage_sizes=(9, 9, 9))
ResNet110 = partial(CifarResNet, stage_sizes=(18, 18, 18))
