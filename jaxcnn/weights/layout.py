"""Where each Flax variable of a jaxcnn model lives in a torchvision-style state_dict.

One naming rule per model family maps a Flax module path to a torch module name; the leaf
names and array layouts follow from the kind of layer:

    Conv       kernel (H, W, I, O) <-> weight (O, I, H, W); bias <-> bias
    Dense      kernel (I, O)       <-> weight (O, I);       bias <-> bias
               (a Dense fed by a flattened feature map also reorders its inputs: Flax
               flattens (H, W, C), torch (C, H, W))
    BatchNorm  scale, bias, mean, var <-> weight, bias, running_mean, running_var
               (torch's num_batches_tracked is ignored on load and written as 0)

Layouts (torchvision's names wherever torchvision has the model):

    vgg11/13/16/19, vgg16_catdog   features.N as torchvision's make_layers(batch_norm=True)
        head="classic"             classifier.0 / .3 / .6 (torchvision's vgg*_bn)
        head="gap"                 classifier.0 (Linear C->64), classifier.1 (BatchNorm1d),
                                   classifier.3 (Linear 64->classes)
    googlenet                      torchvision's: conv1.conv, conv1.bn, inception3a.branch2.0.conv,
                                   ..., aux1.conv.conv, aux1.fc1, aux1.fc2, fc
    resnet18..152 (either stem),   conv1, bn1, layer{i}.{j}.conv{k} / .bn{k},
    resnet20..110 (CIFAR)          layer{i}.{j}.downsample.0 / .1, fc (the CIFAR nets' option-A
                                   shortcuts have no parameters, so no downsample keys)
    lenet5                         conv1, conv2, fc1, fc2, fc3 (PyTorch's CIFAR-10 tutorial `Net`)

The head, replaced when the number of classes or the head type differs, is classifier.* (VGG),
fc (ResNets), fc, aux1 and aux2 (GoogLeNet), fc1-fc3 (LeNet-5).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import numpy as np
from flax import traverse_util

from jaxcnn.models import create_model, googlenet, lenet, resnet, vgg
from jaxcnn.models.shapes import abstract_variables

# (collection, Flax leaf name) -> torch parameter / buffer name.
_LEAF_NAMES = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
IDENTITY = r"\g<0>"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One Flax leaf and the torch tensor that holds it."""

    path: tuple[str, ...]  # ("params", "stage1_conv1", "conv", "kernel")
    key: str  # "features.0.weight"
    shape: tuple[int, ...]  # the Flax shape
    dtype: Any
    head: bool
    flattened: tuple[int, int, int] | None = None  # (H, W, C) feeding this Dense kernel

    @property
    def torch_shape(self) -> tuple[int, ...]:
        if len(self.shape) == 4:
            h, w, i, o = self.shape
            return (o, i, h, w)
        return self.shape[::-1] if len(self.shape) == 2 else self.shape

    def to_torch(self, value: np.ndarray) -> np.ndarray:
        value = np.asarray(value)
        if value.ndim == 4:
            return value.transpose(3, 2, 0, 1)
        if value.ndim == 2 and self.flattened:
            h, w, c = self.flattened
            return value.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(value.shape[1], -1)
        return value.T if value.ndim == 2 else value

    def from_torch(self, value: np.ndarray) -> np.ndarray:
        if value.ndim == 4:
            return value.transpose(2, 3, 1, 0)
        if value.ndim == 2 and self.flattened:
            h, w, c = self.flattened
            return value.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1)
        return value.T if value.ndim == 2 else value


@dataclasses.dataclass(frozen=True)
class Family:
    """How one model family names its modules in torch, and which of them form the head."""

    module_name: Callable[[nn.Module, tuple[str, ...]], str]  # Flax module path -> torch name
    head: tuple[str, ...]  # torch module names (prefixes) of the head
    flattened: Callable[[nn.Module, tuple[int, int, int]], dict]  # module path -> (H, W, C)
    default_size: Callable[[nn.Module], int]
    size_dependent: bool = False  # whether the variables depend on the input's H, W (not just C)

    def is_head(self, key: str) -> bool:
        return any(key == name or key.startswith(name + ".") for name in self.head)


def _unnamed(model: nn.Module, path: tuple[str, ...]) -> ValueError:
    return ValueError(f"no torch name for Flax module {'/'.join(path)} of {model.name}")


def _renamer(rules: tuple[tuple[str, Any], ...]):
    """A module-name rule that renames each path segment by the first matching (regex, replacement)."""

    def module_name(model: nn.Module, path: tuple[str, ...]) -> str:
        names = []
        for segment in path:
            match, replacement = next(((m, r) for p, r in rules if (m := re.fullmatch(p, segment))),
                                      (None, None))
            if match is None:
                raise _unnamed(model, path)
            names.append(match.expand(replacement) if isinstance(replacement, str)
                         else replacement(match))
        return ".".join(names)

    return module_name


_VGG_HEADS = {"classic": {"fc1": 0, "fc2": 3, "fc": 6}, "gap": {"fc1": 0, "fc1_norm": 1, "fc": 3}}


