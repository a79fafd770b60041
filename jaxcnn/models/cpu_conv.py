"""Convolutions on the CPU: oneDNN through the XLA FFI, or XLA's with two rewrites where they pay.

Every model's convolution goes through `conv_general_dilated` (passed to `nn.Conv` by
`layers.torch_conv`), the one place that chooses how a convolution runs. On GPU and TPU it is
`lax.conv_general_dilated` itself. On CPU it is jaxcnn's oneDNN extension (`jaxcnn.onednn`) where
that builds and loads; otherwise XLA's convolution, with the small-map convolutions as one matmul
and the kernel gradient of large batches in static slices of the batch (see the docstrings and
benchmarks/README.md for the measurements). `conv_settings` and the `JAXCNN_CPU_CONV` /
`JAXCNN_CONV_*` environment variables override the choice.
"""

import contextlib
import dataclasses
import functools
import math
import os
import pathlib

from functools import partial

import jax
import jax.numpy as jnp

from jaxcnn.onednn.library import check_mode, describe, extension

@dataclasses.dataclass
class ConvSettings:
    """How `conv_general_dilated` computes on the CPU (other platforms always get one call).

    backend: "auto" (oneDNN where its extension is available, else XLA, said once), "onednn"
    (oneDNN or an error saying why not) or "xla". small_map: compute maps smaller than the kernel
    as one matmul (on either backend). batch_chunk, on XLA's convolution only: the kernel
    gradient's batch slices: "auto" (sized by `cpu_batch_chunk`), 0 (one call) or N (slices of at
    most N images, as many as divide the batch evenly). Read when a step is traced, so set them
    before the step is built and compiled.
    """

    batch_chunk: int | str = "auto"
    small_map: bool = True
    backend: str = "auto"


def _env_settings() -> ConvSettings:
    return ConvSettings(
        batch_chunk=_batch_chunk_value(os.environ.get("JAXCNN_CONV_BATCH_CHUNK", "auto"),
                                       "JAXCNN_CONV_BATCH_CHUNK"),
        small_map=_switch_value(os.environ.get("JAXCNN_CONV_SMALL_MAP", "auto"), "JAXCNN_CONV_SMALL_MAP"),
        backend=check_mode(os.environ.get("JAXCNN_CPU_CONV", "auto")))


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


def cpu_backend() -> str:
    """One line for logs and benchmark records: which convolution the CPU runs now, and why."""
    return describe(_settings.backend)


@contextlib.contextmanager
def conv_settings(*, batch_chunk: int | str | None = None, small_map: bool | str | None = None,
                  backend: str | None = None):
    """Override `ConvSettings` for the steps traced inside the block (tests, A/B benchmarks, export)."""
    global _settings
    previous = _settings
    _settings = dataclasses.replace(
        previous,
        **({} if batch_chunk is None else {"batch_chunk": _batch_chunk_value(batch_chunk, "batch_chunk")}),
        **({} if small_map is None else {"small_map": _switch_value(small_map, "small_map")}),
        **({} if backend is None else {"backend": check_mode(backend, "backend")}))
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


MIN_SLICE = 8  # images: the smallest kernel-gradient slice (`cpu_batch_chunk`)


