"""`jaxcnn export`: write a trained run as a `jax.export` artifact, e.g. `jaxcnn export runs/fm --output fm-export`.

DIR/model.jaxexport is the serialized evaluation forward pass: uint8 NHWC images at the model's
input size in, class probabilities out, normalization inside. It loads and runs with plain jax
(and flatbuffers), without jaxcnn or flax. DIR/model.json holds the class names and the input spec.
"""

from __future__ import annotations

import argparse
import os
import sys

from jaxcnn.cli.options import Parser
from jaxcnn.cli.trained import add_run_arguments, parse_and_run


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="jaxcnn export", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    add_run_arguments(parser, batch_help="fix the artifact's batch size [default: any batch size]")
    parser.add_argument("--output", default=None, metavar="DIR", help="output folder [default: RUN/export]")
    return parser


def run(args: argparse.Namespace) -> int:
    from jaxcnn.inference import load_run
    from jaxcnn.inference.export import ARTIFACT, SPEC, export_model
    from jaxcnn.output import check_writable

    if args.output:  # before the model is loaded; the default, RUN/export, once RUN is known to be a run
        check_writable(args.output, what="--output", folder=True)
    model = load_run(args.run, args.checkpoint, ema=args.ema)
    out_dir = args.output or os.path.join(args.run, "export")
    spec = export_model(model, out_dir, batch_size=args.batch_size)
    size = os.path.getsize(os.path.join(out_dir, ARTIFACT))
    shape = ["N" if d is None else str(d) for d in spec["input"]["shape"]]
    print(f"Exported {spec['arch']} ({model.tag} checkpoint, epoch {spec['epoch']}) for "
          f"{', '.join(spec['platforms'])}: uint8 ({', '.join(shape)}) -> probabilities over "
          f"{len(spec['class_names'])} classes\n  {os.path.join(out_dir, ARTIFACT)} ({size / 2**20:.1f} MiB)\n"
          f"  {os.path.join(out_dir, SPEC)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return parse_and_run(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
