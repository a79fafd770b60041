"""What a user can get wrong when exporting to ONNX: the extra not installed, a model or option
the exporter does not handle. Both are `UserError`s: one line, exit status 2 on the command line."""

from __future__ import annotations

from jaxcnn.errors import MissingDependencyError, UserError

INSTALL = 'pip install "jaxcnn[onnx]"'


class OnnxExportError(UserError, ValueError):
    """The model (a primitive or layer in it) or an option cannot be exported to ONNX; the message
    names the model, the primitive and where it comes from."""


def require_onnx():
    """The `onnx` module, or a `MissingDependencyError` naming the extra that installs it."""
    try:
        import onnx
    except ImportError:
        raise MissingDependencyError(f"ONNX export needs the onnx package: {INSTALL}") from None
    return onnx
