"""A torchsummary / Keras `summary()`-style table for any Flax model, without compiling it.

The model is traced once under `jax.eval_shape`; `nn.intercept_methods` records each
submodule's path, type and output shape in call order. Written here rather than using
`nn.tabulate` because that table has no activation-memory estimate, no trainable /
non-trainable totals, and prints every input and collection of every module.
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class LayerRow:
    name: str                 # module path, e.g. "stage2_block1/Conv_0"
    kind: str                 # module class, e.g. "Conv"
    output_shape: tuple[int, ...]
    params: int


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    rows: tuple[LayerRow, ...]
    input_shape: tuple[int, ...]     # (B, H, W, C)
    total_params: int                # the 'params' collection
    trainable_params: int            # all of 'params': jaxcnn trains every parameter
    non_trainable: int               # other state, e.g. BatchNorm running statistics
    param_bytes: int
    activation_bytes: int            # forward + backward estimate, see `summarize`


def summarize(model: nn.Module, input_shape: tuple[int, int, int], *, batch_size: int = 1,
              depth: int | None = None) -> ModelSummary:
    """Trace `model` on a (batch_size, H, W, C) float32 input and tabulate its layers.

    Rows are the innermost modules (Conv, Dense, BatchNorm, ...) or, with `depth`, the modules
    `depth` levels down (their parameters summed). The activation estimate follows torchsummary:
    twice (forward + backward) the bytes of every innermost module's output for the batch.
    """
    x = jax.ShapeDtypeStruct((batch_size, *input_shape), jnp.float32)
    calls: list[list[Any]] = []

    def record(next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        entry = [context.module.path, type(context.module).__name__, None]
        calls.append(entry)
        out = next_fun(*args, **kwargs)
        entry[2] = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), out)
        return out

    with nn.intercept_methods(record):
        variables = jax.eval_shape(lambda key, x: model.init(key, x, train=False),
                                   jax.random.key(0), x)

    params = variables.get("params", {})
    paths = [tuple(path) for path, _, _ in calls]
    rows, activation_bytes = [], 0
    for path, kind, out in calls:
        inner = not any(p[:len(path)] == path and len(p) > len(path) for p in paths)
        if inner:
            activation_bytes += sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(out))
        if path and ((depth is None and inner) or (depth is not None and (
                len(path) == depth or (inner and len(path) < depth)))):
            leaves = jax.tree.leaves(out)
            shape = tuple(leaves[0].shape) if len(leaves) == 1 else ()
            rows.append(LayerRow("/".join(path), kind, shape, _count(_subtree(params, path))))

    total = _count(params)
    state = {k: v for k, v in variables.items() if k != "params"}
    return ModelSummary(
        rows=tuple(rows), input_shape=x.shape, total_params=total, trainable_params=total,
        non_trainable=_count(state), param_bytes=_bytes(variables),
        activation_bytes=2 * activation_bytes)


def format_summary(summary: ModelSummary, title: str = "") -> str:
    """Render a summary as a fixed-width text table with totals."""
    name_width = max([len(f"{r.name} ({r.kind})") for r in summary.rows] + [20])
    line = "-" * (name_width + 40)
    out = [line] if not title else [line, title, line]
    out.append(f"{'Layer (type)':<{name_width}}  {'Output shape':>22}  {'Param #':>14}")
    out.append("=" * len(line))
    for r in summary.rows:
        shape = str(r.output_shape) if r.output_shape else "(several)"
        out.append(f"{r.name + ' (' + r.kind + ')':<{name_width}}  {shape:>22}  {r.params:>14,}")
    mib = 1024 ** 2
    batch = summary.input_shape[0]
    out += [
        "=" * len(line),
        f"Total params: {summary.total_params:,}",
        f"Trainable params: {summary.trainable_params:,}",
        f"Non-trainable (BatchNorm running statistics): {summary.non_trainable:,}",
        line,
        f"Input shape: {summary.input_shape}",
        f"Params + state size (MiB): {summary.param_bytes / mib:.2f}",
        f"Activation memory estimate, forward+backward, batch {batch} (MiB): "
        f"{summary.activation_bytes / mib:.2f}",
        line,
    ]
    return "\n".join(out)


def _subtree(tree: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return {}
        tree = tree[key]
    return tree


def _count(tree: Any) -> int:
    return sum(math.prod(a.shape) for a in jax.tree.leaves(tree))


def _bytes(tree: Any) -> int:
    return sum(math.prod(a.shape) * a.dtype.itemsize for a in jax.tree.leaves(tree))
