"""The ONNX graph under construction: jaxpr values as ONNX tensors in a tracked layout.

JAX computes images NHWC; ONNX's Conv and pooling want NCHW. Instead of transposing around
every convolution, each jaxpr value computed in the graph is a `Tensor` that remembers the
permutation its ONNX tensor holds it in (`perm`: ONNX axis j is JAX axis perm[j]). A
convolution's output stays NCHW through BatchNorm, ReLU, additions and pooling; a `Transpose`
node is written only where an operation needs another order (a reshape, a dot product), and
constants are transposed here, when they are written. Values that depend only on the weights
are `Const`s: folded at export time and stored as initializers.

The batch dimension is traced as the number `OnnxGraph.batch` (see `export.py`): every shape
that contains it becomes the symbolic dimension "batch" in the file.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import onnx
from onnx import helper, numpy_helper

BATCH_DIM = "batch"  # the batch dimension's name in the file


class Unsupported(Exception):
    """A primitive, or a form of one, that the exporter does not convert (the reason is the message)."""


@dataclasses.dataclass(frozen=True)
class Tensor:
    """A value computed by the graph: ONNX tensor `name` holds the JAX value transposed by `perm`."""

    name: str
    perm: tuple[int, ...]
    shape: tuple[int, ...]  # the JAX shape (the traced batch size where the batch is)
    dtype: np.dtype

    @property
    def rank(self) -> int:
        return len(self.shape)


@dataclasses.dataclass(frozen=True, eq=False)
class Const:
    """A value known at export time (weights, folded expressions of them, literals); `label`
    names its initializer (the variable it comes from)."""

    value: np.ndarray
    label: str | None = None

    @property
    def rank(self) -> int:
        return self.value.ndim


Value = Tensor | Const


def identity(rank: int) -> tuple[int, ...]:
    return tuple(range(rank))


def onnx_type(dtype) -> int:
    try:
        return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    except (KeyError, TypeError, ValueError):
        raise Unsupported(f"dtype {np.dtype(dtype)} has no ONNX tensor type") from None


class OnnxGraph:
    """Nodes, initializers and value infos, with the layout and constant bookkeeping above.

    `batch`: the traced batch size that stands for a dynamic batch, or None (a fixed batch).
    """

    def __init__(self, batch: int | None):
        self.batch = batch
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.value_infos: dict[str, onnx.ValueInfoProto] = {}
        self.inputs: list[onnx.ValueInfoProto] = []
        self._names: set[str] = set()
        self._counter = itertools.count()
        self._const_cache: dict = {}  # (dtype, shape, bytes) of small arrays, id() of large ones -> name
        self._transpose_cache: dict = {}  # (tensor name or const id, layout) -> name
        self._alive: list = []  # the arrays and consts cached by id(), kept so that no id is reused
        self._batch_dim: str | None = None
        self._first_input: Tensor | None = None

    # ------------------------------------------------------------------ names, dimensions

    def fresh(self, base: str) -> str:
        name = base
        while name in self._names:
            name = f"{base}_{next(self._counter)}"
        self._names.add(name)
        return name

    def is_batch(self, dim) -> bool:
        return self.batch is not None and dim == self.batch

    def is_dynamic(self, dim) -> bool:
        """`dim` depends on the batch size (is it, or a multiple of it)."""
        return self.batch is not None and dim != 0 and dim % self.batch == 0

    def onnx_dims(self, shape) -> list:
        return [BATCH_DIM if self.is_batch(d) else None if self.is_dynamic(d) else int(d) for d in shape]

    # ------------------------------------------------------------------ inputs and nodes

    def add_input(self, name: str, shape, dtype, perm: tuple[int, ...]) -> Tensor:
        """A graph input holding the JAX value of `shape` in layout `perm`."""
        self._names.add(name)
        tensor = Tensor(name, perm, tuple(shape), np.dtype(dtype))
        onnx_shape = self.onnx_dims([shape[p] for p in perm])
        self.inputs.append(helper.make_tensor_value_info(name, onnx_type(dtype), onnx_shape))
        self._first_input = self._first_input or tensor
        return tensor

    def node(self, op: str, inputs: list[str], shape, dtype, layout: tuple[int, ...] | None = None,
             **attributes) -> Tensor:
        """Append node `op`; its one output holds a JAX value of `shape` / `dtype` in `layout`."""
        perm = identity(len(shape)) if layout is None else tuple(layout)
        name = self.fresh(op)
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attributes))
        self.value_infos[name] = helper.make_tensor_value_info(
            name, onnx_type(dtype), self.onnx_dims([shape[p] for p in perm]))
        return Tensor(name, perm, tuple(shape), np.dtype(dtype))

    def raw_node(self, op: str, inputs: list[str], **attributes) -> str:
        """A node whose output is an ONNX-only helper tensor (a shape), not a JAX value."""
        name = self.fresh(op)
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attributes))
        return name

    def rename(self, old: str, new: str) -> None:
        """Rename tensor `old` (a node output) to `new` everywhere: the graph output's name."""
        for node in self.nodes:
            for names in (node.input, node.output):
                for i, name in enumerate(names):
                    if name == old:
                        names[i] = new
        info = self.value_infos.pop(old)
        info.name = new
        self.value_infos[new] = info
        self._names.add(new)

    # ------------------------------------------------------------------ constants

    def const(self, value: np.ndarray, label: str | None = None) -> str:
        """An initializer holding `value` (written once per distinct array)."""
        value = np.asarray(value)
        small = value.size <= 64
        key = (value.dtype.str, value.shape, value.tobytes()) if small else id(value)
        if key not in self._const_cache:
            onnx_type(value.dtype)
            name = self.fresh(label or ("const" if small else "weight"))
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
            self._const_cache[key] = name
            self._alive.append(value)
        return self._const_cache[key]

    def int64s(self, values) -> str:
        return self.const(np.asarray(list(values), np.int64))

    # ------------------------------------------------------------------ layouts

    def input(self, value: Value, perm: tuple[int, ...] | None = None) -> str:
        """The ONNX name of `value` in layout `perm` (default: JAX's own order), transposing a
        tensor with a node where its layout differs and a constant here. Scalars have no layout."""
        if value.rank == 0:
            return self.const(value.value) if isinstance(value, Const) else value.name
        perm = identity(value.rank) if perm is None else tuple(perm)
        if isinstance(value, Const):
            key = (id(value), perm)
            if key not in self._transpose_cache:
                self._transpose_cache[key] = self.const(np.transpose(value.value, perm), value.label)
                self._alive.append(value)
            return self._transpose_cache[key]
        if value.perm == perm:
            return value.name
        key = (value.name, perm)
        if key not in self._transpose_cache:
            relative = [value.perm.index(axis) for axis in perm]
            self._transpose_cache[key] = self.node("Transpose", [value.name], value.shape, value.dtype,
                                                   perm, perm=relative).name
        return self._transpose_cache[key]

    def in_layout(self, value: Value, perm: tuple[int, ...]) -> Tensor:
        """`value` as a `Tensor` in layout `perm`."""
        if isinstance(value, Tensor) and value.perm == tuple(perm):
            return value
        return Tensor(self.input(value, perm), tuple(perm), tuple(value_shape(value)), value_dtype(value))

    # ------------------------------------------------------------------ shapes known at run time

    def batch_size(self) -> str:
        """An int64 [1] tensor holding the batch size at run time (from the first graph input)."""
        if self._batch_dim is None:
            first = self._first_input
            axis = next((j for j, p in enumerate(first.perm) if self.is_batch(first.shape[p])), None)
            if axis is None:
                raise Unsupported("a shape depends on the batch size, and no input has a batch dimension")
            shape = self.raw_node("Shape", [first.name])
            self._batch_dim = self.raw_node("Slice", [shape, self.int64s([axis]), self.int64s([axis + 1])])
        return self._batch_dim

    def shape_tensor(self, dims) -> str:
        """An int64 shape tensor for `dims`, the batch-dependent ones computed at run time."""
        if not any(self.is_dynamic(d) for d in dims):
            return self.int64s(dims)
        if any(self.is_dynamic(d) and not self.is_batch(d) for d in dims):
            raise Unsupported("a shape with a multiple of the batch size in it")
        return self.raw_node("Concat", [self.batch_size() if self.is_batch(d) else self.int64s([d]) for d in dims],
                             axis=0)

    # ------------------------------------------------------------------ the model

    def make_graph(self, name: str, outputs: list[Tensor]) -> onnx.GraphProto:
        output_infos = [self.value_infos[t.name] for t in outputs]
        value_info = [info for key, info in self.value_infos.items() if key not in {t.name for t in outputs}]
        return helper.make_graph(self.nodes, name, self.inputs, output_infos, self.initializers,
                                 value_info=value_info)


def value_shape(value: Value) -> tuple:
    return value.value.shape if isinstance(value, Const) else value.shape


def value_dtype(value: Value) -> np.dtype:
    return value.value.dtype if isinstance(value, Const) else value.dtype

