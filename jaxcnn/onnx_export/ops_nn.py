"""Network primitives: convolution, dot products, window pooling and reductions.

A convolution reads its input in the layout its dimension numbers name (NCHW for Flax's NHWC
convolutions once transposed: ONNX's Conv order) and leaves its output in that layout; the
kernel is transposed to OIHW when written. A dense layer is a MatMul; any other dot_general
(the adaptive pool's contractions) an Einsum with the operands' layouts written into its
equation. Pooling and reductions map their axes through the operand's layout.
"""

from __future__ import annotations

import math
import string

import numpy as np

from jaxcnn.onnx_export.graph import Const, OnnxGraph, Tensor, Unsupported, identity


def layout_of(value) -> tuple[int, ...]:
    return value.perm if isinstance(value, Tensor) else identity(value.rank)


def _check_dtype(eqn, args) -> None:
    preferred = eqn.params.get("preferred_element_type")
    operand = args[0].value.dtype if isinstance(args[0], Const) else args[0].dtype
    if preferred is not None and np.dtype(preferred) != operand:
        raise Unsupported(f"a {operand} product accumulated in {np.dtype(preferred)}")


def conv_rule(g: OnnxGraph, eqn, args):
    (lhs, rhs), out, params = args, eqn.outvars[0].aval, eqn.params
    _check_dtype(eqn, args)
    numbers = params["dimension_numbers"]
    if any(d != 1 for d in params["lhs_dilation"]):
        raise Unsupported("a transposed convolution (lhs_dilation)")
    if params["batch_group_count"] != 1:
        raise Unsupported("a convolution with batch_group_count > 1")
    padding = [tuple(int(p) for p in pair) for pair in params["padding"]]
    if any(p < 0 for pair in padding for p in pair):
        raise Unsupported("a convolution with negative padding")
    rhs_shape = rhs.value.shape if isinstance(rhs, Const) else rhs.shape
    return [g.node("Conv", [g.input(lhs, numbers.lhs_spec), g.input(rhs, numbers.rhs_spec)], out.shape,
                   out.dtype, numbers.out_spec,
                   kernel_shape=[rhs_shape[d] for d in numbers.rhs_spec[2:]],
                   strides=list(params["window_strides"]), dilations=list(params["rhs_dilation"]),
                   pads=[lo for lo, _ in padding] + [hi for _, hi in padding],
                   group=params["feature_group_count"])]


def dot_general_rule(g: OnnxGraph, eqn, args):
    (lhs, rhs), out = args, eqn.outvars[0].aval
    _check_dtype(eqn, args)
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]
    if not lhs_batch and rhs.rank == 2 and tuple(rhs_contract) == (0,) and tuple(lhs_contract) == (lhs.rank - 1,):
        return [g.node("MatMul", [g.input(lhs), g.input(rhs)], out.shape, out.dtype)]
    if lhs.rank + rhs.rank > len(string.ascii_lowercase):
        raise Unsupported("a dot_general of more than 26 axes")
    letters = iter(string.ascii_lowercase)
    lhs_letters = [next(letters) for _ in range(lhs.rank)]
    rhs_letters = [None] * rhs.rank
    for a, b in (*zip(lhs_contract, rhs_contract), *zip(lhs_batch, rhs_batch)):
        rhs_letters[b] = lhs_letters[a]
    rhs_letters = [letter or next(letters) for letter in rhs_letters]
    lhs_free = [a for a in range(lhs.rank) if a not in (*lhs_contract, *lhs_batch)]
    rhs_free = [b for b in range(rhs.rank) if b not in (*rhs_contract, *rhs_batch)]
    result = [lhs_letters[a] for a in (*lhs_batch, *lhs_free)] + [rhs_letters[b] for b in rhs_free]
    lhs_perm, rhs_perm = layout_of(lhs), layout_of(rhs)
    equation = (f"{''.join(lhs_letters[a] for a in lhs_perm)},{''.join(rhs_letters[b] for b in rhs_perm)}"
                f"->{''.join(result)}")
    return [g.node("Einsum", [g.input(lhs, lhs_perm), g.input(rhs, rhs_perm)], out.shape, out.dtype,
                   equation=equation)]


