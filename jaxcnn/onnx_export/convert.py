"""A jaxpr, equation by equation, as ONNX nodes.

Calls (jit, custom_jvp / custom_vjp such as `nn.relu`, remat) are entered and their bodies
converted in place. An equation whose inputs are all known at export time (the weights,
literals, values folded from them) is evaluated here and stored as an initializer: BatchNorm's
`scale * rsqrt(var + eps)`, every reshape of a bias. Data movement and IEEE-exact arithmetic
(add, mul, div, sqrt: bit for bit what XLA computes) fold in NumPy, rsqrt correctly rounded
(XLA's is within an ulp of it), anything else by JAX itself (`primitive.bind`, one compilation
per shape, which is why the common ones do not go there). Every other equation goes to its rule
(ops_elementwise, ops_shape, ops_nn); a primitive without one, or a form a rule does not
handle, is an `OnnxExportError` naming the primitive, the model and the line it comes from.
"""

from __future__ import annotations

import contextlib

import jax
import numpy as np
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal

from jaxcnn.onnx_export import ops_elementwise, ops_nn, ops_shape
from jaxcnn.onnx_export.errors import OnnxExportError
from jaxcnn.onnx_export.graph import Const, OnnxGraph, Unsupported, Value

RULES = {**ops_elementwise.RULES, **ops_shape.RULES, **ops_nn.RULES}
# call-like primitives -> the parameter holding the body that runs (derivative rules are not exported)
CALLS = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
         "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr", "remat2": "jaxpr", "checkpoint": "jaxpr"}
FOLD_GROWTH_LIMIT = 1 << 16  # elements: a folded value may be larger than its inputs up to this size
EXPORTED_FLOATS = (np.dtype(np.float32),)


def supported_primitives() -> list[str]:
    return sorted({*RULES, *CALLS})


def where(eqn) -> str:
    """`file:line (function)` of the user code that produced `eqn`, or "" (inside a library's jit)."""
    try:
        from jax._src import source_info_util

        return source_info_util.summarize(eqn.source_info)
    except Exception:  # noqa: BLE001 - a private helper: the location is a courtesy
        return ""


