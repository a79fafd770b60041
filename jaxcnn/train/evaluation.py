"""Running a compiled step over a whole loader, with exact epoch averages."""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Iterable, Iterator

import jax
import numpy as np

from jaxcnn.train.sharding import shard_batch


def prefetch_to_mesh(batches: Iterable[dict], mesh, size: int = 2) -> Iterator[dict]:
    """Shard host batches onto the mesh `size` batches ahead, so transfers overlap compute."""
    queue = collections.deque()
    for batch in batches:
        queue.append(shard_batch(batch, mesh))
        if len(queue) > size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def sum_metrics(per_step: list[dict]) -> dict[str, np.ndarray]:
    """Sum a list of per-step metric dicts on the host (one transfer at the end, no per-step sync)."""
    if not per_step:
        return {}
    host = jax.device_get(per_step)
    return {key: np.sum([np.asarray(m[key], dtype=np.float64) for m in host], axis=0) for key in host[0]}


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Loss, accuracy and per-class accuracy of one pass over a split; `confusion[true, pred]`;
    `top5_accuracy` is None for models with fewer than 6 classes."""

    loss: float
    accuracy: float
    count: int
    confusion: np.ndarray
    top5_accuracy: float | None = None

    @property
    def per_class_accuracy(self) -> np.ndarray:
        totals = self.confusion.sum(axis=1)
        return np.divide(np.diag(self.confusion), totals, out=np.full(len(totals), np.nan), where=totals > 0)

    def as_dict(self, class_names) -> dict:
        top5 = {} if self.top5_accuracy is None else {"top5_accuracy": self.top5_accuracy}
        return {
            "loss": self.loss,
            "accuracy": self.accuracy,
            **top5,
            "examples": self.count,
            "per_class_accuracy": {
                name: (None if np.isnan(acc) else float(acc))
                for name, acc in zip(class_names, self.per_class_accuracy)
            },
            "confusion_matrix": self.confusion.astype(int).tolist(),
        }


def evaluate(eval_step: Callable, state, batches: Iterable[dict], mesh, *, prefetch: int = 2) -> EvalResult:
    """Evaluate `state` on every example of `batches` (padded examples carry mask 0), sharding
    `prefetch` batches ahead onto the mesh."""
    totals = sum_metrics([eval_step(state, batch) for batch in prefetch_to_mesh(batches, mesh, prefetch)])
    if not totals or totals["count"] == 0:
        raise ValueError("evaluation split is empty: no examples to evaluate")
    count = float(totals["count"])
    return EvalResult(
        loss=float(totals["loss_sum"] / count),
        accuracy=float(totals["correct"] / count),
        count=int(count),
        confusion=np.asarray(totals["confusion"]),
        top5_accuracy=float(totals["correct_top5"] / count) if "correct_top5" in totals else None,
    )
