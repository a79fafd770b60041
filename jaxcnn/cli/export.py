"""`jaxcnn export`: write a trained run as a `jax.export` artifact or an ONNX file, e.g.
`jaxcnn export runs/fm --output fm-export`.

--format jax (default): DIR/model.jaxexport is the serialized evaluation forward pass: uint8 NHWC
images at the model's input size in, class probabilities out, normalization inside. It loads and
runs with plain jax (and flatbuffers), without jaxcnn or flax. --format onnx: DIR/model.onnx, the
same forward pass for ONNX Runtime and other ONNX tools (the `onnx` extra exports it);
--input-layout nchw-float32 makes its input float32 NCHW, normalized by the caller. DIR/model.json
holds the class names and the input spec.
"""

from __future__ import annotations

import argparse
import os
import sys

from jaxcnn.cli.errors import CommandError
from jaxcnn.cli.options import Parser
from jaxcnn.cli.trained import add_run_arguments, parse_and_run

FORMATS = ("jax", "onnx")
INPUT_LAYOUTS = ("nhwc-uint8", "nchw-float32")  # jaxcnn.onnx_export.INPUT_LAYOUTS, without importing onnx


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="jaxcnn export", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    add_run_arguments(parser, batch_help="fix the artifact's batch size [default: any batch size]")
    parser.add_argument("--output", default=None, metavar="DIR", help="output folder [default: RUN/export]")
    parser.add_argument("--format", default="jax", metavar="{jax,onnx}",
                        help="jax: model.jaxexport (jax.export); onnx: model.onnx (opset 17) [default: jax]")
    parser.add_argument("--input-layout", default=None, metavar="{nhwc-uint8,nchw-float32}",
                        help="the ONNX input: uint8 NHWC images normalized inside the graph, or float32 NCHW "
                             "normalized by the caller [default: nhwc-uint8]")
    return parser


def check_format(args: argparse.Namespace) -> None:
    """One line for a format or input layout that does not exist or does not apply."""
    if args.format not in FORMATS:
        raise CommandError(f"--format {args.format!r}: expected {' or '.join(FORMATS)}")
    if args.input_layout is not None and args.format != "onnx":
        raise CommandError("--input-layout applies to --format onnx only")
    if args.input_layout is not None and args.input_layout not in INPUT_LAYOUTS:
        raise CommandError(f"--input-layout {args.input_layout!r}: expected {' or '.join(INPUT_LAYOUTS)}")


def run(args: argparse.Namespace) -> int:
    from jaxcnn.inference import load_run
    from jaxcnn.inference.export import SPEC
    from jaxcnn.output import check_writable

    check_format(args)
    if args.output:  # before the model is loaded; the default, RUN/export, once RUN is known to be a run
        check_writable(args.output, what="--output", folder=True)
    if args.format == "onnx":
        from jaxcnn.onnx_export.errors import require_onnx

        require_onnx()  # before loading the run: a missing extra is said at once
    model = load_run(args.run, args.checkpoint, ema=args.ema)
    out_dir = args.output or os.path.join(args.run, "export")
    if args.format == "onnx":
        from jaxcnn.onnx_export import ARTIFACT, export_run_onnx

        spec = export_run_onnx(model, out_dir, input_layout=args.input_layout or INPUT_LAYOUTS[0],
                               batch_size=args.batch_size)
        target = f"ONNX (opset {spec['opset']})"
        dtype = f"{spec['input']['dtype']} {spec['input']['layout']}"
    else:
        from jaxcnn.inference.export import ARTIFACT, export_model

        try:
            spec = export_model(model, out_dir, batch_size=args.batch_size)
        except ImportError as error:
            raise CommandError(str(error)) from None
        target, dtype = ", ".join(spec["platforms"]), "uint8"
    size = os.path.getsize(os.path.join(out_dir, ARTIFACT))
    shape = ["N" if d is None else str(d) for d in spec["input"]["shape"]]
    print(f"Exported {spec['arch']} ({model.tag} checkpoint, epoch {spec['epoch']}) for "
          f"{target}: {dtype} ({', '.join(shape)}) -> probabilities over "
          f"{len(spec['class_names'])} classes\n  {os.path.join(out_dir, ARTIFACT)} ({size / 2**20:.1f} MiB)\n"
          f"  {os.path.join(out_dir, SPEC)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return parse_and_run(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
