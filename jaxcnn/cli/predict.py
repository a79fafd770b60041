"""`jaxcnn predict`: classify images with a trained run, e.g. `jaxcnn predict runs/fm photos/ --output preds.csv`.

PATHs are files, folders (searched recursively for images) or glob patterns (quote them; `**`
recurses). Prints a table of each image's top-k classes and, with --output, writes one row per
image (CSV or JSON). Unreadable files are listed with the reason; they never stop the run.
"""

from __future__ import annotations

import argparse
import sys

from jaxcnn.cli.errors import CommandError
from jaxcnn.cli.options import Parser
from jaxcnn.cli.trained import add_run_arguments, parse_and_run

CONSOLE_ROWS_WITH_OUTPUT = 20  # with --output the file has every row; the console shows the first ones


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="jaxcnn predict", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    add_run_arguments(parser)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or glob patterns")
    parser.add_argument("--topk", type=int, default=3, help="classes shown and written per image [default: 3]")
    parser.add_argument("--output", default=None, metavar="FILE",
                        help="write the predictions to FILE (.csv or .json)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar [default: from 100 files on]")
    return parser


def run(args: argparse.Namespace) -> int:
    from jaxcnn.inference import load_run
    from jaxcnn.inference.predict import check_output, find_images, format_predictions, predict_files, write_predictions

    if args.output:
        check_output(args.output)
    files, unreadable = find_images(args.paths)
    model = load_run(args.run, args.checkpoint, ema=args.ema, batch_size=args.batch_size)
    rows, bad = predict_files(model, files, topk=args.topk, progress=args.progress)
    unreadable += bad
    if rows:
        print(format_predictions(rows, CONSOLE_ROWS_WITH_OUTPUT if args.output else None))
    if unreadable:
        print(f"\n{len(unreadable)} unreadable:", *(f"  {path}: {reason}" for path, reason in unreadable), sep="\n")
    if args.output:
        written = write_predictions(args.output, rows, unreadable, model.class_names)
        print(f"\nWrote {len(rows)} predictions to {', '.join(written)}")
    if not rows:
        raise CommandError(f"no readable image among {', '.join(args.paths)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return parse_and_run(build_parser(), run, argv, positive=("batch_size", "topk"))


if __name__ == "__main__":
    sys.exit(main())
