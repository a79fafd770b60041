"""Pieces shared by every model family, with PyTorch's numerics.

Each family builds its convolutions and norms from `torch_conv` / `torch_norm` once per call,
so dtype, param_dtype and train mode are set in one place (as in Flax's imagenet example).
Padding is always explicit and symmetric: Flax's 'SAME' pads the bottom/right more for even
inputs with stride 2, torch does not.
"""

import contextlib
import dataclasses
import math
import os
import pathlib
from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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


@dataclasses.dataclass
class ConvSettings:
    """How `conv_general_dilated` computes on XLA:CPU (other platforms always get one call).

    batch_chunk: "auto" (slices sized by `cpu_batch_chunk`), 0 (never slice) or N (slices of at
    most N images, as many as divide the batch evenly). small_map: compute maps smaller than the kernel as one matmul. Read when a step is
    traced, so set them before the step is built and compiled.
    """

    batch_chunk: int | str = "auto"
    small_map: bool = True


def _env_settings() -> ConvSettings:
    return ConvSettings(
        batch_chunk=_batch_chunk_value(os.environ.get("JAXCNN_CONV_BATCH_CHUNK", "auto"),
                                       "JAXCNN_CONV_BATCH_CHUNK"),
        small_map=_switch_value(os.environ.get("JAXCNN_CONV_SMALL_MAP", "auto"), "JAXCNN_CONV_SMALL_MAP"))


def _batch_chunk_value(value, name: str) -> int | str:
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text.isdigit():
        return int(text)
    raise ValueError(f"{name}={value!r}: expected 'auto', 0 (never slice the batch) or a "
                     "positive number of images per slice")


def _switch_value(value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("auto", "off"):
        return text == "auto"
    raise ValueError(f"{name}={value!r}: expected 'auto' (on CPU) or 'off'")


_settings = _env_settings()


@contextlib.contextmanager
def conv_settings(*, batch_chunk: int | str | None = None, small_map: bool | str | None = None):
    """Override `ConvSettings` for the steps traced inside the block (tests, A/B benchmarks)."""
    global _settings
    previous = _settings
    _settings = dataclasses.replace(
        previous,
        **({} if batch_chunk is None else {"batch_chunk": _batch_chunk_value(batch_chunk, "batch_chunk")}),
        **({} if small_map is None else {"small_map": _switch_value(small_map, "small_map")}))
    try:
        yield _settings
    finally:
        _settings = previous


def _l2_cache_bytes(default: int = 1 << 20) -> int:
    """The first CPU's per-core L2 cache (Linux sysfs), else 1 MiB (the machine the rule was fit on)."""
    try:
        size = pathlib.Path("/sys/devices/system/cpu/cpu0/cache/index2/size").read_text().strip()
        return int(size[:-1]) << {"K": 10, "M": 20}[size[-1]]
    except (OSError, ValueError, KeyError, IndexError):
        return default


L2_CACHE_BYTES = _l2_cache_bytes()


def cpu_batch_chunk(lhs_shape, out_shape, itemsize: int = 4, kernel_pixels: int = 9) -> int | None:
    """Images per slice for an XLA:CPU convolution of NHWC `lhs_shape` into `out_shape` (H, W, C),
    or None for one call.

    Fit to `python benchmarks/conv_chunk.py` (3x3 convs, fwd + input grad + weight grad, ms, A/B
    medians on a 2-core AVX-512 EPYC with 1 MiB L2; full grid in benchmarks/README.md):

    | B x map x C in/out | one call | slices (best)  | rule's slice |
    |---|---|---|---|
    | 128 x 32x32 x 16   | 49.1     | 45.0 (64)      | one call     |
    | 128 x 16x16 x 32   | 53.5     | 31.7 (32)      | 16: 33.4     |
    | 128 x 8x8 x 64     | 46.3     | 24.1 (32)      | 32: 24.1     |
    | 32 x 8x8 x 64      | 7.0      | 5.6 (16)       | 16: 5.6      |
    | 32 x 32x32 x 16    | 8.2      | 10.4 (8)       | one call     |
    | 128 x 4x4 x 512    | 782      | 740 (64)       | one call     |

    Rule: slice only output maps of at most 16x16 whose kernel fits in L2 (large maps and the
    256-512-channel kernels gained nothing or lost); the slice is the largest power of two whose
    input + output activations fit in L2 (`L2_CACHE_BYTES`), at least 8 images, and a batch that
    is not at least two slices stays one call. The weight gradient gains most (2.5-2.7x at batch
    128 on 8-16 px maps): it contracts over batch x pixels, and slices cut that contraction.
    """
    height, width, cin = lhs_shape[1:]
    if out_shape[0] * out_shape[1] > 256 or kernel_pixels * cin * out_shape[-1] * itemsize > L2_CACHE_BYTES:
        return None
    per_image = (height * width * cin + math.prod(out_shape)) * itemsize
    chunk = max(8, 1 << max(0, (L2_CACHE_BYTES // per_image).bit_length() - 1))
    return chunk if 2 * chunk <= lhs_shape[0] else None


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None,
                         preferred_element_type=None):
    """`lax.conv_general_dilated` (NHWC, HWIO), with two rewrites for XLA:CPU where they measure faster.

    Both are chosen per platform when the step is lowered (`jax.lax.platform_dependent`), so a
    GPU or TPU always gets the one convolution XLA was given; both are the same sum of products.

    - Small maps (`small_map_matmul`): when the input or output map has fewer pixels than the
      kernel, XLA's algebraic simplifier swaps the operands and XLA:CPU runs the swapped form 20-40x
      slower; there the convolution is one matmul of the k*k shifted windows.
    - Batch slices (`cpu_batch_chunk`): on maps of 16x16 and smaller, XLA:CPU's convolutions, above
      all the weight gradient, run up to 2x faster per image on static slices of the batch than in
      one call at batch 64-256; there the slices are computed and concatenated.

    `conv_settings` / JAXCNN_CONV_BATCH_CHUNK / JAXCNN_CONV_SMALL_MAP override both.
    """
    def one_call(lhs, rhs):
        return jax.lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, precision=precision, preferred_element_type=preferred_element_type)

    plain = (feature_group_count == 1
             and all(d == 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))))
    if not plain:
        return one_call(lhs, rhs)
    spatial, kernel = lhs.shape[1:-1], rhs.shape[:-2]
    if isinstance(padding, str):  # flax passes "VALID" / "SAME" through
        padding = jax.lax.padtype_to_pads(spatial, kernel, window_strides, padding)
    out = tuple((n + lo + hi - k) // s + 1
                for n, (lo, hi), k, s in zip(spatial, padding, kernel, window_strides))
    if _settings.small_map and min(math.prod(spatial), math.prod(out)) < math.prod(kernel):
        cpu = partial(small_map_matmul, window_strides=window_strides, padding=padding, out=out,
                      precision=precision, preferred_element_type=preferred_element_type)
    elif not isinstance(lhs.shape[0], int):  # a symbolic batch (jax.export): no static slices
        return one_call(lhs, rhs)
    else:
        chunk = _settings.batch_chunk
        if chunk == "auto":
            chunk = cpu_batch_chunk(lhs.shape, out + (rhs.shape[-1],), lhs.dtype.itemsize, math.prod(kernel))
        slices = _slice_count(lhs.shape[0], chunk) if chunk else 1
        if slices == 1 or (_settings.batch_chunk == "auto" and 2 * lhs.shape[0] < slices * chunk):
            return one_call(lhs, rhs)  # auto: no slices of under half the rule's size (odd batches)
        cpu = partial(_in_batch_slices, one_call, slices=slices)
    return jax.lax.platform_dependent(lhs, rhs, cpu=cpu, default=one_call)