def pool_rule(kind: str):
    """reduce_window_max -> MaxPool; reduce_window_sum -> AveragePool counting the padding, times
    the window size. The windowed axes go last (ONNX pools over the axes after N and C)."""

    def rule(g: OnnxGraph, eqn, args):
        (x,), out, params = args, eqn.outvars[0].aval, eqn.params
        window, strides = params["window_dimensions"], params["window_strides"]
        padding, dilation = [tuple(int(p) for p in pair) for pair in params["padding"]], params["window_dilation"]
        if any(d != 1 for d in params["base_dilation"]):
            raise Unsupported(f"reduce_window_{kind} with base dilation")
        if kind == "sum" and any(d != 1 for d in dilation):
            raise Unsupported("reduce_window_sum with window dilation (AveragePool has none at opset 17)")
        windowed = [a for a in range(x.rank) if (window[a], strides[a], padding[a], dilation[a]) != (1, 1, (0, 0), 1)]
        perm = layout_of(x)
        if any(perm[j] in windowed for j in range(min(2, x.rank))):
            unwindowed = [a for a in range(x.rank) if a not in windowed]
            if len(unwindowed) < 2 or x.rank < 3:
                raise Unsupported(f"reduce_window_{kind} over the batch or channel axis")
            perm = (*unwindowed[:2], *(a for a in range(x.rank) if a not in unwindowed[:2]))
        spatial = perm[2:]
        name = g.input(x, perm)
        kernel = [window[a] for a in spatial]
        pads = [padding[a][0] for a in spatial] + [padding[a][1] for a in spatial]
        if any(p >= k for p, k in zip(pads, kernel * 2)):  # ONNX Runtime rejects them too
            raise Unsupported(f"reduce_window_{kind} with windows that lie wholly in the padding")
        attributes = dict(kernel_shape=kernel, strides=[strides[a] for a in spatial], pads=pads)
        if kind == "max":
            return [g.node("MaxPool", [name], out.shape, out.dtype, perm,
                           dilations=[dilation[a] for a in spatial], **attributes)]
        mean = g.node("AveragePool", [name], out.shape, out.dtype, perm, count_include_pad=1, **attributes)
        size = g.const(np.asarray(math.prod(kernel), out.dtype))
        return [g.node("Mul", [mean.name, size], out.shape, out.dtype, perm)]

    return rule


def reduce_rule(op: str, axes_as_input: bool):
    """ReduceSum takes its axes as an input at opset 13+, ReduceMax / ReduceMin as an attribute until 18."""

    def rule(g: OnnxGraph, eqn, args):
        (x,), out = args, eqn.outvars[0].aval
        reduced = tuple(eqn.params["axes"])
        if not reduced:
            return [x]
        perm = layout_of(x)
        axes = [perm.index(a) for a in reduced]
        kept = [p for p in perm if p not in reduced]
        out_perm = tuple(sorted(kept).index(p) for p in kept)
        inputs = [g.input(x, perm)] + ([g.int64s(axes)] if axes_as_input else [])
        attributes = {"keepdims": 0, **({} if axes_as_input else {"axes": axes})}
        return [g.node(op, inputs, out.shape, out.dtype, out_perm, **attributes)]

    return rule


RULES = {
    "conv_general_dilated": conv_rule, "dot_general": dot_general_rule,
    "reduce_window_max": pool_rule("max"), "reduce_window_sum": pool_rule("sum"),
    "reduce_sum": reduce_rule("ReduceSum", True), "reduce_max": reduce_rule("ReduceMax", False),
    "reduce_min": reduce_rule("ReduceMin", False),
}
