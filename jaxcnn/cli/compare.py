"""`jaxcnn compare`: compare finished runs, e.g. `jaxcnn compare runs/googlenet runs/vgg16 runs/resnet18`.

Draws every run's loss and accuracy curves (train and validation) in one figure under one legend,
and prints a table (arch, parameters, best validation accuracy and its epoch, test accuracy of the
best and last checkpoints, epochs, wall time, images/s), also written as CSV and Markdown beside
the figure.
"""

from __future__ import annotations

import argparse
import os
import sys

from jaxcnn.cli.errors import CommandError
from jaxcnn.cli.options import Parser
from jaxcnn.cli.trained import parse_and_run


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="jaxcnn compare", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders written by `jaxcnn train`")
    parser.add_argument("--out", default="compare.png", metavar="FILE.png",
                        help="the figure; the table goes beside it as .csv and .md [default: compare.png]")
    return parser


def run(args: argparse.Namespace) -> int:
    from jaxcnn.report.compare import compare_runs, format_table
    from jaxcnn.run_folder import CONFIG_NAME

    if not args.out.lower().endswith(".png"):
        raise CommandError(f"--out must be a .png file, got {args.out!r}")
    runs = [path for path in args.runs if os.path.isfile(os.path.join(path, CONFIG_NAME))]
    skipped = [path for path in args.runs if path not in runs]
    if skipped:  # a glob such as runs/* also matches folders of failed starts, notes, old copies
        print(f"note: skipped {len(skipped)} folder(s) that are not jaxcnn runs (no {CONFIG_NAME}): "
              f"{', '.join(skipped)}", file=sys.stderr)
    if not runs:
        raise CommandError(f"none of the {len(args.runs)} given folders is a jaxcnn run (no {CONFIG_NAME})")
    rows, written = compare_runs(runs, args.out)
    print(f"{format_table(rows)}\n\nWrote {', '.join(map(str, written))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return parse_and_run(build_parser(), run, argv, positive=())


if __name__ == "__main__":
    sys.exit(main())
