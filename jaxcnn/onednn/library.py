"""Which CPU convolution runs: oneDNN through the XLA FFI, or XLA's own; loaded once per process.

`JAXCNN_CPU_CONV` (or `jaxcnn.models.cpu_conv.conv_settings(backend=...)`) chooses:

- `auto` (default): oneDNN where the extension builds and loads, else XLA's convolution with one
  line saying why, never an error;
- `onednn`: oneDNN or a `CpuConvUnavailableError` saying why not;
- `xla`: XLA's convolution (and jaxcnn's XLA:CPU rewrites, `cpu_conv`).
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import logging
import os

from jaxcnn.errors import UserError

MODES = ("auto", "onednn", "xla")
TARGETS = ("jaxcnn_conv_forward", "jaxcnn_conv_backward_data", "jaxcnn_conv_backward_weights")
log = logging.getLogger("jaxcnn")


class CpuConvUnavailableError(UserError, RuntimeError):
    """JAXCNN_CPU_CONV=onednn was asked for and the extension cannot be built or loaded here."""


@dataclasses.dataclass(frozen=True)
class Extension:
    """The loaded extension: which dtypes oneDNN implements on this CPU, its OpenMP threads."""

    path: str
    float32: bool
    bfloat16: bool
    threads: int

    def supports(self, dtype) -> bool:
        name = getattr(dtype, "name", str(dtype))
        return {"float32": self.float32, "bfloat16": self.bfloat16}.get(name, False)


def check_mode(value: str, source: str = "JAXCNN_CPU_CONV") -> str:
    mode = str(value).strip().lower()
    if mode not in MODES:
        raise ValueError(f"{source}={value!r}: expected one of {', '.join(MODES)}")
    return mode


@functools.cache
def _load() -> Extension | str:
    """The extension, built and registered with XLA for the CPU platform; or why not (one line)."""
    import jax

    from jaxcnn.onednn.build import BuildError, library_path
    from jaxcnn.system import usable_cpus

    try:
        path = library_path()
    except BuildError as why:
        return str(why)
    try:
        # jaxlib links its own oneDNN (3.7): RTLD_DEEPBIND makes this library use the 3.2 it was
        # built against, or every primitive fails with "could not execute a primitive".
        library = ctypes.CDLL(str(path), mode=os.RTLD_LOCAL | os.RTLD_DEEPBIND)
    except OSError as why:
        return f"{path.name} does not load ({why})"
    threads = usable_cpus()
    library.jaxcnn_onednn_set_threads(ctypes.c_int(threads))
    float32, bfloat16 = (bool(library.jaxcnn_onednn_supports(ctypes.c_int(t))) for t in (0, 1))
    if not float32:
        return "oneDNN 3.2 has no float32 convolution for this CPU"
    for target in TARGETS:
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, target)), platform="cpu")
    _load.library = library  # keep it loaded as long as XLA holds its handlers
    return Extension(str(path), float32, bfloat16, threads)


def extension(mode: str) -> Extension | None:
    """The extension `mode` asks for: None for `xla`, and for `auto` where it is unavailable
    (logged once); `onednn` raises where it is unavailable."""
    if mode == "xla":
        return None
    loaded = _load()
    if isinstance(loaded, Extension):
        return loaded
    if mode == "onednn":
        raise CpuConvUnavailableError(f"JAXCNN_CPU_CONV=onednn: the oneDNN convolutions are unavailable: {loaded}")
    _note_fallback(loaded)
    return None


_said: set[str] = set()  # fallback reasons already told (by `_note_fallback` or a caller of `describe`)


def _note_fallback(why: str) -> None:
    if why not in _said:
        _said.add(why)
        log.warning(f"CPU convolutions: XLA's (jaxcnn's oneDNN extension is unavailable: {why})")


def describe(mode: str) -> str:
    """One line for logs and benchmark records: which CPU convolution `mode` runs, and why (the
    caller says it, so a fallback is not told a second time)."""
    if mode == "xla":
        return "xla (JAXCNN_CPU_CONV=xla)"
    loaded = _load()
    if isinstance(loaded, Extension):
        dtypes = "float32" + (" and bfloat16" if loaded.bfloat16 else "; bfloat16 on XLA (no CPU support)")
        return f"onednn 3.2 ({dtypes}; {loaded.threads} OpenMP threads)"
    if mode == "onednn":
        raise CpuConvUnavailableError(f"JAXCNN_CPU_CONV=onednn: the oneDNN convolutions are unavailable: {loaded}")
    _said.add(loaded)
    return f"xla (oneDNN unavailable: {loaded})"
