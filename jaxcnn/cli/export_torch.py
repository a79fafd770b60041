"""`jaxcnn export-torch`: a trained run as a torchvision-format state_dict, e.g.
`jaxcnn export-torch runs/fm resnet20.safetensors` (or `.pth`, which needs torch installed).

The file's keys are torchvision's (`jaxcnn.weights`); torch's `load_state_dict(strict=True)`
accepts it into the twin `jaxcnn.weights.torch_models.torch_model(arch, num_classes, image_size,
channels)`. The run's input normalization is not in the weights: the command prints the exact
lines that build and load the twin, and the mean and std to normalize its inputs with.
"""

from __future__ import annotations

import argparse
import os
import sys

from jaxcnn.cli.options import Parser
from jaxcnn.cli.trained import add_run_arguments, parse_and_run


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="jaxcnn export-torch",
                    description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    add_run_arguments(parser, batch_help=argparse.SUPPRESS)
    parser.add_argument("output", metavar="OUT", help="the state_dict file: OUT.pth, OUT.pt or OUT.safetensors")
    return parser


def run(args: argparse.Namespace) -> int:
    import jax

    from jaxcnn.inference import load_run
    from jaxcnn.weights import save_torch_weights
    from jaxcnn.weights.io import checked_output

    checked_output(args.output)  # suffix, torch for .pth, a folder that takes it: before the model is loaded
    model = load_run(args.run, args.checkpoint, ema=args.ema)
    options = {k: v for k, v in model.config.model.options.items() if k not in ("dtype", "param_dtype")}
    path = save_torch_weights(jax.device_get(model.variables), model.config.model.arch, args.output,
                              input_shape=model.inputs.input_shape, **options)
    print(f"Exported {model.config.model.arch} ({model.tag} checkpoint, epoch {model.epoch}, "
          f"{len(model.class_names)} classes) as a torchvision-format state_dict: {path}")
    print(torch_hint(model.config.model.arch, model.inputs, options, str(path), os.path.join(model.run_dir, "config.json")))
    return 0


def torch_hint(arch: str, inputs, options: dict, path: str, config_path: str) -> str:
    """How to build, load and feed the PyTorch twin: runnable lines, then the input it expects."""
    height, width = inputs.image_size
    extra = "".join(f", {key}={value!r}" for key, value in options.items())
    if path.endswith(".safetensors"):
        imports, state = "from safetensors.torch import load_file", f"load_file({path!r})"
    else:
        imports, state = "import torch", f"torch.load({path!r}, weights_only=True)"
    numbers = lambda values: "[" + ", ".join(f"{v:.6g}" for v in values) + "]"  # noqa: E731
    return (
        "Load it in PyTorch:\n"
        f"    {imports}\n"
        "    from jaxcnn.weights.torch_models import torch_model\n"
        f"    model = torch_model({arch!r}, {inputs.num_classes}, image_size=({height}, {width}), "
        f"channels={inputs.channels}{extra}).eval()\n"
        f"    model.load_state_dict({state})\n"
        f"Feed it float32 NCHW batches (N, {inputs.channels}, {height}, {width}): pixels / 255, then (x - mean) / std "
        f"per channel with\n    mean {numbers(inputs.mean)}, std {numbers(inputs.std)} (not inside the weights; "
        f"resize images as the run did: {config_path} \"inputs\")."
    )


def main(argv: list[str] | None = None) -> int:
    return parse_and_run(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
