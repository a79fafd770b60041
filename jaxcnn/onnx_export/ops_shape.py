"""Shape primitives: reshape, broadcast, squeeze, transpose, concatenate, pad, slice.

A transpose costs nothing (only the tracked layout changes); squeeze, concatenate, pad and slice
work in their operand's layout; reshape and broadcast_in_dim need JAX's own order. Shapes that
contain the batch are written as -1 (a reshape has at most one such dimension) or computed from
the input's shape at run time, so one file serves every batch size.
"""

from __future__ import annotations

from jaxcnn.onnx_export.graph import OnnxGraph, Tensor, Unsupported, identity
from jaxcnn.onnx_export.ops_elementwise import common_layout


def reshape_rule(g: OnnxGraph, eqn, args):
    (x, *dynamic), out = args, eqn.outvars[0].aval
    if dynamic or eqn.params.get("dimensions") is not None:
        raise Unsupported("reshape with dynamic shapes or a dimension order")
    dims = list(out.shape)
    batch_dims = [i for i, d in enumerate(dims) if g.is_dynamic(d)]
    if len(batch_dims) == 1:
        dims[batch_dims[0]] = -1  # the one dimension the others leave: the batch
        shape = g.int64s(dims)
    else:
        shape = g.shape_tensor(dims)
    return [g.node("Reshape", [g.input(x), shape], out.shape, out.dtype)]


def broadcast_in_dim_rule(g: OnnxGraph, eqn, args):
    """Unsqueeze the new axes, then Expand where a size-1 axis grows."""
    (x, *dynamic), out = args, eqn.outvars[0].aval
    if dynamic:
        raise Unsupported("broadcast_in_dim with a dynamic shape")
    mapped = eqn.params["broadcast_dimensions"]
    new_axes = [i for i in range(len(out.shape)) if i not in mapped]
    current = g.in_layout(x, identity(x.rank))
    if new_axes:
        unsqueezed = _interleave(current.shape, mapped, len(out.shape))
        current = g.node("Unsqueeze", [current.name, g.int64s(new_axes)], unsqueezed, out.dtype)
    if tuple(current.shape) == tuple(out.shape):
        return [current]
    # Expand broadcasts numpy-style: 1 keeps an axis as it is, so only growing axes are named.
    dims = [1 if have == want else want for have, want in zip(current.shape, out.shape)]
    return [g.node("Expand", [current.name, g.shape_tensor(dims)], out.shape, out.dtype)]


def _interleave(shape, mapped, rank):
    """The operand's sizes placed at their output axes (1 elsewhere)."""
    dims = [1] * rank
    for size, axis in zip(shape, mapped):
        dims[axis] = size
    return tuple(dims)


def squeeze_rule(g: OnnxGraph, eqn, args):
    (x,), out = args, eqn.outvars[0].aval
    x = g.in_layout(x, x.perm if isinstance(x, Tensor) else identity(x.rank))
    removed = [d % x.rank for d in eqn.params["dimensions"]]
    kept = [p for p in x.perm if p not in removed]
    perm = tuple(sorted(kept).index(p) for p in kept)
    axes = [x.perm.index(d) for d in removed]
    return [g.node("Squeeze", [x.name, g.int64s(axes)], out.shape, out.dtype, perm)]


def transpose_rule(g: OnnxGraph, eqn, args):
    """No node: the ONNX tensor stays as it is, its recorded layout changes."""
    (x,), out = args, eqn.outvars[0].aval
    order = eqn.params["permutation"]
    x = g.in_layout(x, x.perm if isinstance(x, Tensor) else identity(x.rank))
    return [Tensor(x.name, tuple(order.index(axis) for axis in x.perm), tuple(out.shape), x.dtype)]


def concatenate_rule(g: OnnxGraph, eqn, args):
    out = eqn.outvars[0].aval
    perm = common_layout(args, len(out.shape))
    axis = perm.index(eqn.params["dimension"])
    return [g.node("Concat", [g.input(a, perm) for a in args], out.shape, out.dtype, perm, axis=axis)]


def pad_rule(g: OnnxGraph, eqn, args):
    (x, value), out = args, eqn.outvars[0].aval
    config = eqn.params["padding_config"]
    if any(interior != 0 for _, _, interior in config) or any(lo < 0 or hi < 0 for lo, hi, _ in config):
        raise Unsupported("pad with interior (dilating) or negative padding")
    perm = common_layout([x], len(out.shape))
    pads = [int(config[p][0]) for p in perm] + [int(config[p][1]) for p in perm]
    return [g.node("Pad", [g.input(x, perm), g.int64s(pads), g.input(value)], out.shape, out.dtype, perm,
                   mode="constant")]


def slice_rule(g: OnnxGraph, eqn, args):
    (x,), out = args, eqn.outvars[0].aval
    x = g.in_layout(x, x.perm if isinstance(x, Tensor) else identity(x.rank))
    starts, limits = eqn.params["start_indices"], eqn.params["limit_indices"]
    strides = eqn.params["strides"] or (1,) * x.rank
    axes = [a for a in range(x.rank) if (starts[a], limits[a], strides[a]) != (0, x.shape[a], 1)]
    if any(g.is_dynamic(x.shape[a]) for a in axes):
        raise Unsupported("slicing the batch dimension")
    if not axes:
        return [x]
    return [g.node("Slice", [x.name, g.int64s(starts[a] for a in axes), g.int64s(limits[a] for a in axes),
                             g.int64s(x.perm.index(a) for a in axes), g.int64s(strides[a] for a in axes)],
                   out.shape, out.dtype, x.perm)]


RULES = {
    "reshape": reshape_rule, "broadcast_in_dim": broadcast_in_dim_rule, "squeeze": squeeze_rule,
    "transpose": transpose_rule, "concatenate": concatenate_rule, "pad": pad_rule, "slice": slice_rule,
}
