"""Reading and writing torch state_dicts as {name: numpy array}: .pth / .pt through torch (when
installed), .safetensors through `safetensors.numpy` (no torch needed).

A file that cannot be read as a state_dict is a `WeightsFileError` naming it and why, in one line:
not a .safetensors file or a truncated one, a .pth that is no torch file, one holding pickled
objects that torch's `weights_only=True` refuses, one that is not a mapping of tensors. Files are
written whole or not at all (`jaxcnn.output.atomic_path`).
"""

from __future__ import annotations

import os
import pathlib
import pickle
import re
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxcnn.errors import MissingDependencyError, WeightsFileError
from jaxcnn.output import atomic_path, check_writable

TORCH_SUFFIXES = (".pth", ".pt")
SUFFIXES = (*TORCH_SUFFIXES, ".safetensors")
Source = str | os.PathLike | Mapping[str, Any]


class WeightsFileNotFoundError(WeightsFileError, FileNotFoundError):
    """No weights file at the path given."""


def read_state_dict(source: Source) -> dict[str, np.ndarray]:
    """A state_dict from a .pth / .pt / .safetensors file or a mapping of arrays (or tensors)."""
    if isinstance(source, Mapping):
        return {str(key): _to_numpy(value) for key, value in source.items()}
    path = _checked_path(source)
    if not path.is_file():
        raise WeightsFileNotFoundError(f"no weights file at {path}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    torch = _import_torch(path)
    state = _torch_load(torch, path)
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        found = list(state)[:8] if isinstance(state, Mapping) else type(state).__name__
        raise WeightsFileError(f"{path} does not hold a state_dict (a mapping of names to tensors); "
                               f"found {found}. Save `model.state_dict()`, or extract it from the "
                               "checkpoint, e.g. checkpoint['state_dict']")
    return {key: _to_numpy(value) for key, value in state.items()}


def _read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except (SafetensorError, ValueError, TypeError) as error:  # TypeError: a dtype numpy lacks (bfloat16)
        raise WeightsFileError(f"{path} is not a readable .safetensors file ({_first_line(error)}): "
                               "it may be truncated or another format") from None


def _torch_load(torch, path: pathlib.Path):
    """`torch.load(path, weights_only=True)`, its failures as one-line `WeightsFileError`s."""
    try:
        with warnings.catch_warnings():  # noise about the pickle protocol of a file that loads or is refused anyway
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        if refused is None:  # not a pickle of tensors at all
            raise WeightsFileError(f"{path} is not a readable PyTorch file (it does not unpickle): it may be "
                                   "truncated or another format") from None
        raise WeightsFileError(
            f"{path} is refused: besides tensors it holds pickled Python objects ({refused.group(1)}...), which "
            "torch.load(weights_only=True) does not unpickle because they can run arbitrary code. Only if you "
            "trust its source: load it with torch.load(path, weights_only=False) and torch.save its state_dict "
            "(model.state_dict(), or checkpoint['state_dict']) to a new .pth, or save it as .safetensors") from None
    except OSError:  # the file could not be read at all: said as such, not as a bad file
        raise
    except Exception as error:  # noqa: BLE001  (torch raises RuntimeError, KeyError, EOFError... for a bad file)
        raise WeightsFileError(f"{path} is not a readable PyTorch file ({type(error).__name__}: "
                               f"{_first_line(error)}): it may be truncated or another format") from None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0]


def checked_output(path: str | os.PathLike) -> pathlib.Path:
    """`path` checked before any work to be a weights file that can be written here: a supported
    suffix, torch installed for .pth / .pt, a folder that takes it (`jaxcnn.output.check_writable`)."""
    path = _checked_path(path)
    if path.suffix in TORCH_SUFFIXES:
        _import_torch(path)
    return check_writable(path, what="weights")


def write_state_dict(state: Mapping[str, np.ndarray], path: str | os.PathLike) -> pathlib.Path:
    """Write `state` to a .pth / .pt (torch.save) or .safetensors file, whole or not at all
    (an existing file stays as it was when writing fails); returns the path."""
    path = _checked_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {key: np.ascontiguousarray(value) for key, value in state.items()}
    torch = None if path.suffix == ".safetensors" else _import_torch(path)
    with atomic_path(path) as temporary:
        if torch is None:
            from safetensors.numpy import save_file

            save_file(arrays, temporary)
        else:
            writable = {key: value if value.flags.writeable else value.copy() for key, value in arrays.items()}
            torch.save({key: torch.from_numpy(value) for key, value in writable.items()}, temporary)
    return path


def _checked_path(path: str | os.PathLike) -> pathlib.Path:
    path = pathlib.Path(path)
    if path.suffix not in SUFFIXES:
        raise WeightsFileError(f"unsupported weights file {str(path)!r}: use one of "
                               f"{', '.join(SUFFIXES)} (or pass a dict of arrays)")
    return path


def _import_torch(path: pathlib.Path):
    try:
        import torch
    except ImportError:
        raise MissingDependencyError(
            f"{path.name}: {path.suffix} files need PyTorch: `pip install torch` (it is not installed; its CPU "
            "build is enough, as in the extra `pip install 'jaxcnn[parity]'`), or use a .safetensors file, "
            "which needs no torch") from None
    return torch


def _to_numpy(value: Any) -> np.ndarray:
    """numpy view of a numpy / JAX array or a torch tensor (bfloat16 tensors as float32)."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.asarray(value)
