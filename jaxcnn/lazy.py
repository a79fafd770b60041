"""Package attributes imported on first use (PEP 562), so that importing a package imports only
the submodules a caller touches (a grain worker, a run folder's reader, a config section)."""

from __future__ import annotations

import importlib
from typing import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """The module `__getattr__` of `package` serving `exports` (name -> module). No name may be a
    submodule's: importing that submodule would bind the module to the name instead."""

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
