"""Named training recipes shipped with jaxcnn: config files usable as `jaxcnn train --recipe NAME`
(or `--config` with their path). Each is a small diff from the defaults, not a copy of them."""

from __future__ import annotations

import difflib
import pathlib

_HERE = pathlib.Path(__file__).parent


def list_recipes() -> list[str]:
    return sorted(path.stem for path in _HERE.glob("*.yaml"))


def recipe_path(name: str) -> pathlib.Path:
    """The config file of recipe `name`; a ValueError listing the recipes for an unknown name."""
    path = _HERE / f"{name}.yaml"
    if not path.is_file():
        close = difflib.get_close_matches(name, list_recipes(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown recipe {name!r}.{hint} Valid recipes: {', '.join(list_recipes())}")
    return path
