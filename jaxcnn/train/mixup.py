"""MixUp and CutMix on the device, inside the jitted train step, with timm's `Mixup` semantics
(mode='batch': one lambda and one choice per batch; example i is mixed with example B-1-i).

timm, per batch: with probability `prob` mix, else leave the batch as it is; when both alphas
are > 0, CutMix with probability `switch_prob`, else MixUp; lambda ~ Beta(alpha, alpha) of the
chosen method. MixUp: x = lam * x + (1 - lam) * flip(x). CutMix: a box of side
int(side * sqrt(1 - lam)) centred uniformly in the image and clipped to it gets flip(x)'s
pixels, and lam becomes 1 - (clipped box area) / (image area). A lambda of exactly 1 mixes
nothing. The targets are lam * smooth(one_hot(y)) + (1 - lam) * smooth(one_hot(flip(y))).

Departures, both forced by running on the device: the random numbers come from the step's JAX
key (not numpy's global generator), and lambda and the box are computed in float32. And one
addition: an example whose partner is padding (mask 0 -- a read-failure slot, or the padded
tail of a partial batch) is left unmixed (its own image, lam 1), so padding never leaks into a
real example. Full batches without read failures are mixed exactly as timm mixes them.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxcnn.config import check_float, option


@dataclasses.dataclass(frozen=True)
class MixupConfig:
    """timm `Mixup(mixup_alpha, cutmix_alpha, prob, switch_prob, mode='batch')`; the label
    smoothing is the train step's own `label_smoothing`."""

    mixup_alpha: float = option(1.0, "MixUp: Beta(alpha, alpha) mixing weights; 0: no MixUp", flag="--mixup")
    cutmix_alpha: float = option(0.0, "CutMix: Beta(alpha, alpha) box areas; 0: no CutMix", flag="--cutmix")
    prob: float = option(1.0, "probability that a batch is mixed", flag="--mix-prob")
    switch_prob: float = option(0.5, "with both: probability of CutMix instead of MixUp", flag="--mix-switch-prob")

    def __post_init__(self):
        check_float("mixup_alpha", self.mixup_alpha, low=0.0)
        check_float("cutmix_alpha", self.cutmix_alpha, low=0.0)
        check_float("prob", self.prob, low=0.0, high=1.0)
        check_float("switch_prob", self.switch_prob, low=0.0, high=1.0)

    @property
    def active(self) -> bool:
        """Whether any batch can be mixed (False: the step is exactly the unmixed step)."""
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


class MixedBatch(NamedTuple):
    image: jax.Array  # (B, H, W, C) the mixed images
    partner_label: jax.Array  # (B,) the label mixed in: flip(label)
    lam: jax.Array  # (B,) float32 weight of each example's own label (1: unmixed)


def cutmix_box(key: jax.Array, lam: jax.Array, height: int, width: int) -> tuple[jax.Array, jax.Array]:
    """timm's `rand_bbox` + `cutmix_bbox_and_lam(correct_lam=True)`: an (H, W) bool mask of the
    box for target ratio `lam`, and lam corrected to 1 - box area / image area."""
    ratio = jnp.sqrt(1.0 - lam)
    cut_h = jnp.floor(height * ratio).astype(jnp.int32)
    cut_w = jnp.floor(width * ratio).astype(jnp.int32)
    key_y, key_x = jax.random.split(key)
    cy = jax.random.randint(key_y, (), 0, height)
    cx = jax.random.randint(key_x, (), 0, width)
    y_low, y_high = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
    x_low, x_high = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
    rows, cols = jnp.arange(height), jnp.arange(width)
    box = ((rows >= y_low) & (rows < y_high))[:, None] & ((cols >= x_low) & (cols < x_high))[None, :]
    area = (y_high - y_low) * (x_high - x_low)
    return box, 1.0 - area.astype(jnp.float32) / (height * width)


def _draw(key: jax.Array, config: MixupConfig) -> tuple[jax.Array, jax.Array]:
    """timm's `_params_per_batch`: (lam, use_cutmix) for one batch."""
    key_apply, key_switch, key_lam = jax.random.split(key, 3)
    if config.mixup_alpha > 0 and config.cutmix_alpha > 0:
        use_cutmix = jax.random.uniform(key_switch) < config.switch_prob
    else:
        use_cutmix = jnp.asarray(config.cutmix_alpha > 0)
    # Both candidate lambdas in one draw (one Beta sampler to compile, not two); 1.0 for a
    # method that is off is never chosen.
    alphas = jnp.array([config.mixup_alpha or 1.0, config.cutmix_alpha or 1.0], jnp.float32)
    mixup_lam, cutmix_lam = jax.random.beta(key_lam, alphas, alphas)
    lam = jnp.where(use_cutmix, cutmix_lam, mixup_lam)
    mix = jax.random.uniform(key_apply) < config.prob
    return jnp.where(mix, lam, 1.0).astype(jnp.float32), use_cutmix


def mix_batch(key: jax.Array, batch: dict, config: MixupConfig) -> MixedBatch:
    """Mix `batch` (image, label, mask) with its reverse, as the module docstring says."""
    key_draw, key_box = jax.random.split(key)
    lam, use_cutmix = _draw(key_draw, config)
    image = batch["image"]
    flipped = jnp.flip(image, axis=0)
    box, box_lam = cutmix_box(key_box, lam, image.shape[1], image.shape[2])
    cutmix = use_cutmix & (lam != 1.0)  # timm: a lambda of exactly 1 mixes nothing
    blended = image * lam.astype(image.dtype) + flipped * (1.0 - lam).astype(image.dtype)
    mixed = jnp.where(cutmix, jnp.where(box[None, :, :, None], flipped, image), blended)
    lam = jnp.where(cutmix, box_lam, lam)

    partner_is_real = jnp.flip(batch["mask"], axis=0) > 0
    return MixedBatch(
        image=jnp.where(partner_is_real[:, None, None, None], mixed, image),
        partner_label=jnp.flip(batch["label"], axis=0),
        lam=jnp.where(partner_is_real, lam, 1.0),
    )