class JaxprConverter:
    """Converts the jaxprs of model `what` into graph `g`."""

    def __init__(self, g: OnnxGraph, what: str):
        self.g, self.what = g, what
        self.calls: list[str] = []  # where the calls being converted were made, outermost first

    def fail(self, eqn, reason: str) -> OnnxExportError:
        location = where(eqn) or next((call for call in reversed(self.calls) if call), "an unknown line")
        return OnnxExportError(f"ONNX export of {self.what}: {reason} (jax primitive '{eqn.primitive.name}' "
                               f"at {location})")

    def convert(self, jaxpr: Jaxpr, consts, args: list[Value]) -> list[Value]:
        env: dict = {}

        def read(atom) -> Value:
            if isinstance(atom, Literal):
                return self.literal(atom)
            return env[atom]

        for var, value in zip(jaxpr.constvars, consts):
            env[var] = Const(np.asarray(value))
        for var, value in zip(jaxpr.invars, args):
            env[var] = value
        for eqn in jaxpr.eqns:
            outs = self.equation(eqn, [read(atom) for atom in eqn.invars])
            for var, value in zip(eqn.outvars, outs):
                env[var] = value
        return [read(atom) for atom in jaxpr.outvars]

    def literal(self, atom) -> Const:
        value = np.asarray(atom.val, atom.aval.dtype)
        if value.ndim == 0 and value.dtype != np.bool_ and self.g.is_dynamic(value.item()):
            raise OnnxExportError(f"ONNX export of {self.what}: the model uses its batch size as a number, "
                                  "so one file cannot serve every batch size: export with a fixed batch size")
        return Const(value)

    def equation(self, eqn, args: list[Value]) -> list[Value]:
        name = eqn.primitive.name
        for var in eqn.outvars:
            dtype = np.dtype(var.aval.dtype)
            if (dtype.kind == "f" or dtype.name == "bfloat16") and dtype not in EXPORTED_FLOATS:
                raise self.fail(eqn, f"the model computes in {dtype.name} and the export is float32")
        if name in CALLS:
            body = eqn.params[CALLS[name]]
            closed = body if isinstance(body, ClosedJaxpr) else ClosedJaxpr(body, ())
            self.calls.append(where(eqn))
            try:
                return self.convert(closed.jaxpr, closed.consts, args)
            finally:
                self.calls.pop()
        if self.foldable(eqn, args):
            return self.fold(eqn, args)
        if name not in RULES:
            raise self.fail(eqn, "this primitive has no ONNX conversion")
        try:
            return RULES[name](self.g, eqn, args)
        except Unsupported as error:
            raise self.fail(eqn, str(error)) from None

    def foldable(self, eqn, args: list[Value]) -> bool:
        if eqn.effects or not all(isinstance(a, Const) for a in args):
            return False
        sizes = [a.value.size for a in args]
        for var in eqn.outvars:
            shape = var.aval.shape
            if any(self.g.is_dynamic(d) for d in shape):
                return False
            if int(np.prod(shape)) > max([FOLD_GROWTH_LIMIT, *sizes]):
                return False
        return True

    @staticmethod
    def fold(eqn, args: list[Const]) -> list[Const]:
        """Evaluate `eqn` on its known inputs; the result keeps the first input's label."""
        values = [a.value for a in args]
        numpy_fold = NUMPY_FOLDS.get(eqn.primitive.name)
        outs = numpy_fold(eqn, *values) if numpy_fold else None
        if outs is None:
            with _on_cpu():  # full float32: a GPU's default precision would round products to TF32
                outs = eqn.primitive.bind(*values, **eqn.params)
        outs = outs if eqn.primitive.multiple_results else [outs]
        label = next((a.label for a in args if a.label), None)
        out_dtypes = [np.dtype(var.aval.dtype) for var in eqn.outvars]
        return [Const(np.asarray(out).astype(dtype, copy=False), label) for out, dtype in zip(outs, out_dtypes)]


def _on_cpu():
    try:
        return jax.default_device(jax.local_devices(backend="cpu")[0])
    except RuntimeError:  # no CPU backend (JAX_PLATFORMS without cpu): the default device
        return contextlib.nullcontext()


def _floats(*values) -> bool:
    return all(np.asarray(v).dtype.kind == "f" for v in values)


def _broadcast_in_dim(eqn, x, *dynamic):
    if dynamic:
        return None
    shape, mapped = eqn.params["shape"], eqn.params["broadcast_dimensions"]
    expanded = [1] * len(shape)
    for size, axis in zip(x.shape, mapped):
        expanded[axis] = size
    return np.broadcast_to(x.reshape(expanded), shape).copy()


def _convert(eqn, x):
    new = np.dtype(eqn.params["new_dtype"])
    return x.astype(new) if new.kind == "f" and x.dtype.kind in "fiub" else None  # float <- int: as XLA


# primitive -> fold(eqn, *values) in NumPy, or None to leave it to JAX
NUMPY_FOLDS = {
    **{name: (lambda op: lambda eqn, x, y: op(x, y) if _floats(x, y) else None)(op)
       for name, op in {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
                        "max": np.maximum, "min": np.minimum}.items()},
    "neg": lambda eqn, x: np.negative(x),
    "sqrt": lambda eqn, x: np.sqrt(x) if _floats(x) else None,
    "rsqrt": lambda eqn, x: (1 / np.sqrt(x.astype(np.float64))).astype(x.dtype) if x.dtype == np.float32 else None,
    "convert_element_type": _convert,
    "reshape": lambda eqn, x, *dynamic: None if dynamic or eqn.params.get("dimensions") is not None
    else x.reshape(eqn.params["new_sizes"]),
    "broadcast_in_dim": _broadcast_in_dim,
    "transpose": lambda eqn, x: np.transpose(x, eqn.params["permutation"]),
    "squeeze": lambda eqn, x: np.squeeze(x, tuple(eqn.params["dimensions"])),
    "concatenate": lambda eqn, *xs: np.concatenate(xs, axis=eqn.params["dimension"]),
}
