"""Evaluate a trained run on a split of its own data, or of any dataset with the same classes.

    report = evaluate_run(jaxcnn.load_run("runs/fm"), split="test", tta="flip")

One pass over the split through the run's evaluation preprocessing (the `Loader` with the run's
`InputSpec`), keeping labels, probabilities, per-example losses and the most confident mistakes;
every number and figure is computed from those (`jaxcnn.report.classification`).
"""

from __future__ import annotations

import heapq
import pathlib

import numpy as np

from jaxcnn.config import ConfigError
from jaxcnn.errors import UserError
from jaxcnn.inference.run import TrainedModel
from jaxcnn.report.classification import calibration, classification_report
from jaxcnn.report.figures import plot_confusion, plot_mistakes, plot_reliability
from jaxcnn.report.plots import figure_written
from jaxcnn.train.steps import cross_entropy

SPLITS = ("test", "val", "train")
TTA_CHOICES = ("none", "flip")
MISTAKES_SHOWN = 16


class EvaluationDataError(UserError, ValueError):
    """The dataset asked for cannot evaluate the run: other classes, or no such split."""


def split_source(model: TrainedModel, split: str, data: str | None = None, data_dir: str | None = None):
    """The source of `split` of the run's dataset (or dataset `data`), checked to have the run's classes."""
    from jaxcnn.data import load_data

    if split not in SPLITS:
        raise ConfigError("split", f"must be one of {', '.join(SPLITS)}, got {split!r}")
    config = model.config
    name = data or config.data.name
    directory = data_dir if data or data_dir else config.data.dir
    splits = load_data(name, directory, val_split=config.data.val_split, split_seed=config.seed,
                       image_size=model.inputs.decode_size, label_mode=None if data else config.data.label_mode)
    if tuple(splits.class_names) != model.class_names:
        raise EvaluationDataError(f"dataset {name!r} has classes {', '.join(splits.class_names)}; the run was "
                                  f"trained on {', '.join(model.class_names)} (the same classes in the same order "
                                  "are needed)")
    source = {"test": splits.test, "val": splits.val, "train": splits.train}[split]
    if source is None or len(source) == 0:
        present = [s for s, src in (("test", splits.test), ("val", splits.val)) if src is not None and len(src)]
        raise EvaluationDataError(f"dataset {name!r} has no {split} split; choose one of: "
                                  f"{', '.join(present + ['train'])}")
    return name, source


def predict_split(model: TrainedModel, source, tta: str = "none"):
    """(labels, probabilities, per-example losses, most confident mistakes) over every example of `source`."""
    from jaxcnn.data import Loader

    if tta not in TTA_CHOICES:
        raise ConfigError("tta", f"must be one of {', '.join(TTA_CHOICES)}, got {tta!r}")
    inputs = model.inputs
    labels, probabilities, losses, mistakes, seen = [], [], [], [], 0
    with Loader(source, batch_size=model.batch_size, train=False, image_size=inputs.image_size, mean=inputs.mean,
                std=inputs.std, augment=inputs.augment, channels=inputs.channels,
                workers=model.config.data.workers) as loader:
        for batch in loader.epoch(0):
            keep = batch["mask"] > 0
            images, batch_labels = batch["image"][keep], batch["label"][keep]  # uint8, normalized in `forward`
            logits, probs = model.forward(images)
            if tta == "flip":  # the mean probability of the image and its mirror image
                probs = (probs + model.forward(images[:, :, ::-1])[1]) / 2
                loss = -np.log(np.maximum(probs[np.arange(len(probs)), batch_labels], np.finfo(np.float32).tiny))
            else:
                loss = np.asarray(cross_entropy(logits, batch_labels))
            labels.append(batch_labels)
            probabilities.append(probs)
            losses.append(loss)
            _keep_mistakes(mistakes, probs, batch_labels, images, offset=seen)
            seen += len(batch_labels)
    mistakes = sorted(mistakes, reverse=True)
    shown = [(p, image, true, predicted) for p, _, true, predicted, image in mistakes]
    return np.concatenate(labels), np.concatenate(probabilities), np.concatenate(losses), shown


def _keep_mistakes(heap: list, probs: np.ndarray, labels: np.ndarray, images: np.ndarray, offset: int) -> None:
    """Keep the `MISTAKES_SHOWN` wrong predictions of highest probability seen so far in `heap`
    (on equal probability the earlier example; `offset` is the batch's first example index)."""
    predicted = probs.argmax(axis=1)
    for i in np.flatnonzero(predicted != labels):
        item = (float(probs[i, predicted[i]]), -(offset + i), int(labels[i]), int(predicted[i]))
        if len(heap) < MISTAKES_SHOWN or item[0] > heap[0][0]:
            entry = (*item, images[i].copy())  # not a view that keeps the whole batch alive
            heapq.heappush(heap, entry) if len(heap) < MISTAKES_SHOWN else heapq.heappushpop(heap, entry)


def evaluate_run(model: TrainedModel, *, split: str = "test", data: str | None = None, data_dir: str | None = None,
                 tta: str = "none", out_dir=None) -> dict:
    """Evaluate `model` on `split`; write `eval-<split>-<checkpoint>.json` and its three PNGs to
    `out_dir` (default: the run folder) and return the JSON's content. A figure that cannot be
    drawn is a warning line (`figure_written`): the JSON is written all the same, and its
    "files" lists the figures that were."""
    name, source = split_source(model, split, data, data_dir)
    labels, probabilities, losses, mistakes = predict_split(model, source, tta)
    report = {"run": str(model.run_dir), "checkpoint": model.checkpoint, "ema_weights": model.ema, "epoch": model.epoch,
              "data": name,
              "split": split, "tta": tta}
    report |= classification_report(labels, probabilities, model.class_names, losses)
    out_dir = pathlib.Path(out_dir or model.run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "-".join(["eval", *([name] if data else []), split, model.tag, *(["tta"] if tta != "none" else [])])
    stem = stem.replace("/", "_")
    weights = " EMA weights" if model.ema else ""
    title = f"{model.config.model.arch}, {name} {split}, {model.checkpoint} checkpoint{weights} (epoch {model.epoch})"
    names = model.class_names
    figures = {
        "confusion": lambda path: plot_confusion(
            report["confusion_matrix"], names, path,
            f"Confusion matrix, normalized by true class\n{title}, accuracy {report['accuracy']:.4f}"),
        "mistakes": lambda path: plot_mistakes(mistakes, names, path, f"Most confident mistakes: {title}"),
        "reliability": lambda path: plot_reliability(calibration(labels, probabilities), path, f"Reliability: {title}"),
    }
    report["files"] = {kind: str(out_dir / f"{stem}-{kind}.png") for kind, draw in figures.items()
                       if figure_written(out_dir / f"{stem}-{kind}.png", draw)}
    from jaxcnn.report.run_log import write_json

    write_json(out_dir / f"{stem}.json", report)
    report["files"]["report"] = str(out_dir / f"{stem}.json")
    return report
