"""Pure train and eval steps (jit them with `jaxcnn.train.sharding.compile_steps`).

Batches are dicts {"image": (B, H, W, C) float, "label": (B,) int, "mask": (B,) float}; an
example with mask 0 is padding and counts nowhere. Metrics are masked *sums* (loss_sum,
correct, count), so epoch averages are exact however the last batch was padded.
"""

import jax
import jax.numpy as jnp
import optax

from jaxcnn.train.state import TrainState

Metrics = dict[str, jax.Array]


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Per-example softmax cross entropy in float32, with torch-style label smoothing
    (targets (1 - s) * one_hot + s / C)."""
    logits = logits.astype(jnp.float32)
    targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def _variables(params, batch_stats) -> dict:
    return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}


def _masked_metrics(logits: jax.Array, per_example_loss: jax.Array, batch: dict) -> Metrics:
    mask = batch["mask"].astype(jnp.float32)
    correct = (jnp.argmax(logits, axis=-1) == batch["label"]).astype(jnp.float32)
    return {
        "loss_sum": jnp.sum(per_example_loss * mask),
        "correct": jnp.sum(correct * mask),
        "count": jnp.sum(mask),
    }


def train_step(
    state: TrainState,
    batch: dict,
    *,
    label_smoothing: float = 0.0,
    aux_loss_weight: float = 0.3,
) -> tuple[TrainState, Metrics]:
    """One optimizer update on the masked mean cross entropy.

    Models that sow auxiliary logits into the 'aux_logits' collection (GoogLeNet) add
    `aux_loss_weight * CE(aux)` per head to the optimised loss; the reported `loss_sum` is the
    main head's alone. Dropout uses a key split from `state.rng`; BatchNorm statistics are
    updated from the (unpadded) training batch.
    """
    rng, dropout_rng = jax.random.split(state.rng)
    mask = batch["mask"].astype(jnp.float32)
    count = jnp.sum(mask)

    def masked_mean(per_example):
        return jnp.sum(per_example * mask) / jnp.maximum(count, 1.0)

    def loss_fn(params):
        logits, updated = state.apply_fn(
            _variables(params, state.batch_stats),
            batch["image"],
            train=True,
            rngs={"dropout": dropout_rng},
            mutable=["batch_stats", "aux_logits"],
        )
        per_example = cross_entropy(logits, batch["label"], label_smoothing)
        loss = masked_mean(per_example)
        for aux_logits in jax.tree.leaves(updated.get("aux_logits", {})):
            loss += aux_loss_weight * masked_mean(
                cross_entropy(aux_logits, batch["label"], label_smoothing)
            )
        return loss, (logits, per_example, updated.get("batch_stats", state.batch_stats))

    grads, (logits, per_example, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        batch_stats=batch_stats,
        opt_state=opt_state,
        rng=rng,
    )
    return new_state, _masked_metrics(logits, per_example, batch)


def eval_step(state: TrainState, batch: dict) -> Metrics:
    """Masked sums of the plain (unsmoothed) cross entropy and of correct predictions, plus a
    (C, C) confusion matrix of counts indexed [true, predicted]."""
    logits = state.apply_fn(_variables(state.params, state.batch_stats), batch["image"], train=False)
    metrics = _masked_metrics(logits, cross_entropy(logits, batch["label"]), batch)
    num_classes = logits.shape[-1]
    true = jax.nn.one_hot(batch["label"], num_classes) * batch["mask"].astype(jnp.float32)[:, None]
    predicted = jax.nn.one_hot(jnp.argmax(logits, axis=-1), num_classes)
    metrics["confusion"] = true.T @ predicted
    return metrics
