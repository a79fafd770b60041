"""How the commands fail: one line on stderr naming the flag, and an exit status.

Library errors name library options (`optim.learning_rate`); here they are translated to the
flags that set them (`--lr`). Exit status 2: a bad option or input (`jaxcnn.errors.UserError`;
nothing was written); 1: training failed (a non-finite loss, a checkpoint that could not be
saved, an I/O error) or a bug (its traceback is kept);
130 / 143: stopped by SIGINT / SIGTERM (what was saved is kept; the run said how to continue).
"""

from __future__ import annotations

import re
import sys
import traceback
from typing import Callable

from jaxcnn.config import ConfigError
from jaxcnn.errors import UserError

USAGE_ERROR, TRAINING_FAILED = 2, 1
FLAG_OF = {"config": "--config", "resume": "--resume", "recipe": "--recipe"}


class CommandError(UserError):
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
    """Run `run()`. A user's mistake (`jaxcnn.errors.UserError`) becomes `error: ...` on stderr
    and exit 2; a failure of the run itself (a non-finite loss, a checkpoint or file that could
    not be written) one line and exit 1; anything else is a bug: its traceback, a line saying
    so, exit 1."""
    from jaxcnn.compilation_cache import use_compilation_cache
    from jaxcnn.output import safe_console
    from jaxcnn.termination import exit_status
    from jaxcnn.train.checkpoints import CheckpointError

    safe_console()  # a file or class name in any script, or not UTF-8 at all, never fails a print
    use_compilation_cache()  # what an earlier command compiled is not compiled again
    try:
        return run() or 0
    except KeyboardInterrupt as interrupt:
        return exit_status(interrupt)
    except UserError as error:
        print(f"error: {message(error, names)}", file=sys.stderr)
        return USAGE_ERROR
    except (FloatingPointError, OSError, CheckpointError) as error:
        print(f"error: {message(error, names)}", file=sys.stderr)
        return TRAINING_FAILED
    except Exception:
        traceback.print_exc()
        print("error: this is a bug in jaxcnn (or a library it uses), not a mistake in your input: "
              "the traceback above says where; please report it", file=sys.stderr)
        return TRAINING_FAILED
