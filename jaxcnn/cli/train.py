"""`jaxcnn train`: train an image classifier, e.g. `jaxcnn train --arch vgg16 --data catdog`.

Options come from defaults, then the dataset's training preset (`jaxcnn.data.presets`: the
optimizer and learning rate where none is set), then a `--recipe NAME` shipped with jaxcnn, then a `--config FILE`
(JSON or YAML; a run's `config.json` works), then the flags given; every flag is an option of `jaxcnn.RunConfig`. `--resume RUN` continues a
run with its recorded config and accepts only the options marked resumable (`--epochs`,
`--workers`, `--prefetch`, `--input-pipeline`, `--progress`, and how the processes meet:
`--distributed --coordinator --num-processes --process-id`).

Several processes (hosts) run one training run when each runs the same command with
`--coordinator HOST:PORT --num-processes N --process-id I` (or under `srun` / `mpirun`):
`jax.distributed` starts before anything else touches JAX (`jaxcnn.distributed`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from jaxcnn.run_config import RunConfig, default_values
from jaxcnn.cli.errors import CommandError, run_reporting_errors
from jaxcnn.cli.options import Parser, add_flags, as_nested, flag_names, given_options
from jaxcnn.config import differences, dump_yaml, flatten, load_file, merge, reraise_as
from jaxcnn.data.presets import training_preset
from jaxcnn.recipes import recipe_path


def build_parser() -> tuple[argparse.ArgumentParser, list]:
    parser = Parser(
        prog="jaxcnn train", description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        epilog="Values: defaults < --recipe < --config FILE < flags. Boolean flags have a --no- form.",
    )
    parser.add_argument("--config", metavar="FILE", help="JSON or YAML config file (a run's config.json works); "
                                                         "flags override it")
    parser.add_argument("--recipe", metavar="NAME",
                        help="start from a recipe shipped with jaxcnn (cifar-resnet: He et al.'s CIFAR ResNets); "
                             "--config and flags override it")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as YAML (what differs from the defaults first) and exit")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run in a non-empty --out, moving its old contents to <out>.old-<time>/")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue a run from its last checkpoint with its recorded config; only "
                             "--epochs (to extend it), --workers, --progress and the multi-process flags "
                             "may be given with it")
    table = add_flags(parser, RunConfig, dict(flatten(default_values())))
    return parser, table


def resolve(args: argparse.Namespace, table: list) -> RunConfig:
    """The run's config from the parsed arguments (see the module docstring)."""
    given = given_options(args, table)
    if args.resume is None:
        # from_dict lays the dataset's training preset under what the user set, the defaults under that
        return RunConfig.from_dict(user_values(args, table)).require_complete()

    from jaxcnn.run_record import load_config

    for flag in ("config", "recipe", "overwrite"):
        if getattr(args, flag):
            raise CommandError(f"--{flag} cannot be combined with --resume "
                               "(a resumed run keeps its recorded config and its folder)")
    recorded = load_config(args.resume).to_dict()
    recorded["out"] = args.resume
    recorded_values = dict(flatten(recorded))
    conflicts = [
        f"{flag.flag} (recorded: {_shown(recorded_values[flag.path])})"
        for flag in table
        if flag.path in given and not flag.resumable and not _same(flag.path, given[flag.path], recorded_values)
    ]
    if conflicts:
        raise CommandError(
            f"--resume continues {args.resume} with its recorded config; these flags would change it: "
            f"{', '.join(conflicts)}. Only {', '.join(flag.flag for flag in table if flag.resumable)} may change "
            "on resume; "
            f"to start a new run from this one, use --config {os.path.join(args.resume, 'config.json')}"
        )
    return RunConfig.from_dict(merge(recorded, as_nested(given)))


def user_values(args: argparse.Namespace, table: list) -> dict:
    """What the user set for a new run, as a nested dict: `--recipe` < `--config` < flags."""
    values = {}
    with reraise_as("recipe"):
        recipe = [recipe_path(args.recipe)] if args.recipe else []
    for path in recipe + ([args.config] if args.config else []):
        values = merge(values, load_file(path))
    return merge(values, as_nested(given_options(args, table)))


def preset_line(args: argparse.Namespace, table: list) -> str | None:
    """The line that names the options a new run takes from its dataset's training preset."""
    if args.resume is not None:
        return None
    values = user_values(args, table)
    added = training_preset(values)
    if not added:
        return None
    shown = " ".join(f"{flag.flag} {added[flag.path]}" for flag in table if flag.path in added)
    return f"From the {values['data']['name']} preset (not set by flags, --config or --recipe): {shown}"


def _same(path: str, value, recorded: dict) -> bool:
    if path == "out":
        return os.path.realpath(value) == os.path.realpath(recorded["out"])
    old = recorded[path]
    return value == (tuple(old) if isinstance(old, list) else old)


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def print_config(config: RunConfig, preset: str | None = None) -> None:
    values = config.to_dict()
    changed = differences(values, default_values())
    header = ["jaxcnn train config: usable as --config FILE"] + ([preset] if preset else [])
    header += ["differs from the defaults:"] + [f"  {path}: {value!r} (default {default!r})"
                                               for path, value, default in changed]
    print(dump_yaml(values, header), end="")


def run(args: argparse.Namespace, table: list) -> int:
    from jaxcnn.termination import handle_termination

    with handle_termination():  # Ctrl-C / SIGTERM: finish the save, report, exit 130 / 143
        config = resolve(args, table)
        preset = preset_line(args, table)
        if args.print_config:
            print_config(config, preset)
            return 0
        from jaxcnn.cli.logs import console_logging
        from jaxcnn.distributed import initialize, is_primary
        from jaxcnn.experiment import run as run_training

        initialize(config.distributed)  # first: jax.distributed must start before JAX uses a device

        with console_logging():
            if preset and is_primary():
                logging.getLogger("jaxcnn").info(preset)
            run_training(config, resume=args.resume is not None, overwrite=args.overwrite)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser, table = build_parser()
    args = parser.parse_args(argv)
    return run_reporting_errors(lambda: run(args, table), flag_names(RunConfig))


if __name__ == "__main__":
    sys.exit(main())
