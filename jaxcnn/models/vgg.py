"""VGG with BatchNorm (torchvision's vgg*_bn features), with a choice of head.

head="gap" (default): global average pool -> Dense(64) -> BN -> ReLU -> Dense(classes), the
head that took the cat-and-dog tutorial from 83 % to 95 % (a 512x64 layer instead of 102M
parameters of 4096-wide layers). head="classic": torchvision's adaptive average pool to 7x7 ->
4096 -> 4096 -> classes with dropout 0.5, so vgg*_bn parameter counts match exactly.

As torchvision, the convolutions keep their bias although BatchNorm follows (it is part of
the reference parameter count). Init as torchvision: convs Kaiming-normal fan-out with zero
bias, every Dense N(0, 0.01) with zero bias (the GAP head's layers too), BN scale 1, bias 0.
"""

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.models.layers import (ConvBNReLU, Window, adaptive_avg_pool, check_input,
                                  global_avg_pool, max_pool, torch_conv, torch_norm)

HEADS = ("gap", "classic")


class VGG(nn.Module):
    """VGG-BN: `stages` lists the conv widths of each stage; a 2x2 max-pool ends each stage."""

    stages: Sequence[Sequence[int]]
    num_classes: int
    head: str = "gap"
    hidden_features: int = 64       # width of the GAP head's hidden layer
    dropout_rate: float = 0.5       # classic head only
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"VGG head must be one of {HEADS}; got {self.head!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        check_input(self, x, [Window(2, 2)] * len(self.stages))
        norm = torch_norm(self, train)
        block = partial(ConvBNReLU, kernel=3, padding=1, norm=norm,
                        conv=torch_conv(self, use_bias=True))
        for i, widths in enumerate(self.stages):
            for j, features in enumerate(widths):
                x = block(features, name=f"stage{i + 1}_conv{j + 1}")(x)
            x = max_pool(x, 2, 2)

        dense = partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype,
                        kernel_init=nn.initializers.normal(0.01))
        if self.head == "gap":
            x = global_avg_pool(x)
            x = nn.relu(norm(name="fc1_norm")(dense(self.hidden_features, name="fc1")(x)))
        else:
            x = adaptive_avg_pool(x, (7, 7)).reshape(x.shape[0], -1)
            for i in (1, 2):
                x = nn.relu(dense(4096, name=f"fc{i}")(x))
                x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return dense(self.num_classes, name="fc")(x).astype(jnp.float32)


VGG11 = partial(VGG, stages=((64,), (128,), (256, 256), (512, 512), (512, 512)))
VGG13 = partial(VGG, stages=((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)))
VGG16 = partial(VGG, stages=((64,) * 2, (128,) * 2, (256,) * 3, (512,) * 3, (512,) * 3))
VGG19 = partial(VGG, stages=((64,) * 2, (128,) * 2, (256,) * 4, (512,) * 4, (512,) * 4))
# The cat-and-dog tutorial's "VGG16": its third stage ends in a 512-wide conv (256, 256, 512),
# which adds 1,770,240 parameters (16,526,466 with the GAP head at 2 classes). Kept so the
# tutorial's model can be reproduced exactly; `vgg16` is the paper's / torchvision's.
VGG16_CATDOG = partial(VGG, stages=((64,) * 2, (128,) * 2, (256, 256, 512), (512,) * 3, (512,) * 3))
