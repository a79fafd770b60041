"""`jaxcnn summary`: a model's layer table and parameter / memory totals (nothing is compiled).

    jaxcnn summary --arch lenet5                 # at its usual data: 10 classes, 32x32x3 (CIFAR-10)
    jaxcnn summary --arch vgg16_catdog --num-classes 2 --input-size 224
    jaxcnn summary --arch resnet50 --depth 1
    jaxcnn summary --arch lenet5 --num-classes 10 --input-size 28 --channels 1   # as trained on the demo

Classes, input size and channels default to the data the architecture is usually trained on
(`jaxcnn.models.registry.USUAL_DATA`: ImageNet's 1000 classes at 224 px for VGG, GoogLeNet and
ResNet-18..152; CIFAR-10 for LeNet-5 and the CIFAR ResNets; 2 classes for vgg16_catdog).
"""

from __future__ import annotations

import argparse
import sys

from jaxcnn.cli.errors import run_reporting_errors
from jaxcnn.cli.options import Parser, key_value
from jaxcnn.config import ConfigError, reraise_as


def build_parser() -> argparse.ArgumentParser:
    from jaxcnn.models import list_models

    parser = Parser(prog="jaxcnn summary", description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("--arch", required=True, help=f"one of: {', '.join(list_models())}")
    parser.add_argument("--num-classes", type=int, help="classes (default: the architecture's usual data)")
    parser.add_argument("--input-size", type=int, nargs="+", metavar="H [W]",
                        help="input height and optional width (default: square; the architecture's usual size)")
    parser.add_argument("--channels", type=int, help="input channels (default: the architecture's usual data, 3)")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="batch size for the activation-memory estimate (default 1)")
    parser.add_argument("--depth", type=int, default=None,
                        help="summarise modules this many levels down (default: every layer)")
    parser.add_argument("--model-opt", "--option", dest="option", type=key_value, action="append", default=[],
                        metavar="KEY=VALUE", help="model option, e.g. head=classic (repeatable), as in jaxcnn train")
    return parser


def run(args: argparse.Namespace) -> int:
    from jaxcnn.models import create_model
    from jaxcnn.models.registry import usual_data
    from jaxcnn.report import format_summary, summarize

    with reraise_as("--arch"):
        classes, size, channels = usual_data(args.arch)
    num_classes = classes if args.num_classes is None else args.num_classes
    height, width = (size, size) if args.input_size is None else (args.input_size[0], args.input_size[-1])
    channels = channels if args.channels is None else args.channels
    if num_classes < 1:
        raise ConfigError("--num-classes", f"must be >= 1, got {num_classes}")
    with reraise_as("--model-opt"):
        model = create_model(args.arch, num_classes, **dict(args.option))
    with reraise_as("--input-size"):  # e.g. smaller than the model's minimum
        summary = summarize(model, (height, width, channels), batch_size=args.batch_size, depth=args.depth)
    options = "".join(f", {k}={v!r}" for k, v in args.option)
    print(format_summary(summary, f"{args.arch} ({num_classes} classes{options})"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.input_size is not None and len(args.input_size) > 2:
        parser.error("--input-size takes H or H W")
    return run_reporting_errors(lambda: run(args), {})


if __name__ == "__main__":
    sys.exit(main())