def cpu_batch_chunk(lhs_shape, out_shape, kernel_shape, itemsize: int = 4) -> int | None:
    """Images per slice of an XLA:CPU convolution's kernel gradient, or None for one call.

    `lhs_shape` is the NHWC input, `out_shape` the output's (H, W, C), `kernel_shape` HWIO. Fit to
    `python benchmarks/conv_chunk.py` (weight gradient only, ms, one call / slices of 8 / the best
    slice, A/B medians on a quiet 2-core AVX-512 EPYC; full grid in benchmarks/README.md):

    | B x map x C in/out | one call | slices of 8 | best slice   | rule's slice |
    |---|---|---|---|---|
    | 128 x 32x32 x 16   | 10.4     | 7.5         | 8: 7.5       | 8            |
    | 128 x 16x16 x 32   | 9.8      | 6.9         | 4: 6.2       | 8            |
    | 128 x 16x16 x 128  | 108.5    | 61.3        | 8: 61.3      | 8            |
    | 128 x 8x8 x 256    | 88.3     | 62.6        | 16: 53.5     | 16           |
    | 128 x 4x4 x 512    | 58.9     | 118         | 64: 53.1     | one call     |
    | 32 x 4x4 x 512     | 13.6     | 40.0        | one call     | one call     |

    Rule: slices of 8 images (4 lost up to 2x on 32x32 maps); doubled until a slice's input and
    output activations are at least half the kernel's bytes, since every slice writes a kernel-sized
    gradient that the slices then sum (the 256-512-channel rows); a batch that is not at least two
    such slices stays one call. The forward and input-gradient convolutions gained little from
    slices on the same grid (1.00-1.14x on the ResNet shapes, up to 1.3x on two VGG shapes), so
    they stay one call.
    """
    per_image = (math.prod(lhs_shape[1:]) + math.prod(out_shape)) * itemsize
    kernel_bytes = math.prod(kernel_shape) * itemsize
    chunk = MIN_SLICE
    while 2 * chunk * per_image < kernel_bytes:
        chunk *= 2
    return chunk if 2 * chunk <= lhs_shape[0] else None


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None,
                         preferred_element_type=None):
    """`lax.conv_general_dilated` (NHWC, HWIO), on oneDNN or with two rewrites on XLA:CPU.

    The CPU's choice is made per platform when the step is lowered (`jax.lax.platform_dependent`),
    so a GPU or TPU always gets the one convolution XLA was given; all are the same sum of products.

    - Small maps (`small_map_matmul`): when the input or output map has fewer pixels than the
      kernel, XLA's algebraic simplifier swaps the operands and XLA:CPU runs the swapped form 20-40x
      slower; there the convolution is one matmul of the k*k shifted windows (also faster than
      oneDNN there: ResNet-18 at 32 px trains 1.4-1.5x faster so than with all on oneDNN).
    - oneDNN (`jaxcnn.onednn.conv2d`, unless `backend` is "xla" or the extension is unavailable):
      forward, input gradient and kernel gradient each one oneDNN primitive, 2-5x faster than
      XLA:CPU's kernels (benchmarks/README.md). Plain float32 convolutions (bfloat16 where the CPU
      has it) with concrete shapes; dilated, grouped, mixed-dtype and symbolic-shape ones (as in
      `jax.export`) stay on XLA.

    Otherwise, on XLA's convolution:

    - Kernel gradient in batch slices (`cpu_batch_chunk`, `kernel_gradient_in_slices`): XLA:CPU
      computes the kernel's gradient as one convolution contracting batch x pixels, which gets
      slower per image as the batch grows (on 32x32 maps 0.06-0.08 ms per image at batch 32, 0.14
      at 256); summed over static slices of the batch it runs 1.2-1.9x faster at batch 64-256.
      The forward pass and the input gradient stay one call.

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
    small = _settings.small_map and min(math.prod(spatial), math.prod(out)) < math.prod(kernel)
    onednn = None if small else _onednn_conv(lhs, rhs, window_strides, padding, dimension_numbers,
                                              precision, preferred_element_type)
    if onednn is not None:
        return jax.lax.platform_dependent(lhs, rhs, cpu=onednn, default=one_call)
    if small:
        cpu = partial(small_map_matmul, window_strides=window_strides, padding=padding, out=out,
                      precision=precision, preferred_element_type=preferred_element_type)
    elif not isinstance(lhs.shape[0], int):  # a symbolic batch (jax.export): no static slices
        return one_call(lhs, rhs)
    else:
        chunk = _settings.batch_chunk
        if chunk == "auto":
            chunk = cpu_batch_chunk(lhs.shape, out + (rhs.shape[-1],), rhs.shape, lhs.dtype.itemsize)
        slices = _slice_count(lhs.shape[0], chunk) if chunk else 1
        if slices == 1 or (_settings.batch_chunk == "auto" and 2 * lhs.shape[0] < slices * chunk):
            return one_call(lhs, rhs)  # auto: no slices of under half the rule's size (odd batches)
        cpu = kernel_gradient_in_slices(one_call, slices)
    return jax.lax.platform_dependent(lhs, rhs, cpu=cpu, default=one_call)


_NHWC = ("NHWC", "HWIO", "NHWC")


def _onednn_conv(lhs, rhs, window_strides, padding, dimension_numbers, precision, preferred_element_type):
    """`conv2d(lhs, rhs)` on oneDNN for this convolution, or None where it stays on XLA (also on
    a machine whose default backend is a GPU or TPU: its CPU branch would never run)."""
    from jaxcnn.onednn.conv import conv2d

    dtype = lhs.dtype
    if (_settings.backend == "xla" or jax.default_backend() != "cpu" or lhs.ndim != 4 or rhs.dtype != dtype or precision is not None
            or preferred_element_type not in (None, dtype)
            or not all(isinstance(d, int) for d in (*lhs.shape, *rhs.shape))
            or jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
            != jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)):
        return None
    loaded = extension(_settings.backend)
    if loaded is None or not loaded.supports(dtype):
        return None
    geometry = (*window_strides, *padding[0], *padding[1])
    return lambda lhs, rhs: conv2d(lhs, rhs, tuple(int(v) for v in geometry))


def small_map_matmul(lhs, rhs, *, window_strides, padding, out, precision=None,
                     preferred_element_type=None):
    """A convolution as one matmul of the k*k shifted windows of the padded input (NHWC, HWIO)."""
    x = jnp.pad(lhs, ((0, 0), *padding, (0, 0)))
    (kh, kw), (sh, sw), (oh, ow) = rhs.shape[:2], window_strides, out
    windows = [x[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw, :]
               for i in range(kh) for j in range(kw)]
    return jnp.dot(jnp.concatenate(windows, axis=-1), rhs.reshape(-1, rhs.shape[-1]),
                   precision=precision, preferred_element_type=preferred_element_type)


def kernel_gradient_in_slices(conv, slices: int):
    """`conv(lhs, rhs)` in one call, differentiated so that the kernel's gradient sums `slices`
    static, interleaved slices of the batch.

    A custom JVP, not a VJP: the tangent in the kernel is written as the slices' convolutions put
    back in order, so its transpose (what reverse mode computes) is the sum of the slices' kernel
    gradients, while the forward pass and the input gradient stay single convolutions, and
    forward-mode differentiation keeps working. Symbolic zero tangents (a frozen kernel, the
    image) are skipped, so no convolution of zeros is computed.

    Slice k holds images k, k + slices, k + 2 * slices, ...: with the batch sharded in blocks over
    devices, each slice stays spread over all of them, so no image moves between devices
    (contiguous slices would each sit on one device). Static slices, not `lax.map`: the backward
    of a scan over slices measured 10x slower.
    """
    @jax.custom_jvp
    def convolution(lhs, rhs):
        return conv(lhs, rhs)

    def tangent_in_rhs(lhs, rhs_tangent):
        batch = lhs.shape[0]
        grouped = lhs.reshape(batch // slices, slices, *lhs.shape[1:])
        outs = [conv(grouped[:, k], rhs_tangent) for k in range(slices)]
        return jnp.stack(outs, axis=1).reshape(batch, *outs[0].shape[1:])

    @partial(convolution.defjvp, symbolic_zeros=True)
    def jvp(primals, tangents):
        (lhs, rhs), (lhs_tangent, rhs_tangent) = primals, tangents
        out = conv(lhs, rhs)
        parts = [conv(lhs_tangent, rhs)] if not _is_zero(lhs_tangent) else []
        parts += [tangent_in_rhs(lhs, rhs_tangent)] if not _is_zero(rhs_tangent) else []
        if not parts:
            return out, jax.custom_derivatives.SymbolicZero(jax.typeof(out).to_tangent_aval())
        return out, functools.reduce(jnp.add, parts)

    return convolution


def _is_zero(tangent) -> bool:
    return isinstance(tangent, jax.custom_derivatives.SymbolicZero)


def _slice_count(batch: int, chunk: int) -> int:
    """The fewest slices of at most `chunk` images that divide `batch` evenly."""
    return next(n for n in range(-(-batch // chunk), batch + 1) if batch % n == 0)
