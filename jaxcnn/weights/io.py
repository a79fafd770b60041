"""Reading and writing torch state_dicts as {name: numpy array}: .pth / .pt through torch (when
installed), .safetensors through `safetensors.numpy` (no torch needed)."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

TORCH_SUFFIXES = (".pth", ".pt")
SUFFIXES = (*TORCH_SUFFIXES, ".safetensors")
Source = str | os.PathLike | Mapping[str, Any]


def read_state_dict(source: Source) -> dict[str, np.ndarray]:
    """A state_dict from a .pth / .pt / .safetensors file or a mapping of arrays (or tensors)."""
    if isinstance(source, Mapping):
        return {str(key): _to_numpy(value) for key, value in source.items()}
    path = _checked_path(source)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return load_file(path)
    torch = _import_torch(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        found = list(state)[:8] if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(f"{path} does not hold a state_dict (a mapping of names to tensors); "
                         f"found {found}. Save `model.state_dict()`, or extract it from the "
                         "checkpoint, e.g. checkpoint['state_dict']")
    return {key: _to_numpy(value) for key, value in state.items()}


def write_state_dict(state: Mapping[str, np.ndarray], path: str | os.PathLike) -> pathlib.Path:
    """Write `state` to a .pth / .pt (torch.save) or .safetensors file; returns the path."""
    path = _checked_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {key: np.ascontiguousarray(value) for key, value in state.items()}
    if path.suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file(arrays, path)
    else:
        torch = _import_torch(path)
        writable = {key: value if value.flags.writeable else value.copy() for key, value in arrays.items()}
        torch.save({key: torch.from_numpy(value) for key, value in writable.items()}, path)
    return path


def _checked_path(path: str | os.PathLike) -> pathlib.Path:
    path = pathlib.Path(path)
    if path.suffix not in SUFFIXES:
        raise ValueError(f"unsupported weights file {str(path)!r}: use one of "
                         f"{', '.join(SUFFIXES)} (or pass a dict of arrays)")
    return path


def _import_torch(path: pathlib.Path):
    try:
        import torch
    except ImportError:
        raise ImportError(f"{path.name}: {path.suffix} files need PyTorch: `pip install torch` "
                          "(its CPU build is enough), or use a .safetensors file") from None
    return torch


def _to_numpy(value: Any) -> np.ndarray:
    """numpy view of a numpy / JAX array or a torch tensor (bfloat16 tensors as float32)."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.asarray(value)
