"""`jaxcnn summary`: a model's layer table and parameter / memory totals (nothing is compiled).

    jaxcnn summary --arch vgg16_catdog --num-classes 2 --input-size 224
    jaxcnn summary --arch resnet50 --num-classes 1000 --input-size 224 --depth 1
    jaxcnn summary --arch vgg16 --num-classes 1000 --input-size 224 --model-opt head=classic
"""

from __future__ import annotations

import argparse
import sys

from jaxcnn.cli.errors import run_reporting_errors
from jaxcnn.cli.options import Parser, key_value


def build_parser() -> argparse.ArgumentParser:
    from jaxcnn.models import list_models

    parser = Parser(prog="jaxcnn summary", description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("--arch", required=True, help=f"one of: {', '.join(list_models())}")
    parser.add_argument("--num-classes", type=int, required=True)
    parser.add_argument("--input-size", type=int, nargs="+", required=True, metavar="H [W]",
                        help="input height and optional width (default: square)")
    parser.add_argument("--channels", type=int, default=3, help="input channels (default 3)")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="batch size for the activation-memory estimate (default 1)")
    parser.add_argument("--depth", type=int, default=None,
                        help="summarise modules this many levels down (default: every layer)")
    parser.add_argument("--model-opt", "--option", dest="option", type=key_value, action="append", default=[],
                        metavar="KEY=VALUE", help="model option, e.g. head=classic (repeatable), as in jaxcnn train")
    return parser


def run(args: argparse.Namespace) -> int:
    from jaxcnn.models import create_model
    from jaxcnn.report import format_summary, summarize

    height, width = args.input_size[0], args.input_size[-1]
    model = create_model(args.arch, args.num_classes, **dict(args.option))
    summary = summarize(model, (height, width, args.channels), batch_size=args.batch_size, depth=args.depth)
    options = "".join(f", {k}={v!r}" for k, v in args.option)
    print(format_summary(summary, f"{args.arch} ({args.num_classes} classes{options})"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.input_size) > 2:
        parser.error("--input-size takes H or H W")
    return run_reporting_errors(lambda: run(args), {})


if __name__ == "__main__":
    sys.exit(main())
