"""Print a layer table and parameter / memory totals for a jaxcnn model (nothing is compiled).

    python scripts/summary.py --arch vgg16 --num-classes 2 --input-size 224
    python scripts/summary.py --arch resnet50 --num-classes 1000 --input-size 224 --depth 1
    python scripts/summary.py --arch vgg16 --num-classes 1000 --input-size 224 --option head=classic
"""

import argparse
import ast
import sys

from jaxcnn.models import create_model, list_models
from jaxcnn.report import format_summary, summarize


def parse_option(text: str) -> tuple[str, object]:
    """KEY=VALUE, VALUE read as a Python literal when it is one (True, 0.4), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", required=True, help=f"one of: {', '.join(list_models())}")
    parser.add_argument("--num-classes", type=int, required=True)
    parser.add_argument("--input-size", type=int, nargs="+", required=True, metavar="H [W]",
                        help="input height and optional width (default: square)")
    parser.add_argument("--channels", type=int, default=3, help="input channels (default 3)")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="batch size for the activation-memory estimate (default 1)")
    parser.add_argument("--depth", type=int, default=None,
                        help="summarise modules this many levels down (default: every layer)")
    parser.add_argument("--option", type=parse_option, action="append", default=[],
                        metavar="KEY=VALUE", help="model option, e.g. head=classic (repeatable)")
    args = parser.parse_args(argv)
    if len(args.input_size) > 2:
        parser.error("--input-size takes H or H W")
    height, width = args.input_size[0], args.input_size[-1]
    try:
        model = create_model(args.arch, args.num_classes, **dict(args.option))
        summary = summarize(model, (height, width, args.channels), batch_size=args.batch_size,
                            depth=args.depth)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    options = "".join(f", {k}={v!r}" for k, v in args.option)
    print(format_summary(summary, f"{args.arch} ({args.num_classes} classes{options})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
