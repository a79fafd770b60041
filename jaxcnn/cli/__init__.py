"""The `jaxcnn` command: `jaxcnn <command> [options]`; `jaxcnn <command> --help` for each."""

from __future__ import annotations

import difflib
import importlib
import sys

from jaxcnn.system import keep_freed_memory

# Before JAX starts its threads: XLA:CPU's per-step buffers are then reused, not faulted in anew.
keep_freed_memory()

# command -> (module with `main(argv) -> int`, one line of help); imported only when run.
COMMANDS = {
    "train": ("jaxcnn.cli.train", "train a model (on a dataset name, an image folder, or a --config file)"),
    "summary": ("jaxcnn.cli.summary", "print a model's layer table and parameter count"),
    "evaluate": ("jaxcnn.cli.evaluate", "evaluate a trained run: metrics, confusion matrix, mistakes, calibration"),
    "predict": ("jaxcnn.cli.predict", "classify image files, folders or globs with a trained run"),
    "export": ("jaxcnn.cli.export", "write a trained run as a jax.export artifact or an ONNX file that runs without jaxcnn"),
    "compare": ("jaxcnn.cli.compare", "compare runs: their curves in one figure, and a table"),
    "export-torch": ("jaxcnn.cli.export_torch", "write a trained run as a torchvision-format state_dict (.pth/.safetensors)"),
}


def usage() -> str:
    lines = ["usage: jaxcnn <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines + ["", "`jaxcnn <command> --help` lists a command's options."])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        print(f"error: unknown command {command!r}.{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[command][0]).main(rest)
