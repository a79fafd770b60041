"""Classification metrics from labels and predicted probabilities: top-k accuracy, per-class
precision / recall / F1, confusion matrix, and calibration (ECE and its reliability bins).

Pure numpy on the host: an evaluation gathers (labels, probabilities) once and every number in
`eval-*.json` and every figure is computed from them here.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxcnn.output import displayable

CALIBRATION_BINS = 15  # equal-width confidence bins, as in Guo et al. (2017) and timm
TOP5_MIN_CLASSES = 6  # top-5 accuracy says something only with more than five classes


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts indexed [true, predicted]."""
    return np.bincount(labels * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, num_classes)


def topk_accuracy(labels: np.ndarray, probabilities: np.ndarray, k: int) -> float:
    """Share of examples whose true class is among the `k` most probable."""
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.full(numerator.shape, np.nan), where=denominator > 0)


def per_class_metrics(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class (NaN where undefined, e.g. a class never predicted).

    `accuracy` is the tutorials' per-class accuracy (correct / examples of the class), which is
    the recall; it is kept under that name because the tutorials report it so.
    """
    true_positive = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1).astype(np.float64)
    predicted = confusion.sum(axis=0).astype(np.float64)
    precision, recall = _ratio(true_positive, predicted), _ratio(true_positive, support)
    f1 = _ratio(2 * true_positive, support + predicted)
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": recall, "support": support}


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Reliability bins over the confidence (top probability): count, mean confidence, accuracy."""

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error: sum over bins of |accuracy - confidence| x share of examples."""
        share = self.counts / max(self.counts.sum(), 1)
        gaps = np.abs(np.nan_to_num(self.accuracy) - np.nan_to_num(self.confidence))
        return float(np.sum(share * gaps))


def calibration(labels: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS) -> Calibration:
    """Bins (lo, hi] of the top probability, the first bin closed at 0."""
    confidence = probabilities.max(axis=1).astype(np.float64)
    correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    return Calibration(edges, counts, _ratio(np.bincount(index, confidence, bins), counts),
                       _ratio(np.bincount(index, correct, bins), counts))


def _number(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def per_class_report(confusion: np.ndarray, class_names) -> dict[str, dict]:
    """{class: {precision, recall, f1, accuracy, support}}, JSON-ready (None where undefined)."""
    metrics = per_class_metrics(np.asarray(confusion))
    return {name: {key: int(values[i]) if key == "support" else _number(values[i]) for key, values in metrics.items()}
            for i, name in enumerate(class_names)}


def classification_report(labels: np.ndarray, probabilities: np.ndarray, class_names, losses: np.ndarray) -> dict:
    """Every number of an evaluation, JSON-ready (NaN becomes null)."""
    num_classes = len(class_names)
    predicted = probabilities.argmax(axis=1)
    confusion = confusion_matrix(labels, predicted, num_classes)
    report = {"examples": int(len(labels)), "loss": float(np.mean(losses, dtype=np.float64)),
              "accuracy": float(np.mean(predicted == labels))}
    if num_classes >= TOP5_MIN_CLASSES:
        report["top5_accuracy"] = topk_accuracy(labels, probabilities, 5)
    per_class = per_class_metrics(confusion)
    for name in ("precision", "recall", "f1"):
        report[f"macro_{name}"] = _number(np.nanmean(per_class[name])) if np.any(~np.isnan(per_class[name])) else None
    report["expected_calibration_error"] = calibration(labels, probabilities).ece
    report["calibration_bins"] = CALIBRATION_BINS
    report["per_class"] = per_class_report(confusion, class_names)
    report["confusion_matrix"] = confusion.tolist()
    return report


def per_class_table(per_class: dict) -> str:
    """The per-class metrics as a Markdown table (readable on a console too); class names as
    `displayable` text, so that a name read under `LANG=C` is aligned and valid UTF-8."""
    names = {name: displayable(name) for name in per_class}
    width = max(len("class"), *map(len, names.values()))
    lines = [f"| {'class':<{width}} | precision | recall | f1     | accuracy | support |",
             f"|{'-' * (width + 2)}|-----------|--------|--------|----------|---------|"]
    for name, m in per_class.items():
        cells = [("    -" if m[k] is None else f"{m[k]:.4f}") for k in ("precision", "recall", "f1", "accuracy")]
        lines.append(f"| {names[name]:<{width}} | {cells[0]:>9} | {cells[1]:>6} | {cells[2]:>6} | {cells[3]:>8} "
                     f"| {m['support']:>7} |")
    return "\n".join(lines)