def _vgg_module_name(model: vgg.VGG, path: tuple[str, ...]) -> str:
    """torchvision's make_layers indices: conv, BN, ReLU per conv and a max-pool after each stage."""
    match = re.fullmatch(r"stage(\d+)_conv(\d+)", path[0])
    if match and len(path) == 2 and path[1] in ("conv", "norm"):
        stage, conv = int(match[1]) - 1, int(match[2]) - 1
        index = sum(3 * len(widths) + 1 for widths in model.stages[:stage]) + 3 * conv
        return f"features.{index + (path[1] == 'norm')}"
    head = _VGG_HEADS[model.head]
    if len(path) == 1 and path[0] in head:
        return f"classifier.{head[path[0]]}"
    raise _unnamed(model, path)


def _numbered(prefix: str):
    """'Conv_0' -> 'conv1': Flax counts auto-named layers from 0, torchvision names them from 1."""
    return lambda match: f"{prefix}{int(match[1]) + 1}"


_RESNET_RULES = (
    ("stem_conv", "conv1"), ("stem_norm", "bn1"),
    (r"stage(\d+)_block(\d+)", lambda m: f"layer{m[1]}.{int(m[2]) - 1}"),
    (r"Conv_(\d+)", _numbered("conv")), (r"BatchNorm_(\d+)", _numbered("bn")),
    ("downsample_conv", "downsample.0"), ("downsample_norm", "downsample.1"), ("fc", "fc"),
)
_GOOGLENET_RULES = (
    (r"conv\d?|inception\d[a-e]|branch1|fc\d?", IDENTITY), ("norm", "bn"),
    (r"branch([23])_reduce", r"branch\1.0"), (r"branch([234])", r"branch\1.1"),
    (r"aux_head([12])", r"aux\1"),
)
_LENET_RULES = ((r"conv[12]|fc[12]", IDENTITY), ("fc", "fc3"))


def _lenet_flattened(model: lenet.LeNet5, input_shape: tuple[int, int, int]) -> dict:
    height, width = (functools.reduce(lambda size, window: window.output_size(size),
                                      lenet.WINDOWS, side) for side in input_shape[:2])
    return {("fc1",): (height, width, 16)}


def _vgg_flattened(model: vgg.VGG, input_shape) -> dict:
    return {("fc1",): (7, 7, model.stages[-1][-1])} if model.head == "classic" else {}


FAMILIES = {
    vgg.VGG: Family(_vgg_module_name, ("classifier",), _vgg_flattened, lambda model: 224),
    resnet.ResNet: Family(_renamer(_RESNET_RULES), ("fc",), lambda model, shape: {},
                          lambda model: 32 if model.stem == "cifar" else 224),
    googlenet.GoogLeNet: Family(
        _renamer(_GOOGLENET_RULES), ("fc", "aux1", "aux2"),
        lambda model, shape: {(f"aux_head{i}", "fc1"): (4, 4, 128) for i in (1, 2)},
        lambda model: 224),
    lenet.LeNet5: Family(_renamer(_LENET_RULES), ("fc1", "fc2", "fc3"), _lenet_flattened,
                         lambda model: 32, size_dependent=True),
}


def family_of(model: nn.Module) -> Family:
    family = next((f for cls, f in FAMILIES.items() if isinstance(model, cls)), None)
    if family is None:
        raise ValueError(f"no torch layout for {type(model).__name__}; families with one: "
                         f"{', '.join(cls.__name__ for cls in FAMILIES)}")
    return family


def default_input_shape(model: nn.Module) -> tuple[int, int, int]:
    """3 channels at 224 px (32 px for lenet5 and CIFAR-stem ResNets)."""
    size = family_of(model).default_size(model)
    return (size, size, 3)


def model_layout(arch: str, num_classes: int, input_shape: tuple[int, int, int] | None,
                 options: tuple[tuple[str, Any], ...] = ()) -> tuple[nn.Module, tuple[Entry, ...]]:
    """`create_model(arch, num_classes, **dict(options))` and its layout for `input_shape`
    (None: `default_input_shape`); cached, as tracing the big models takes a second or more."""
    model = create_model(arch, num_classes, **dict(options))
    default = default_input_shape(model)
    if input_shape is None or not family_of(model).size_dependent:  # then any size gives the same
        input_shape = (*default[:2], input_shape[2] if input_shape else default[2])
    return model, _cached_layout(model, input_shape)


@functools.lru_cache(maxsize=32)
def _cached_layout(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[Entry, ...]:
    return tuple(layout(model, input_shape))


def layout(model: nn.Module, input_shape: tuple[int, int, int]) -> list[Entry]:
    """Every variable of `model` (built for `input_shape`) with its torch key and layout."""
    family = family_of(model)
    shapes = {collection: tree for collection, tree in abstract_variables(model, input_shape).items() if tree}
    flattened = family.flattened(model, input_shape)
    entries = []
    for path, leaf in traverse_util.flatten_dict(shapes).items():
        collection, module, name = path[0], path[1:-1], path[-1]
        if (collection, name) not in _LEAF_NAMES:
            raise ValueError(f"no torch name for {'/'.join(path)} of {model.name}")
        key = f"{family.module_name(model, module)}.{_LEAF_NAMES[collection, name]}"
        entries.append(Entry(path, key, tuple(leaf.shape), leaf.dtype, family.is_head(key),
                             flattened.get(module) if name == "kernel" else None))
    return entries


def batch_norm_modules(entries: list[Entry]) -> list[str]:
    """Torch names of the BatchNorm modules (those with running statistics)."""
    return [e.key.removesuffix(".running_mean") for e in entries if e.key.endswith(".running_mean")]
