"""Elementwise primitives: arithmetic, comparisons, casts, selection. Each keeps its operands'
layout (constants are transposed to it), so BatchNorm and ReLU run on NCHW convolution outputs
without a transpose.

ONNX broadcasts size-1 dimensions as `lax` does (operands have equal ranks, or are scalars), so
every rule here is one node (or a fixed chain, as `integer_pow`), computed as JAX computes it.
"""

from __future__ import annotations

import numpy as np

from jaxcnn.onnx_export.graph import Const, OnnxGraph, Tensor, Unsupported, identity, onnx_type

UNARY = {"neg": "Neg", "exp": "Exp", "log": "Log", "tanh": "Tanh", "logistic": "Sigmoid", "sqrt": "Sqrt",
         "abs": "Abs", "erf": "Erf"}
BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max", "min": "Min",
          "ge": "GreaterOrEqual", "gt": "Greater", "le": "LessOrEqual", "lt": "Less", "eq": "Equal"}
PASS_THROUGH = ("stop_gradient", "copy", "copy_p", "optimization_barrier")


def common_layout(args, rank: int) -> tuple[int, ...]:
    """The layout of the first computed operand of full rank (constants adapt to it)."""
    return next((a.perm for a in args if isinstance(a, Tensor) and a.rank == rank), identity(rank))


def elementwise(g: OnnxGraph, op: str, eqn, args, **attributes) -> Tensor:
    out = eqn.outvars[0].aval
    perm = common_layout(args, len(out.shape))
    names = [g.input(a, perm) for a in args]
    return g.node(op, names, out.shape, out.dtype, perm, **attributes)


def node_rule(op: str):
    def rule(g, eqn, args):
        return [elementwise(g, op, eqn, args)]
    return rule


def max_rule(g, eqn, args):
    """max(x, 0) is ReLU: the same values, and the node runtimes fuse into convolutions."""
    x, y = args
    out = eqn.outvars[0].aval
    for tensor, other in ((x, y), (y, x)):
        if (isinstance(tensor, Tensor) and isinstance(other, Const) and other.value.size == 1
                and tensor.shape == tuple(out.shape) and not np.any(other.value)):
            return [g.node("Relu", [tensor.name], out.shape, out.dtype, tensor.perm)]
    return [elementwise(g, "Max", eqn, args)]


def sub_rule(g, eqn, args):
    """x - c as x + (-c): the same IEEE result bit for bit, and the form ONNX Runtime folds into a
    preceding convolution's bias (BatchNorm's x - mean then needs no pass of its own)."""
    x, y = args
    if isinstance(x, Tensor) and isinstance(y, Const) and np.dtype(y.value.dtype).kind == "f":
        return [elementwise(g, "Add", eqn, [x, Const(np.negative(y.value), y.label)])]
    return [elementwise(g, "Sub", eqn, args)]


def rsqrt_rule(g, eqn, args):
    root = elementwise(g, "Sqrt", eqn, args)
    return [g.node("Reciprocal", [root.name], root.shape, root.dtype, root.perm)]


def square_rule(g, eqn, args):
    return [elementwise(g, "Mul", eqn, [args[0], args[0]])]


def integer_pow_rule(g, eqn, args):
    """x ** n by repeated squaring, the multiplications JAX's own lowering does."""
    (x,), n = args, eqn.params["y"]
    out = eqn.outvars[0].aval
    if n == 0:
        raise Unsupported("integer_pow with exponent 0")  # lax.integer_pow folds x ** 0 itself
    acc, power = None, abs(n)
    while power > 0:
        if power & 1:
            acc = x if acc is None else g.node("Mul", [acc.name, x.name], out.shape, out.dtype, x.perm)
        power >>= 1
        if power > 0:
            x = g.node("Mul", [x.name, x.name], out.shape, out.dtype, x.perm)
    if n < 0:
        acc = g.node("Reciprocal", [acc.name], out.shape, out.dtype, acc.perm)
    return [acc]


def convert_rule(g, eqn, args):
    (x,), out = args, eqn.outvars[0].aval
    if np.dtype(out.dtype) == (x.value.dtype if isinstance(x, Const) else x.dtype):
        return [x]
    perm = x.perm if isinstance(x, Tensor) else identity(x.rank)
    return [g.node("Cast", [g.input(x, perm)], out.shape, out.dtype, perm, to=onnx_type(out.dtype))]


def select_n_rule(g, eqn, args):
    """select_n(predicate, on_false, on_true) with a boolean predicate is Where."""
    predicate, *cases = args
    pred_dtype = predicate.value.dtype if isinstance(predicate, Const) else predicate.dtype
    if len(cases) != 2 or pred_dtype != np.bool_:
        raise Unsupported("select_n with more than two cases or a non-boolean predicate")
    return [elementwise(g, "Where", eqn, [predicate, cases[1], cases[0]])]


def pass_through_rule(g, eqn, args):
    return list(args)


RULES = {
    **{name: node_rule(op) for name, op in {**UNARY, **BINARY}.items()},
    **{name: pass_through_rule for name in PASS_THROUGH},
    "max": max_rule, "sub": sub_rule, "rsqrt": rsqrt_rule, "square": square_rule,
    "integer_pow": integer_pow_rule, "convert_element_type": convert_rule, "select_n": select_n_rule,
}
