"""ResNet v1.5 as torchvision (stride on the bottleneck's 3x3), with an ImageNet or CIFAR stem.

stem="imagenet": 7x7/2 conv + 3x3/2 max-pool. stem="cifar": one 3x3/1 conv and no pool, for
32x32 inputs (ResNet-101 at 8 classes: 42,508,872 parameters). The same class, with zero-padding
shortcuts and 16-32-64 widths, gives He et al.'s CIFAR ResNets (cifar_resnet.py).

Init as torchvision: convs Kaiming-normal fan-out, BN scale 1 / bias 0, the classifier torch's
default U(±1/sqrt(fan_in)). `zero_init_residual=True` starts each block's last BN scale at 0
(off by default, as torchvision).
"""

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.models.layers import (ModuleDef, Window, check_input, global_avg_pool, max_pool,
                                  symmetric, torch_conv, torch_default_bias_init,
                                  torch_default_kernel_init, torch_norm)

STEMS = ("imagenet", "cifar")


def projection_shortcut(x: jax.Array, features: int, strides: int, conv: ModuleDef,
                        norm: ModuleDef) -> jax.Array:
    """torchvision's `downsample`: 1x1 conv with the block's stride, then BatchNorm."""
    x = conv(features, (1, 1), (strides, strides), name="downsample_conv")(x)
    return norm(name="downsample_norm")(x)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34 and the CIFAR ResNets)."""

    features: int
    conv: ModuleDef
    norm: ModuleDef
    shortcut: Callable[..., jax.Array]
    strides: int = 1
    zero_init_residual: bool = False
    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv(self.features, (3, 3), (self.strides, self.strides), padding=symmetric(1))(x)
        y = nn.relu(self.norm()(y))
        y = self.conv(self.features, (3, 3), padding=symmetric(1))(y)
        y = self.norm(scale_init=_last_scale_init(self.zero_init_residual))(y)
        return nn.relu(y + _residual(self, x))


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand x4 (ResNet-50/101/152)."""

    features: int
    conv: ModuleDef
    norm: ModuleDef
    shortcut: Callable[..., jax.Array]
    strides: int = 1
    zero_init_residual: bool = False
    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.relu(self.norm()(self.conv(self.features, (1, 1))(x)))
        y = self.conv(self.features, (3, 3), (self.strides, self.strides), padding=symmetric(1))(y)
        y = nn.relu(self.norm()(y))
        y = self.conv(self.features * self.expansion, (1, 1))(y)
        y = self.norm(scale_init=_last_scale_init(self.zero_init_residual))(y)
        return nn.relu(y + _residual(self, x))


def _last_scale_init(zero: bool) -> nn.initializers.Initializer:
    return nn.initializers.zeros if zero else nn.initializers.ones


def _residual(block: BasicBlock | Bottleneck, x: jax.Array) -> jax.Array:
    """The identity, or the block's shortcut where stride or width change (as torchvision)."""
    features = block.features * block.expansion
    if block.strides == 1 and x.shape[-1] == features:
        return x
    return block.shortcut(x, features, block.strides, block.conv, block.norm)


class ResNet(nn.Module):
    """ResNet: `stage_sizes` blocks per stage; stage i > 0 starts with a stride-2 block."""

    stage_sizes: Sequence[int]
    block_cls: ModuleDef
    num_classes: int
    stage_widths: Sequence[int] = (64, 128, 256, 512)
    stem: str = "imagenet"
    shortcut: Callable[..., jax.Array] = projection_shortcut
    zero_init_residual: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        if self.stem not in STEMS:
            raise ValueError(f"ResNet stem must be one of {STEMS}; got {self.stem!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        stem_windows = [Window(7, 2, 3), Window(3, 2, 1)] if self.stem == "imagenet" else []
        check_input(self, x, stem_windows + [Window(3, 2, 1)] * (len(self.stage_sizes) - 1))
        conv, norm = torch_conv(self), torch_norm(self, train)

        if self.stem == "imagenet":
            x = conv(self.stage_widths[0], (7, 7), (2, 2), padding=symmetric(3),
                     name="stem_conv")(x)
            x = max_pool(nn.relu(norm(name="stem_norm")(x)), 3, 2, padding=1)
        else:
            x = conv(self.stage_widths[0], (3, 3), padding=symmetric(1), name="stem_conv")(x)
            x = nn.relu(norm(name="stem_norm")(x))

        for i, (num_blocks, features) in enumerate(zip(self.stage_sizes, self.stage_widths)):
            for j in range(num_blocks):
                x = self.block_cls(features, conv=conv, norm=norm, shortcut=self.shortcut,
                                   strides=2 if i > 0 and j == 0 else 1,
                                   zero_init_residual=self.zero_init_residual,
                                   name=f"stage{i + 1}_block{j + 1}")(x)

        x = global_avg_pool(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                     kernel_init=torch_default_kernel_init,
                     bias_init=torch_default_bias_init(x.shape[-1]), name="fc")(x)
        return x.astype(jnp.float32)


ResNet18 = partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
ResNet34 = partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
ResNet50 = partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
ResNet101 = partial(ResNet, stage_sizes=(3, 4, 23, 3), block_cls=Bottleneck)
ResNet152 = partial(ResNet, stage_sizes=(3, 8, 36, 3), block_cls=Bottleneck)
