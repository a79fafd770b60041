"""`jaxcnn evaluate`: evaluate a trained run, e.g. `jaxcnn evaluate runs/fm --split test --tta flip`.

Prints and writes `eval-<split>-<checkpoint>.json` (loss, top-1, top-5 for 6+ classes, per-class
precision / recall / F1 / accuracy, confusion matrix, expected calibration error) and three PNGs
beside it: the normalized confusion matrix, the most confident mistakes, the reliability diagram.
"""

from __future__ import annotations

import argparse
import sys

from jaxcnn.cli.options import Parser
from jaxcnn.cli.trained import add_run_arguments, parse_and_run


def build_parser() -> argparse.ArgumentParser:
    from jaxcnn.inference.evaluation import SPLITS, TTA_CHOICES

    parser = Parser(prog="jaxcnn evaluate", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    add_run_arguments(parser)
    parser.add_argument("--split", default="test", choices=SPLITS, help="the split to evaluate [default: test]")
    parser.add_argument("--data", default=None, metavar="NAME",
                        help="another dataset with the run's classes (a name or an image folder) [default: the run's]")
    parser.add_argument("--data-dir", default=None, metavar="DIR", help="where the dataset is [default: the run's]")
    parser.add_argument("--tta", default="none", choices=TTA_CHOICES,
                        help="test-time augmentation: flip averages the image's and its mirror's probabilities")
    parser.add_argument("--out-dir", default=None, metavar="DIR", help="where to write [default: the run folder]")
    return parser


def summary(report: dict) -> str:
    from jaxcnn.report.classification import per_class_table

    weights = " EMA weights" if report["ema_weights"] else ""
    head = (f"{report['data']} {report['split']} ({report['examples']} images), "
            f"{report['checkpoint']} checkpoint{weights} "
            f"(epoch {report['epoch']}){', TTA flip' if report['tta'] != 'none' else ''}: "
            f"loss {report['loss']:.4f}, accuracy {report['accuracy']:.4f}")
    if "top5_accuracy" in report:
        head += f", top-5 {report['top5_accuracy']:.4f}"
    head += f", ECE {report['expected_calibration_error']:.4f}"
    files = "\n".join(f"  {path}" for path in report["files"].values())
    return f"{head}\n\n{per_class_table(report['per_class'])}\n\nWritten:\n{files}"


def run(args: argparse.Namespace) -> int:
    from jaxcnn.inference import load_run
    from jaxcnn.inference.evaluation import evaluate_run

    model = load_run(args.run, args.checkpoint, ema=args.ema, batch_size=args.batch_size)
    report = evaluate_run(model, split=args.split, data=args.data, data_dir=args.data_dir, tta=args.tta,
                          out_dir=args.out_dir)
    print(summary(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    return parse_and_run(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