def small_map_matmul(lhs, rhs, *, window_strides, padding, out, precision=None,
                     preferred_element_type=None):
    """A convolution as one matmul of the k*k shifted windows of the padded input (NHWC, HWIO)."""
    x = jnp.pad(lhs, ((0, 0), *padding, (0, 0)))
    (kh, kw), (sh, sw), (oh, ow) = rhs.shape[:2], window_strides, out
    windows = [x[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw, :]
               for i in range(kh) for j in range(kw)]
    return jnp.dot(jnp.concatenate(windows, axis=-1), rhs.reshape(-1, rhs.shape[-1]),
                   precision=precision, preferred_element_type=preferred_element_type)


def _in_batch_slices(conv, lhs, rhs, *, slices: int):
    """`conv` over `slices` static, interleaved slices of the batch, put back in order.

    Slice k holds images k, k + slices, k + 2 * slices, ...: with the batch sharded in blocks over
    devices, each slice stays spread over all of them, so no image moves between devices
    (contiguous slices would each sit on one device). Convolution is per example, so the values
    are those of one call; the kernel's gradient sums the slices'. Static slices, not `lax.map`:
    the backward of a scan over slices measured 10x slower.
    """
    batch = lhs.shape[0]
    grouped = lhs.reshape(batch // slices, slices, *lhs.shape[1:])
    outs = [conv(grouped[:, k], rhs) for k in range(slices)]
    return jnp.stack(outs, axis=1).reshape(batch, *outs[0].shape[1:])


def _slice_count(batch: int, chunk: int) -> int:
    """The fewest slices of at most `chunk` images that divide `batch` evenly."""
    return next(n for n in range(-(-batch // chunk), batch + 1) if batch % n == 0)


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


def check_input(module: nn.Module, x: jax.Array, windows: Sequence[Window]) -> None:
    """Raise a clear ValueError for a non-NHWC input or one too small for `windows`."""
    name = module.name or type(module).__name__
    if x.ndim != 4:
        raise ValueError(f"{name} expects a batch of NHWC images (B, H, W, C); got shape {x.shape}")
    height, width = x.shape[1:3]
    if not (_fits(height, windows) and _fits(width, windows)):
        side = minimum_input_size(windows)
        raise ValueError(
            f"{name} needs inputs of at least {side}x{side} pixels (its strides and pooling "
            f"reduce anything smaller to nothing); got {height}x{width}")
