"""Convolutions on XLA:CPU: the two rewrites `conv_general_dilated` applies where they measure faster.

Every model's convolution goes through `conv_general_dilated` (passed to `nn.Conv` by
`layers.torch_conv`). On GPU and TPU it is `lax.conv_general_dilated` itself; on CPU it computes
the small-map convolutions as one matmul and splits large batches into static slices (see its
docstring and benchmarks/README.md for the measurements). `conv_settings` and the
`JAXCNN_CONV_*` environment variables override the choice.
"""

import contextlib
import dataclasses
import math
import os
import pathlib

from functools import partial

import jax
import jax.numpy as jnp

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
