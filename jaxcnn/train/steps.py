"""Pure train and eval steps (jit them with `jaxcnn.train.sharding.compile_steps`).

Batches are dicts {"image": (B, H, W, C) uint8 or float, "label": (B,) int, "mask": (B,) float}
(with uint8 images, optionally "erase" boxes); each step first turns them into the model's
float32 input with `jaxcnn.train.inputs.prepare_inputs` (uint8 images normalized with the static
`normalize` statistics; float images, already normalized, as they are). An example with mask 0
is padding and counts nowhere. Metrics are masked *sums* (loss_sum,
correct, count, and correct_top5 for models with at least `TOP5_MIN_CLASSES` classes), so
epoch averages are exact however the last batch was padded.
"""

import contextlib

import jax
import jax.numpy as jnp
import optax

from jaxcnn.train.ema import update_ema
from jaxcnn.train.finetune import Freeze
from jaxcnn.train.inputs import InputNormalization, prepare_inputs
from jaxcnn.train.mixup import MixedBatch, MixupConfig, mix_batch
from jaxcnn.train.optim import optimizer_updates
from jaxcnn.train.state import TrainState

Metrics = dict[str, jax.Array]
TOP5_MIN_CLASSES = 6  # top-5 accuracy is reported from 6 classes up (with 5 or fewer it is 1)


def _targets(labels: jax.Array, num_classes: int, label_smoothing: float) -> jax.Array:
    targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    return optax.smooth_labels(targets, label_smoothing) if label_smoothing else targets


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Per-example softmax cross entropy in float32, with torch-style label smoothing
    (targets (1 - s) * one_hot + s / C)."""
    logits = logits.astype(jnp.float32)
    return optax.softmax_cross_entropy(logits, _targets(labels, logits.shape[-1], label_smoothing))


def mixed_cross_entropy(
    logits: jax.Array, labels: jax.Array, mixed: MixedBatch, label_smoothing: float = 0.0
) -> jax.Array:
    """Cross entropy against timm's mixed targets, per example:
    lam * smooth(one_hot(label)) + (1 - lam) * smooth(one_hot(partner_label))."""
    logits = logits.astype(jnp.float32)
    own = _targets(labels, logits.shape[-1], label_smoothing)
    partner = _targets(mixed.partner_label, logits.shape[-1], label_smoothing)
    lam = mixed.lam[:, None]
    return optax.softmax_cross_entropy(logits, lam * own + (1.0 - lam) * partner)


def _variables(params, batch_stats) -> dict:
    return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}


def _masked_metrics(logits: jax.Array, per_example_loss: jax.Array, batch: dict) -> Metrics:
    mask = batch["mask"].astype(jnp.float32)
    correct = (jnp.argmax(logits, axis=-1) == batch["label"]).astype(jnp.float32)
    metrics = {
        "loss_sum": jnp.sum(per_example_loss * mask),
        "correct": jnp.sum(correct * mask),
        "count": jnp.sum(mask),
    }
    if logits.shape[-1] >= TOP5_MIN_CLASSES:  # static: the number of classes is a shape
        _, top5 = jax.lax.top_k(logits, 5)
        in_top5 = jnp.any(top5 == batch["label"][:, None], axis=-1).astype(jnp.float32)
        metrics["correct_top5"] = jnp.sum(in_top5 * mask)
    return metrics


def train_step(
    state: TrainState,
    batch: dict,
    *,
    label_smoothing: float = 0.0,
    aux_loss_weight: float = 0.3,
    mixup: MixupConfig | None = None,
    freeze: Freeze | None = None,
    normalize: InputNormalization | None = None,
) -> tuple[TrainState, Metrics]:
    """One optimizer step on the masked mean cross entropy (one micro-step of an update when the
    optimizer accumulates gradients).

    Models that sow auxiliary logits into the 'aux_logits' collection (GoogLeNet) add
    `aux_loss_weight * CE(aux)` per head to the optimised loss; the reported `loss_sum` is the
    main head's alone. Dropout uses a key split from `state.rng`; BatchNorm statistics are
    updated from the (unpadded) training batch, every train step -- under gradient
    accumulation that is every micro-batch (K momentum updates per optimizer update, each from
    B examples, as in torch), so only a model without BatchNorm trains exactly as with one
    batch of K*B. With an active `mixup` the
    batch is mixed on the device with a third key split from `state.rng` (so enabling it also
    changes the dropout stream), the loss is against the mixed targets, and `correct` counts
    the argmax against the original labels (as timm). With `state.ema`, the average is
    updated after each optimizer update. With `freeze` (`jaxcnn.train.finetune.Freeze`) only
    the head learns: the gradient is of the head's parameters alone, the backbone's BatchNorm
    layers run in inference mode, and `freeze.tx` holds the backbone's optimizer state.
    `normalize` is the statistics of uint8 batches (`prepare_inputs`).
    """
    batch = prepare_inputs(batch, normalize)
    rng, dropout_rng, mixed = _split_rng_and_mix(state.rng, batch, mixup)
    trainable, backbone = (state.params, None) if freeze is None else freeze.split(state.params)

    def loss_fn(trainable):
        params = trainable if freeze is None else freeze.merge(trainable, backbone)
        image = batch["image"] if mixed is None else mixed.image
        logits, updated = _train_forward(state, params, image, dropout_rng, freeze)
        loss, per_example = _training_loss(logits, updated.get("aux_logits", {}), batch, mixed,
                                           label_smoothing, aux_loss_weight)
        return loss, (logits, per_example, updated.get("batch_stats", state.batch_stats))

    grads, (logits, per_example, batch_stats) = jax.grad(loss_fn, has_aux=True)(trainable)
    new_state = _apply_gradients(state, grads, batch_stats, rng, freeze, backbone)
    return _with_ema(state, new_state), _masked_metrics(logits, per_example, batch)


def _split_rng_and_mix(rng: jax.Array, batch: dict, mixup: MixupConfig | None
                       ) -> tuple[jax.Array, jax.Array, MixedBatch | None]:
    """The state's next rng, the dropout key and the mixed batch (None unless `mixup` is active):
    `rng` splits in two, or in three when mixing (the third key draws the mix)."""
    if mixup is not None and mixup.active:
        rng, dropout_rng, mix_rng = jax.random.split(rng, 3)
        return rng, dropout_rng, mix_batch(mix_rng, batch, mixup)
    rng, dropout_rng = jax.random.split(rng)
    return rng, dropout_rng, None


def _train_forward(state: TrainState, params, image: jax.Array, dropout_rng: jax.Array, freeze: Freeze | None):
    """Training-mode logits and the updated collections (batch_stats, and aux_logits of the models
    that sow them); with `freeze`, the backbone's BatchNorm layers in inference mode."""
    with contextlib.nullcontext() if freeze is None else freeze.inference_batch_norm():
        return state.apply_fn(
            _variables(params, state.batch_stats),
            image,
            train=True,
            rngs={"dropout": dropout_rng},
            mutable=["batch_stats", "aux_logits"],
        )


