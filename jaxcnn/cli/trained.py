"""What the commands that use a trained run share: how RUN, --checkpoint and --batch-size are given,
checked, and how the command's errors are reported."""

from __future__ import annotations

import argparse
from typing import Callable

from jaxcnn.cli.errors import run_reporting_errors


def add_run_arguments(parser: argparse.ArgumentParser,
                      batch_help: str = "images per forward pass [default: the run's batch size]") -> None:
    """RUN, --checkpoint and --batch-size: how every command that uses a trained run picks it."""
    parser.add_argument("run", metavar="RUN", help="a run folder written by `jaxcnn train`")
    parser.add_argument("--checkpoint", default="best",
                        help="'best', 'last' or an epoch number among the kept checkpoints [default: best]")
    parser.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                        help="use the checkpoint's EMA weights (runs trained with --ema) [default: for --checkpoint "
                             "best when the run chose it by an EMA metric]")
    parser.add_argument("--batch-size", type=int, default=None, help=batch_help)


def parse_and_run(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int],
                  argv: list[str] | None, positive: tuple[str, ...] = ("batch_size",)) -> int:
    """Parse `argv`, reject the `positive` options below 1, then `run(args)` with errors reported."""
    args = parser.parse_args(argv)
    for name in positive:
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    return run_reporting_errors(lambda: run(args), {"resume": "RUN"})
