"""Fine-tuning pieces: which parameters form the head, a lower learning rate for the rest, and
a first phase in which only the head learns.

The head is what `jaxcnn.weights` replaces when the number of classes or the head type
changes: torchvision's `classifier` for VGG (jaxcnn's fc1 / fc1_norm / fc, or fc1 / fc2 / fc),
`fc` for the ResNets, `fc` and the auxiliary heads for GoogLeNet, fc1-fc3 for LeNet-5.

Freezing the backbone for the first epochs (`Freeze`, `backbone_groups`) means, in the frozen
train step: the gradient is taken with respect to the head's parameters only (the backbone is
a constant, so JAX builds no backward pass through it); the backbone's BatchNorm layers run in
inference mode (running statistics used, not updated; the head's BatchNorm trains); and the
backbone's optimizer state is held. The optimizer is one `optax.multi_transform` with a head
and a backbone group under the run's one learning-rate schedule, so after unfreezing the
backbone learns at the scheduled rate of that step, with its optimizer statistics (Adam's
moments and bias-correction count, SGD's momentum) starting from zero and no weight decay
applied while it was frozen: what torch gives when the backbone's parameter group is added to
the optimizer at that epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import pathlib
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from jaxcnn.config import ConfigError, check_float, check_int, option
from jaxcnn.errors import WeightsFileError
from jaxcnn.weights.io import SUFFIXES
from jaxcnn.weights.layout import family_of

HEAD, BACKBONE = "head", "backbone"
log = logging.getLogger("jaxcnn")


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """Starting from torchvision-format weights, and how the backbone trains from there."""

    pretrained: str | None = option(
        None, "start from these torchvision-format weights (.pth, .pt or .safetensors); a head that does "
              "not fit is newly initialized (with --resume the checkpoint wins)", metavar="PATH")
    freeze_backbone_epochs: int = option(
        0, "train only the head for this many epochs (backbone BatchNorm in inference mode, no backward "
           "pass through the backbone), then everything")
    backbone_lr_scale: float = option(1.0, "the backbone's learning rate relative to the head's")

    def __post_init__(self):
        if self.pretrained is not None and pathlib.Path(self.pretrained).suffix not in SUFFIXES:
            raise ConfigError("pretrained", f"must be a {', '.join(SUFFIXES)} file, got {self.pretrained!r}")
        check_int("freeze_backbone_epochs", self.freeze_backbone_epochs, minimum=0)
        check_float("backbone_lr_scale", self.backbone_lr_scale, low=0.0, low_open=True)

    @property
    def splits_backbone(self) -> bool:
        """Whether the optimizer treats head and backbone differently."""
        return self.freeze_backbone_epochs > 0 or self.backbone_lr_scale != 1


def head_labels(model: nn.Module, params) -> dict:
    """A tree like `params` with "head" or "backbone" at each leaf (for optax.multi_transform)."""
    family = family_of(model)
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict(
        {path: HEAD if family.is_head(family.module_name(model, path[:-1])) else BACKBONE
         for path in flat})


def scale_backbone_lr(tx: optax.GradientTransformation, labels, scale: float
                      ) -> optax.GradientTransformation:
    """`tx` with the backbone's updates multiplied by `scale`: the same as torch parameter groups
    whose learning rate is `scale` times the head's, for every optimizer here (SGD, Adam and
    AdamW end in a multiplication by the learning rate, weight decay included), and one
    optimizer state and schedule for both groups. `labels`: from `head_labels`."""
    if not scale > 0:
        raise ValueError(f"backbone learning-rate scale must be > 0; got {scale}"
                         " (freezing the backbone is a separate setting)")
    if scale == 1:
        return tx
    backbone = jax.tree.map(lambda label: label == BACKBONE, labels)
    return optax.chain(tx, optax.masked(optax.scale(scale), backbone))


def held(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """`tx` paused: zero updates and its state left as it is. Written here because
    `optax.set_to_zero` has an empty state, and the frozen and the full optimizer must share
    one state structure (one checkpoint format, a state that carries over at unfreezing)."""

    def update(updates, state, params=None):
        del params
        return jax.tree.map(jnp.zeros_like, updates), state

    return optax.GradientTransformation(tx.init, update)


def backbone_groups(labels, *, frozen: bool) -> Callable[[Callable[[], optax.GradientTransformation]],
                                                         optax.GradientTransformation]:
    """For `make_optimizer(..., groups=)`: the optimizer as a head and a backbone group, the
    backbone's held when `frozen` (see the module docstring)."""

    def combine(make_tx):
        backbone = make_tx()
        return optax.multi_transform({HEAD: make_tx(), BACKBONE: held(backbone) if frozen else backbone}, labels)

    return combine


@dataclasses.dataclass(frozen=True, eq=False)
class Freeze:
    """The static settings of the frozen train step (`train_step(..., freeze=)`): `labels` from
    `head_labels`, and `tx`, the run's optimizer made with `backbone_groups(labels, frozen=True)`."""

    labels: Any
    tx: optax.GradientTransformation

    def _is_head(self) -> dict:
        return {path: label == HEAD for path, label in traverse_util.flatten_dict(self.labels).items()}

    def split(self, params) -> tuple[dict, dict]:
        """(head, backbone) leaves of `params`, as flat {path: array} dicts."""
        is_head = self._is_head()
        flat = traverse_util.flatten_dict(params)
        return ({p: v for p, v in flat.items() if is_head[p]}, {p: v for p, v in flat.items() if not is_head[p]})

    @staticmethod
    def merge(head: dict, backbone: dict):
        return traverse_util.unflatten_dict({**head, **backbone})

    @contextlib.contextmanager
    def inference_batch_norm(self):
        """Within: every BatchNorm of the backbone normalises with its running statistics and
        leaves them as they are (it is run as its own copy with `use_running_average=True` on
        its variables); the head's BatchNorm layers train as usual."""
        frozen = {path[:-1] for path, is_head in self._is_head().items() if not is_head}

        def interceptor(next_fun, args, kwargs, context):
            module = context.module
            if (context.method_name == "__call__" and hasattr(module, "use_running_average")
                    and tuple(module.path) in frozen):
                inference = module.clone(parent=None, use_running_average=True)
                return inference.apply(module.variables, *args, **kwargs)
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(interceptor):
            yield


def load_pretrained(state, arch: str, path, *, num_classes: int, input_shape: tuple[int, int, int],
                    rng: jax.Array, model_options: dict | None = None):
    """`state` starting from the torchvision-format weights at `path` (`jaxcnn.weights`): its
    params and BatchNorm statistics replaced, the optimizer state (and the EMA, if any) started
    afresh from them. A head that does not fit is initialized with `rng`; the load report is
    logged to the "jaxcnn" logger. Returns (state, report)."""
    from jaxcnn.train.ema import init_ema
    from jaxcnn.weights import load_torch_weights

    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise ConfigError("finetune.pretrained", f"no weights file at {path}")
    log.info(f"Starting from the pretrained weights {path}")
    variables, report = load_torch_weights(arch, path, num_classes=num_classes, input_shape=input_shape,
                                           rng=rng, **(model_options or {}))
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    expected = jax.tree.structure((state.params, state.batch_stats))
    if jax.tree.structure((params, batch_stats)) != expected:
        raise WeightsFileError(f"the weights in {path} do not fit the {arch} model being trained")
    if not report.newly_initialized:  # otherwise load_torch_weights has logged the table already
        log.info(report.format_table())
    ema = None if state.ema is None else init_ema(params, batch_stats, state.ema.config)
    return state.replace(params=params, batch_stats=batch_stats, opt_state=state.tx.init(params), ema=ema), report