def _training_loss(logits: jax.Array, aux_logits, batch: dict, mixed: MixedBatch | None, label_smoothing: float,
                   aux_loss_weight: float) -> tuple[jax.Array, jax.Array]:
    """(optimised loss, the main head's per-example loss): the masked mean cross entropy (against
    the mixed targets when `mixed`) of the main head, plus `aux_loss_weight` times that of each
    auxiliary head in `aux_logits`."""
    mask = batch["mask"].astype(jnp.float32)
    count = jnp.sum(mask)

    def per_example_loss(logits):
        if mixed is None:
            return cross_entropy(logits, batch["label"], label_smoothing)
        return mixed_cross_entropy(logits, batch["label"], mixed, label_smoothing)

    def masked_mean(per_example):
        return jnp.sum(per_example * mask) / jnp.maximum(count, 1.0)

    per_example = per_example_loss(logits)
    loss = masked_mean(per_example)
    for aux in jax.tree.leaves(aux_logits):
        loss += aux_loss_weight * masked_mean(per_example_loss(aux))
    return loss, per_example


def _apply_gradients(state: TrainState, grads, batch_stats, rng: jax.Array, freeze: Freeze | None,
                     backbone) -> TrainState:
    """The optimizer step: of `state.tx`, or with `freeze` of the frozen phase's optimizer, on
    the head's `grads` and zeros (constants) for the `backbone`, whose parameters stay bit for bit."""
    tx = state.tx if freeze is None else freeze.tx
    if freeze is not None:
        grads = freeze.merge(grads, jax.tree.map(jnp.zeros_like, backbone))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if freeze is not None:
        params = freeze.merge(freeze.split(params)[0], backbone)
    return state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state, rng=rng)


def _with_ema(state: TrainState, new_state: TrainState) -> TrainState:
    """`new_state` with its EMA updated (it moves only when the optimizer applied an update)."""
    if state.ema is None:
        return new_state
    applied, update = optimizer_updates(new_state.opt_state, new_state.step)
    return new_state.replace(
        ema=update_ema(state.ema, new_state.params, new_state.batch_stats, applied=applied, update=update)
    )


def eval_step(state: TrainState, batch: dict, *, normalize: InputNormalization | None = None) -> Metrics:
    """Masked sums of the plain (unsmoothed) cross entropy and of correct (and, from 6 classes,
    top-5 correct) predictions, plus a (C, C) confusion matrix of counts [true, predicted].
    Evaluate the EMA weights by passing `state.ema_view()`; `normalize` as for `train_step`."""
    batch = prepare_inputs(batch, normalize)
    logits = state.apply_fn(_variables(state.params, state.batch_stats), batch["image"], train=False)
    metrics = _masked_metrics(logits, cross_entropy(logits, batch["label"]), batch)
    num_classes = logits.shape[-1]
    true = jax.nn.one_hot(batch["label"], num_classes) * batch["mask"].astype(jnp.float32)[:, None]
    predicted = jax.nn.one_hot(jnp.argmax(logits, axis=-1), num_classes)
    metrics["confusion"] = true.T @ predicted
    return metrics
