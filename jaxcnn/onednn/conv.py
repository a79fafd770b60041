"""`conv2d`: a 2-D convolution (NHWC x HWIO) on oneDNN, differentiable and batch-sharded.

Three XLA FFI calls (`conv.cc`): the forward pass, the input gradient and the kernel gradient,
joined by a `jax.custom_vjp` (reverse mode, once; forward mode, `jax.jvp`, and gradients of
gradients need the `xla` backend). Under `jax.vmap` a mapped activation is folded into the batch;
a mapped kernel runs on lax. Each call is wrapped in `custom_partitioning`: under `jit` with the
batch sharded over a mesh (jaxcnn's data parallelism, or any user's), every device convolves its
own images and the kernel gradient is summed over the batch's mesh axes; without it XLA would
gather the whole batch onto every device. CPU only: `jaxcnn.models.cpu_conv` chooses it at
lowering for the CPU platform and keeps `lax.conv_general_dilated` everywhere else.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import custom_batching
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

# Geometry: (stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right), a static tuple.
# Shardy factors: n batch, h w input map, p q output map, c in channels, i j kernel, o out channels;
# all but the batch need replication (the handlers convolve whole maps with whole kernels).


def _call(target: str, shape, dtype, *operands, geometry):
    out = jax.ShapeDtypeStruct(shape, dtype)
    return jax.ffi.ffi_call(target, out)(*operands, geometry=np.asarray(geometry, np.int64))


def output_shape(x_shape, w_shape, geometry) -> tuple[int, int, int, int]:
    (n, h, w, _), (kh, kw, _, o) = x_shape, w_shape
    sh, sw, pt, pb, pl, pr = geometry
    return n, (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1, o


def _batch_axes(sharding):
    """The mesh axes a 4-D array's batch dimension is split over (None: not split)."""
    spec = getattr(sharding, "spec", None)
    return spec[0] if spec else None


def _batch_sharded(mesh, axes, rank: int = 4) -> NamedSharding:
    return NamedSharding(mesh, P(axes, *[None] * (rank - 1)))


def _partitioned(impl, rule: str, *, batch_operand: int, reduce_batch: bool = False):
    """`impl(a, b, geometry, shape)` with its batch kept where operand `batch_operand` has it:
    activations split along the batch, the kernel replicated; `reduce_batch`: the result is a
    kernel-shaped sum over the batch (psum of every device's part)."""
    op = custom_partitioning(impl, static_argnums=(2, 3))

    def shardings(mesh, arg_shapes):
        axes = _batch_axes(arg_shapes[batch_operand].sharding)
        args = tuple(_batch_sharded(mesh, axes) if "n" in spec else NamedSharding(mesh, P())
                     for spec in rule.split("->")[0].split(","))
        result = NamedSharding(mesh, P()) if reduce_batch else _batch_sharded(mesh, axes)
        return axes, args, result

    def infer(geometry, shape, mesh, arg_shapes, result_shape):
        return shardings(mesh, arg_shapes)[2]

    def partition(geometry, shape, mesh, arg_shapes, result_shape):
        axes, args, result = shardings(mesh, arg_shapes)
        local_shape = result_shape.shape if reduce_batch else None

        def lower(a, b):
            out = impl(a, b, geometry, local_shape or _local(shape, a))
            return jax.lax.psum(out, axes) if reduce_batch and axes else out
        return mesh, lower, result, args

    op.def_partition(partition, infer_sharding_from_operands=infer, sharding_rule=rule,
                     reduction_factors=("n",) if reduce_batch else (),
                     need_replication_factors=_in_order(rule, exclude="n"))
    return op


def _in_order(rule: str, exclude: str) -> tuple[str, ...]:
    """The rule's factors but `exclude`, in order of first appearance (as Shardy requires)."""
    factors = rule.replace(",", " ").replace("->", " ").split()
    return tuple(dict.fromkeys(f for f in factors if f != exclude))


def _local(shape, a):
    """`shape` with the batch of the local operand `a` (a per-device shard)."""
    return (a.shape[0], *shape[1:])


def _forward_impl(x, w, geometry, shape):
    return _call("jaxcnn_conv_forward", shape, x.dtype, x, w, geometry=geometry)


def _backward_data_impl(dy, w, geometry, shape):
    return _call("jaxcnn_conv_backward_data", shape, dy.dtype, dy, w, geometry=geometry)


def _backward_weights_impl(x, dy, geometry, shape):
    return _call("jaxcnn_conv_backward_weights", shape, x.dtype, x, dy, geometry=geometry)


_PARTITIONED = {
    "forward": _partitioned(_forward_impl, "n h w c, i j c o -> n p q o", batch_operand=0),
    "backward_data": _partitioned(_backward_data_impl, "n p q o, i j c o -> n h w c", batch_operand=0),
    "backward_weights": _partitioned(_backward_weights_impl, "n h w c, n p q o -> i j c o", batch_operand=0,
                                     reduce_batch=True),
}


def _lax_equivalent(kind: str, a, b, geometry, shape):
    """What `kind` computes, in lax's convolution (for vmaps the oneDNN call cannot take)."""
    strides, padding = geometry[:2], (geometry[2:4], geometry[4:])

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if kind == "forward":
        return conv(a, b)
    if kind == "backward_data":  # a = dy, b = w; shape = x's
        return jax.vjp(lambda x: conv(x, b), jnp.zeros(shape, a.dtype))[1](a)[0]
    return jax.vjp(lambda w: conv(a, w), jnp.zeros(shape, a.dtype))[1](b)[0]  # a = x, b = dy; shape = w's


@functools.cache
def _op(kind: str, geometry: tuple, shape: tuple):
    """The `kind` FFI call for operands (a, b) giving `shape`, batch-partitioned, and under
    `jax.vmap`: a vmapped activation folded into the batch (one call), anything else (a vmapped
    kernel, per-example kernel gradients) in lax's convolution."""
    @custom_batching.custom_vmap
    def op(a, b):
        return _PARTITIONED[kind](a, b, geometry, shape)

    @op.def_vmap
    def batched(axis_size, in_batched, a, b):
        if in_batched == [True, False] and kind != "backward_weights":
            folded = (axis_size * shape[0], *shape[1:])
            out = _op(kind, geometry, folded)(a.reshape(-1, *a.shape[2:]), b)
            return out.reshape(axis_size, *shape), True
        a, b = (x if batched else jnp.broadcast_to(x, (axis_size, *x.shape)) for x, batched in zip((a, b), in_batched))
        return jax.vmap(lambda a, b: _lax_equivalent(kind, a, b, geometry, shape))(a, b), True

    return op


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv2d(x, w, geometry: tuple[int, int, int, int, int, int]):
    """NHWC `x` convolved with HWIO `w` (same dtype, float32 or bfloat16); `geometry` is
    (stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right). Reverse-mode differentiable."""
    return _op("forward", geometry, output_shape(x.shape, w.shape, geometry))(x, w)


def _conv2d_forward(x, w, geometry):
    return conv2d(x, w, geometry), (x, w)


def _conv2d_backward(geometry, residuals, dy):
    # Both gradients are computed here; XLA drops the call whose result nothing reads (a frozen
    # kernel's gradient, the image's), as it would drop an unused convolution.
    x, w = residuals
    return (_op("backward_data", geometry, x.shape)(dy, w), _op("backward_weights", geometry, w.shape)(x, dy))


conv2d.defvjp(_conv2d_forward, _conv2d_backward)
