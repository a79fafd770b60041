"""LeNet-5 as in PyTorch's CIFAR-10 tutorial: conv 6/16 5x5 valid, 2x2 max-pool, fc 120-84.

The first fully connected layer takes whatever the convolutions leave (16*5*5 at 32x32,
16*4*4 at 28x28), so no `Linear(16*5*5, ...)` needs counting by hand. Init is torch's default
(U(±1/sqrt(fan_in)) for weights and biases), as the tutorial does not re-initialise.
"""

from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.models.layers import (Window, check_input, max_pool, torch_conv,
                                  torch_default_bias_init, torch_default_kernel_init)

# conv 5x5 valid, pool 2, conv 5x5 valid, pool 2 -> needs >= 16x16.
WINDOWS = (Window(5), Window(2, 2), Window(5), Window(2, 2))


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and max-pooling; `train` is accepted for the common interface."""

    num_classes: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        check_input(self, x, WINDOWS)
        conv = torch_conv(self, use_bias=True, kernel_init=torch_default_kernel_init)
        for i, features in enumerate((6, 16), start=1):
            bias_init = torch_default_bias_init(x.shape[-1] * 5 * 5)
            x = conv(features, (5, 5), bias_init=bias_init, name=f"conv{i}")(x)
            x = max_pool(nn.relu(x), 2, 2)
        x = x.reshape(x.shape[0], -1)
        dense = partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype,
                        kernel_init=torch_default_kernel_init)
        for i, features in enumerate((120, 84), start=1):
            bias_init = torch_default_bias_init(x.shape[-1])
            x = nn.relu(dense(features, bias_init=bias_init, name=f"fc{i}")(x))
        bias_init = torch_default_bias_init(x.shape[-1])
        x = dense(self.num_classes, bias_init=bias_init, name="fc")(x)
        return x.astype(jnp.float32)
