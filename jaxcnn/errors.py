"""The two kinds of failure jaxcnn tells apart: the user's (said in one line) and its own (a bug).

A `UserError` is a mistake in what the user gave: an option, a config file, data, a weights
file, a run folder, an optional dependency that is not installed. Its message is one line that
names the input and what to do; the command line prints it and exits 2, with no traceback.
Anything else that escapes a command is a bug in jaxcnn (or in a library under it) and keeps
its traceback.

The classes that library callers already catch keep their standard bases (`ConfigError` is a
`ValueError`, `DataNotFoundError` a `FileNotFoundError`), so `except ValueError` goes on
working; only the command line relies on `UserError`.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input; the message is one line saying which and what to do."""


class WeightsFileError(UserError, ValueError):
    """A weights file (.pth, .pt, .safetensors) cannot be read or does not fit the model."""


class MissingDependencyError(UserError, ImportError):
    """An optional dependency (torch, tensorflow-datasets, onnx, ...) is needed and not installed;
    the message names the package and the pip command (or extra) that installs it."""
