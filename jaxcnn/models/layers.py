"""Pieces shared by every model family, with PyTorch's numerics.

Each family builds its convolutions and norms from `torch_conv` / `torch_norm` once per call,
so dtype, param_dtype and train mode are set in one place (as in Flax's imagenet example).
Padding is always explicit and symmetric: Flax's 'SAME' pads the bottom/right more for even
inputs with stride 2, torch does not.
"""

import dataclasses
import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.errors import UserError
from jaxcnn.models.cpu_conv import conv_general_dilated

ModuleDef = Any

# torch.nn.init.kaiming_normal_(mode="fan_out", nonlinearity="relu"): N(0, 2 / fan_out).
kaiming_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch.nn.Conv2d / nn.Linear default weight init, kaiming_uniform_(a=sqrt(5)): U(±1/sqrt(fan_in)).
torch_default_kernel_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def torch_default_bias_init(fan_in: int) -> nn.initializers.Initializer:
    """torch.nn.Conv2d / nn.Linear default bias init, U(±1/sqrt(fan_in)).

    A Flax bias initializer only sees the bias shape, so the fan-in is passed in.
    """
    bound = 1 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def symmetric(padding: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """torch's `padding=p`: p rows/columns on every side, whatever the stride."""
    return ((padding, padding), (padding, padding))


def torch_conv(module: nn.Module, *, use_bias: bool = False,
               kernel_init=kaiming_normal_fan_out) -> ModuleDef:
    """nn.Conv with the model's dtypes, no padding unless given, no bias (BN follows)."""
    return partial(nn.Conv, use_bias=use_bias, padding="VALID", kernel_init=kernel_init,
                   dtype=module.dtype, param_dtype=module.param_dtype,
                   conv_general_dilated=conv_general_dilated)


def torch_norm(module: nn.Module, train: bool, *, epsilon: float = 1e-5) -> ModuleDef:
    """BatchNorm in train mode (batch statistics, running averages updated) or eval mode."""
    return partial(BatchNorm, use_running_average=not train, epsilon=epsilon,
                   dtype=module.dtype, param_dtype=module.param_dtype)


class BatchNorm(nn.Module):
    """BatchNorm with torch.nn.BatchNorm{1,2}d semantics; variables named as flax's BatchNorm.

    Written here because flax.linen.BatchNorm updates the running variance with the biased batch
    variance, while torch uses the unbiased one (times n / (n - 1)); with small n (a BatchNorm1d
    head, the last 7x7 stage) that changes eval outputs. The batch itself is normalised with the
    biased variance, statistics are reduced in float32, and momentum follows flax's convention
    (0.9 here == torch's momentum=0.1).
    """

    use_running_average: bool | None = None
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Any = None
    param_dtype: Any = jnp.float32
    scale_init: nn.initializers.Initializer = nn.initializers.ones

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
        use_running_average = nn.merge_param(
            "use_running_average", self.use_running_average, use_running_average)
        features = x.shape[-1]
        scale = self.param("scale", self.scale_init, (features,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        running_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)

        x32 = x.astype(jnp.float32)
        if use_running_average:
            mean, var = running_mean.value, running_var.value
        else:
            count = x.size // features
            if count < 2:
                raise ValueError(
                    f"{self.path}: BatchNorm in training needs more than 1 value per channel, "
                    f"got input shape {x.shape} (as torch: use a larger batch or input)")
            axes = tuple(range(x.ndim - 1))
            mean = x32.mean(axes)
            var = jnp.square(x32 - mean).mean(axes)
            if not self.is_initializing():
                m = self.momentum
                running_mean.value = m * running_mean.value + (1 - m) * mean
                running_var.value = m * running_var.value + (1 - m) * var * count / (count - 1)
        y = (x32 - mean) * (scale * jax.lax.rsqrt(var + self.epsilon)) + bias
        return y.astype(self.dtype or x.dtype)


class ConvBNReLU(nn.Module):
    """conv -> BatchNorm -> ReLU with symmetric padding (torchvision's BasicConv2d)."""

    features: int
    kernel: int
    conv: ModuleDef
    norm: ModuleDef
    stride: int = 1
    padding: int = 0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s = self.kernel, self.stride
        x = self.conv(self.features, (k, k), (s, s), padding=symmetric(self.padding),
                      name="conv")(x)
        return nn.relu(self.norm(name="norm")(x))


def max_pool(x: jax.Array, kernel: int, stride: int, padding: int = 0,
             ceil_mode: bool = False) -> jax.Array:
    """torch.nn.MaxPool2d: -inf padding, and ceil_mode's extra partial window on the right."""
    pads = []
    for size in x.shape[1:3]:
        out = Window(kernel, stride, padding, ceil_mode).output_size(size)
        extra = max(0, (out - 1) * stride + kernel - (size + 2 * padding))
        pads.append((padding, padding + extra))
    return nn.max_pool(x, (kernel, kernel), (stride, stride), padding=pads)


def global_avg_pool(x: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, C): torch's AdaptiveAvgPool2d(1) + flatten."""
    return x.mean(axis=(1, 2))


def _adaptive_bins(size: int, out: int) -> np.ndarray:
    """(out, size) averaging matrix of torch's adaptive pool: bin i = [floor(i*size/out),
    ceil((i+1)*size/out)); bins may overlap or repeat when size is not a multiple of out."""
    weights = np.zeros((out, size), np.float32)
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        weights[i, start:end] = 1.0 / (end - start)
    return weights


def adaptive_avg_pool(x: jax.Array, output_size: tuple[int, int]) -> jax.Array:
    """torch.nn.AdaptiveAvgPool2d for NHWC input of any spatial size (exact bins)."""
    rows = jnp.asarray(_adaptive_bins(x.shape[1], output_size[0]), x.dtype)
    cols = jnp.asarray(_adaptive_bins(x.shape[2], output_size[1]), x.dtype)
    return jnp.einsum("ih,bhwc,jw->bijc", rows, x, cols)


@dataclasses.dataclass(frozen=True)
class Window:
    """A strided conv or pool along one spatial axis, with torch's output-size rule."""

    kernel: int
    stride: int = 1
    padding: int = 0
    ceil_mode: bool = False

    def output_size(self, size: int) -> int:
        span = size + 2 * self.padding - self.kernel
        out = (-(-span // self.stride) if self.ceil_mode else span // self.stride) + 1
        # torch drops a ceil-mode window that would start inside the right padding.
        if self.ceil_mode and (out - 1) * self.stride >= size + self.padding:
            out -= 1
        return out


def minimum_input_size(windows: Sequence[Window]) -> int:
    """Smallest side for which every window in the chain still produces >= 1 pixel."""
    size = 1
    while not _fits(size, windows):
        size += 1
    return size


def _fits(size: int, windows: Sequence[Window]) -> bool:
    for window in windows:
        size = window.output_size(size)
        if size < 1:
            return False
    return True


class InputSizeError(UserError, ValueError):
    """Images smaller than a model's minimum input size; the message names the minimum."""


def check_input(module: nn.Module, x: jax.Array, windows: Sequence[Window]) -> None:
    """Raise a clear ValueError for a non-NHWC input, and an `InputSizeError` (the user's choice
    of image size: a `UserError`) for one too small for `windows`."""
    name = module.name or type(module).__name__
    if x.ndim != 4:
        raise ValueError(f"{name} expects a batch of NHWC images (B, H, W, C); got shape {x.shape}")
    height, width = x.shape[1:3]
    if not (_fits(height, windows) and _fits(width, windows)):
        side = minimum_input_size(windows)
        raise InputSizeError(
            f"{name} needs inputs of at least {side}x{side} pixels (its strides and pooling "
            f"reduce anything smaller to nothing); got {height}x{width}")
