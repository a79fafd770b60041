"""Torchvision-format weights into and out of jaxcnn models (key layouts: layout.py)."""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import re
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxcnn.errors import WeightsFileError
from jaxcnn.weights.io import Source, read_state_dict, write_state_dict
from jaxcnn.weights.layout import (Entry, batch_norm_modules, default_input_shape, family_of,
                                  model_layout)

logger = logging.getLogger(__name__)
_TORCH_LEAF_ORDER = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What `load_torch_weights` did with each key.

    loaded: taken from the file. newly_initialized: set from the model's own init (head keys
    whose shape differs or that the file lacks, and missing keys when strict=False).
    missing: keys the model needs that the file lacks. unexpected: file keys the model has no
    place for. `shapes` gives (file shape, model shape) for every key not loaded (None: absent).
    """

    arch: str
    num_classes: int
    loaded: tuple[str, ...]
    newly_initialized: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    shapes: Mapping[str, tuple]

    def format_table(self) -> str:
        lines = [f"{self.arch} ({self.num_classes} classes): {len(self.loaded)} loaded, "
                 f"{len(self.newly_initialized)} newly initialized, {len(self.missing)} missing, "
                 f"{len(self.unexpected)} unexpected"]
        rows = [("newly initialized", key) for key in self.newly_initialized]
        rows += [("missing", key) for key in self.missing if key not in self.newly_initialized]
        rows += [("unexpected", key) for key in self.unexpected]
        width = max((len(key) for _, key in rows), default=0)
        for status, key in rows:
            file_shape, model_shape = self.shapes[key]
            lines.append(f"  {status:<17}  {key:<{width}}  file {_shape(file_shape)}  "
                         f"model {_shape(model_shape)}")
        return "\n".join(lines)


def _input_shape(input_shape: Sequence[int] | None) -> tuple[int, int, int] | None:
    if input_shape is not None and len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels); got {input_shape}")
    return None if input_shape is None else tuple(int(side) for side in input_shape)


def _shape(shape) -> str:
    return "-" if shape is None else str(tuple(shape))


def load_torch_weights(arch: str, source: Source, *, num_classes: int | None = None,
                       strict: bool = True, input_shape: Sequence[int] | None = None,
                       rng: jax.Array | int = 0, **model_options) -> tuple[dict, LoadReport]:
    """Flax variables {'params', 'batch_stats'} for `create_model(arch, num_classes, **model_options)`
    from a torchvision-format state_dict, and a report of what was loaded.

    `source`: a .pth / .pt file (needs torch), a .safetensors file, or a dict of arrays.
    `num_classes` defaults to the file's. Head keys (classifier / fc / aux) that do not fit
    (another number of classes, another head type) are initialized from the model's init with
    `rng`; a shape mismatch anywhere else raises. Missing or unexpected keys outside the head
    raise with strict=True and are logged as warnings (missing ones initialized) otherwise.
    Weights that do not fit raise `WeightsFileError`, one line naming the file, keys and shapes.
    `input_shape` (H, W, C) sets the input channels (and lenet5's flattened size); default
    3 channels at 224 px (32 px for lenet5 and CIFAR-stem ResNets). torchvision's ImageNet
    googlenet weights expect `transform_input`, i.e. inputs normalized with mean = std = 0.5.
    """
    state = {key: value for key, value in read_state_dict(source).items()
             if not key.endswith(".num_batches_tracked")}
    name = "the state_dict" if isinstance(source, Mapping) else str(source)
    shape, options = _input_shape(input_shape), tuple(sorted(model_options.items()))
    model, entries = model_layout(arch, 1 if num_classes is None else num_classes, shape, options)
    input_shape = shape or default_input_shape(model)
    if num_classes is None:
        num_classes = _infer_num_classes(arch, entries, state, name)
        model, entries = model_layout(arch, num_classes, shape, options)
    values, report = _match(arch, num_classes, entries, state, input_shape, name)
    _enforce(report, family_of(model), strict, name)
    if report.newly_initialized:
        paths = [e.path for e in entries if e.key in report.newly_initialized]
        values.update(_initialize(model, input_shape, rng, paths))
        logger.info("%s", report.format_table())
    variables = traverse_util.unflatten_dict({path: jnp.asarray(v) for path, v in values.items()})
    return variables, report


def _initialize(model, input_shape, rng, paths) -> dict:
    """The leaves at `paths` as `model.init` makes them; jitted returning only those, so XLA
    drops the rest of the init (3 s instead of 15 s for a ResNet-152 head)."""
    key = jax.random.key(rng) if isinstance(rng, int) else rng
    dummy = jnp.zeros((1, *input_shape), jnp.float32)

    def init(k):
        flat = traverse_util.flatten_dict(model.init({"params": k}, dummy, train=False))
        return [flat[path] for path in paths]

    return dict(zip(paths, jax.jit(init)(key)))


def _infer_num_classes(arch: str, entries: list[Entry], state: dict, name: str) -> int:
    """The file's class count, read off the weight of the model's final classifier layer."""
    final = next(e for e in entries if e.path == ("params", "fc", "kernel"))
    value = state.get(final.key)
    if value is None or value.ndim != 2 or value.shape[1] != final.torch_shape[1]:
        found = "absent" if value is None else f"of shape {tuple(value.shape)}"
        raise WeightsFileError(f"cannot tell {arch}'s number of classes from {name} ({final.key} is "
                               f"{found}, expected (classes, {final.torch_shape[1]})); pass num_classes=")
    return int(value.shape[0])


def _match(arch, num_classes, entries, state, input_shape, name) -> tuple[dict, LoadReport]:
    values, loaded, fresh, missing, shapes, mismatched = {}, [], [], [], {}, []
    for entry in entries:
        value = state.get(entry.key)
        if value is not None and tuple(value.shape) == entry.torch_shape:
            values[entry.path] = np.asarray(entry.from_torch(value), entry.dtype)
            loaded.append(entry.key)
            continue
        shapes[entry.key] = (None if value is None else tuple(value.shape), entry.torch_shape)
        if value is None:
            missing.append(entry.key)
            fresh.append(entry.key)
        elif entry.head:
            fresh.append(entry.key)
        else:
            mismatched.append(f"{entry.key}: file {tuple(value.shape)}, model {entry.torch_shape}")
    if mismatched:
        raise WeightsFileError(f"{name} does not fit {arch} outside the head (input_shape={input_shape} sets the "
                               f"input channels; is it the weights of another model?): {_listed(mismatched, '; ')}")
    known = {entry.key for entry in entries}
    unexpected = [key for key in state if key not in known]
    shapes.update({key: (tuple(state[key].shape), None) for key in unexpected})
    return values, LoadReport(arch, num_classes, tuple(loaded), tuple(fresh), tuple(missing),
                              tuple(unexpected), shapes)


def _listed(items: Sequence[str], separator: str = ", ", limit: int = 8) -> str:
    return separator.join(items[:limit]) + (f" ... ({len(items)} in all)" if len(items) > limit else "")


def _enforce(report: LoadReport, family, strict: bool, name: str) -> None:
    """Missing / unexpected keys outside the head: an error if strict, else a warning."""
    problems = [f"{kind} {', '.join(keys[:12])}{' ...' if len(keys) > 12 else ''} ({len(keys)})"
                for kind, keys in (
                    ("missing", [k for k in report.missing if not family.is_head(k)]),
                    ("unexpected", [k for k in report.unexpected if not family.is_head(k)]))
                if keys]
    if not problems:
        return
    message = f"{report.arch}: keys outside the head do not match: " + "; ".join(problems)
    if strict:
        raise WeightsFileError(f"{name} does not fit {message} (is it the weights of another model? "
                               "strict=False loads the rest and initializes the missing)")
    logger.warning("%s", message)


def torch_state_dict(variables: Mapping, arch: str, *, input_shape: Sequence[int] | None = None,
                     **model_options) -> dict[str, np.ndarray]:
    """`variables` of `create_model(arch, ..., **model_options)` as a torchvision-format
    state_dict of float32 numpy arrays (num_batches_tracked written as 0)."""
    try:
        num_classes = int(np.shape(variables["params"]["fc"]["kernel"])[-1])
    except (KeyError, TypeError):
        raise ValueError(f"variables have no params/fc/kernel: not {arch} variables") from None
    _, entries = model_layout(arch, num_classes, _input_shape(input_shape),
                              tuple(sorted(model_options.items())))
    flat = traverse_util.flatten_dict(
        {c: variables[c] for c in ("params", "batch_stats") if c in variables})
    expected = {e.path: e.shape for e in entries}
    given = {path: tuple(np.shape(v)) for path, v in flat.items()}
    if given != expected:
        differ = sorted({"/".join(p) for p in set(given) ^ set(expected)}
                        | {"/".join(p) for p in set(given) & set(expected) if given[p] != expected[p]})
        raise ValueError(f"variables do not fit {arch} with options {model_options or '{}'} "
                         f"(check arch, head / stem / aux_logits and input_shape); they differ at "
                         f"{', '.join(differ[:8])}{' ...' if len(differ) > 8 else ''}")
    state = {e.key: np.ascontiguousarray(e.to_torch(np.asarray(flat[e.path], np.float32)))
             for e in entries}
    state.update({f"{bn}.num_batches_tracked": np.zeros((), np.int64)
                  for bn in batch_norm_modules(entries)})
    return dict(sorted(state.items(), key=lambda item: _torch_order(item[0])))


def _torch_order(key: str):
    module, leaf = key.rsplit(".", 1)
    return ([int(t) if t.isdigit() else t for t in re.split(r"(\d+)", module)],
            _TORCH_LEAF_ORDER.index(leaf))


def save_torch_weights(variables: Mapping, arch: str, path: str | os.PathLike, *,
                       input_shape: Sequence[int] | None = None, **model_options) -> pathlib.Path:
    """Write `variables` as a torchvision-format state_dict (.pth / .pt need torch; .safetensors
    does not) that torch's `load_state_dict(strict=True)` accepts; returns the path."""
    return write_state_dict(torch_state_dict(variables, arch, input_shape=input_shape,
                                             **model_options), path)
