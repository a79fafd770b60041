"""Fine-tuning pieces: which parameters form the head, and a lower learning rate for the rest.

The head is what `jaxcnn.weights` replaces when the number of classes or the head type
changes: torchvision's `classifier` for VGG (jaxcnn's fc1 / fc1_norm / fc, or fc1 / fc2 / fc),
`fc` for the ResNets, `fc` and the auxiliary heads for GoogLeNet, fc1-fc3 for LeNet-5.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import optax
from flax import traverse_util

from jaxcnn.weights.layout import family_of

HEAD, BACKBONE = "head", "backbone"


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
