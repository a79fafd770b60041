#!/usr/bin/env python
"""Train an image classifier: `python scripts/train.py --arch vgg16 --data catdog`.

A thin command line over `jaxcnn.experiment.train`; every flag is a field of `TrainConfig`.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import sys

from jaxcnn.data import list_datasets
from jaxcnn.experiment import TrainConfig, load_config, train
from jaxcnn.models import list_models
from jaxcnn.train import OPTIMIZERS, SCHEDULES
from jaxcnn.train.loop import METRIC_MODES

DEFAULTS = TrainConfig(arch="", data="")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default unless it is None/False (those flags say what they default to)."""

    def _get_help_string(self, action):
        if action.default in (None, False) or action.default == []:
            return action.help
        return super()._get_help_string(action)


def model_option(text: str) -> tuple[str, object]:
    """`KEY=VALUE`, the value read as a Python literal when it is one (`aux_logits=False`, `head=classic`)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def int_list(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=HelpFormatter,
    )
    g = p.add_argument_group("model and data")
    g.add_argument("--arch", help=f"model (required): {', '.join(list_models())}")
    g.add_argument("--model-opt", dest="model_options", type=model_option, action="append", default=[],
                   metavar="KEY=VALUE", help="model option, e.g. head=classic, stem=cifar, aux_logits=False")
    g.add_argument("--data", help=f"dataset (required): {', '.join(list_datasets())}")
    g.add_argument("--data-dir", default=None, help="where the dataset lies (default: ./data/<name>)")
    g.add_argument("--image-size", type=int, default=None, help="square input size (default: the dataset's)")
    g.add_argument("--val-split", type=float, default=DEFAULTS.val_split,
                   help="fraction of train held out for validation when the dataset has no val split")
    g.add_argument("--augment", default=None,
                   help="none, flip, cifar, imagenet or a comma list of ops (default: the dataset's)")
    g.add_argument("--hflip", type=float, default=None, help="horizontal flip probability (default: the dataset's)")
    g.add_argument("--label-mode", default=None, help="CIFAR-100 labels: fine (default) or coarse")
    g.add_argument("--download", action="store_true", help="download CIFAR/MNIST archives (checksum-verified)")
    g.add_argument("--cache", action="store_true", help="keep decoded, resized images of a folder in memory")
    g.add_argument("--workers", type=int, default=DEFAULTS.workers, help="data worker processes (0: in-process)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=None, help=f"epochs to train (default {DEFAULTS.epochs})")
    g.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="global batch, split over devices")
    g.add_argument("--optimizer", default=DEFAULTS.optimizer, choices=OPTIMIZERS, help="optimizer")
    g.add_argument("--lr", type=float, default=DEFAULTS.lr, help="(initial) learning rate")
    g.add_argument("--momentum", type=float, default=DEFAULTS.momentum, help="SGD momentum")
    g.add_argument("--nesterov", action="store_true", help="SGD with Nesterov momentum")
    g.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay,
                   help="L2 penalty (decoupled for adamw), as torch")
    g.add_argument("--schedule", default=DEFAULTS.schedule, choices=SCHEDULES,
                   help="LR schedule; plateau = torch ReduceLROnPlateau, checked once per epoch")
    g.add_argument("--warmup-epochs", type=float, default=DEFAULTS.warmup_epochs, help="linear warm-up from 0 (any schedule)")
    g.add_argument("--milestones", type=int_list, default=DEFAULTS.milestones, help="step: epochs, e.g. 100,150")
    g.add_argument("--gamma", type=float, default=DEFAULTS.gamma, help="step: LR factor at each milestone")
    g.add_argument("--plateau-metric", default=DEFAULTS.plateau_metric, choices=sorted(METRIC_MODES),
                   help="metric the plateau schedule watches")
    g.add_argument("--plateau-factor", type=float, default=DEFAULTS.plateau_factor, help="LR multiplier")
    g.add_argument("--plateau-patience", type=int, default=DEFAULTS.plateau_patience,
                   help="epochs without improvement tolerated before reducing (torch semantics)")
    g.add_argument("--plateau-threshold", type=float, default=DEFAULTS.plateau_threshold,
                   help="relative improvement that counts")
    g.add_argument("--plateau-cooldown", type=int, default=DEFAULTS.plateau_cooldown,
                   help="epochs to wait after a reduction")
    g.add_argument("--plateau-min-lr", type=float, default=DEFAULTS.plateau_min_lr, help="LR floor")
    g.add_argument("--early-stop-patience", type=int, default=DEFAULTS.early_stop_patience,
                   help="stop after this many epochs without a better --best-metric (0: never)")
    g.add_argument("--early-stop-min-delta", type=float, default=DEFAULTS.early_stop_min_delta,
                   help="smallest change of --best-metric that counts as better")
    g.add_argument("--best-metric", default=DEFAULTS.best_metric, choices=sorted(METRIC_MODES),
                   help="selects the best checkpoint and drives early stopping")
    g.add_argument("--label-smoothing", type=float, default=DEFAULTS.label_smoothing,
                   help="torch-style label smoothing of the training loss")
    g.add_argument("--dtype", default=DEFAULTS.dtype, choices=["float32", "bfloat16"],
                   help="computation dtype (parameters and optimizer state stay float32)")
    g.add_argument("--seed", type=int, default=DEFAULTS.seed, help="split, initialisation, shuffling, augmentation")

    g = p.add_argument_group("run folder")
    g.add_argument("--out", default=None, help="run folder (default: runs/<time>-<arch>-<data>)")
    g.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue a run from its last checkpoint with its saved config (--epochs may extend it)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no per-step progress bar")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    options = vars(parser.parse_args(argv))
    resume = options.pop("resume")
    if not resume and not (options["arch"] and options["data"]):
        parser.error("--arch and --data are required (unless --resume RUN_DIR)")
    if resume:
        saved = load_config(resume)
        config = dataclasses.replace(saved, out=resume, progress=options["progress"],
                                     epochs=options["epochs"] or saved.epochs)
    else:
        options["model_options"] = dict(options["model_options"])
        options["epochs"] = options["epochs"] or DEFAULTS.epochs
        config = TrainConfig(**options)
    try:
        train(config, resume=bool(resume))
    except (ValueError, FileNotFoundError, FloatingPointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if not isinstance(error, FloatingPointError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
