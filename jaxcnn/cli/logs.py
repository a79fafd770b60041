"""The console channel of the "jaxcnn" logger, set up once by the command line."""

from __future__ import annotations

import contextlib
import logging
import sys

from tqdm.contrib.logging import logging_redirect_tqdm


@contextlib.contextmanager
def console_logging(level: int = logging.INFO):
    """Log "jaxcnn" messages to stdout as plain lines, written around any live progress bar."""
    logger = logging.getLogger("jaxcnn")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))  # a record's `details` go to train.log only
    logger.addHandler(handler)
    logger.setLevel(level)
    propagate, logger.propagate = logger.propagate, False  # one line per message, whatever root has
    try:
        with logging_redirect_tqdm(loggers=[logger]):
            yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
