"""How the commands fail: one line on stderr naming the flag, and an exit status.

Library errors name library options (`optim.learning_rate`); here they are translated to the
flags that set them (`--lr`). Exit status 2: a bad option or input (nothing was written);
1: training failed (a non-finite loss, a checkpoint that could not be saved, an I/O error);
130 / 143: stopped by SIGINT / SIGTERM (what was saved is kept; the run said how to continue).
"""

from __future__ import annotations

import re
import sys
from typing import Callable

from jaxcnn.config import ConfigError

USAGE_ERROR, TRAINING_FAILED = 2, 1
FLAG_OF = {"config": "--config", "resume": "--resume", "recipe": "--recipe"}


class CommandError(Exception):
    """A command-line mistake, said in one line."""


def to_flags(text: str, names: dict[str, str]) -> str:
    """`text` with every dotted option path that has a flag replaced by the flag."""
    for path in sorted(names, key=len, reverse=True):
        text = re.sub(rf"(?<![\w.-]){re.escape(path)}(?![\w])", names[path], text)
    return text


def message(error: BaseException, names: dict[str, str]) -> str:
    if isinstance(error, ConfigError):
        flag = names.get(error.option) or FLAG_OF.get(error.option) or error.option
        return f"{flag}: {to_flags(error.reason, names)}"
    return to_flags(str(error), names)


def run_reporting_errors(run: Callable[[], int | None], names: dict[str, str]) -> int:
    """Run `run()`; a known error becomes `error: ...` on stderr and its exit status."""
    from jaxcnn.data import DataNotFoundError
    from jaxcnn.termination import exit_status
    from jaxcnn.train.checkpoints import CheckpointError

    try:
        return run() or 0
    except KeyboardInterrupt as interrupt:
        return exit_status(interrupt)
    except (CommandError, ValueError, FileNotFoundError, DataNotFoundError) as error:
        print(f"error: {message(error, names)}", file=sys.stderr)
        return USAGE_ERROR
    except (FloatingPointError, OSError, CheckpointError) as error:
        print(f"error: {message(error, names)}", file=sys.stderr)
        return TRAINING_FAILED
