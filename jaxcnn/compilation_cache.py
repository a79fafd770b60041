"""Compiled programs kept on disk, so a command does not compile again what an earlier one did.

`jaxcnn evaluate`, `predict`, `export`, a resume or a second run of the same model and batch
size would otherwise spend seconds to minutes compiling (GoogLeNet's initialisation and train step:
30-50 s on a 2-core CPU) before doing anything. JAX's own persistent cache does the work (`jax_compilation_cache_dir`);
this module only chooses where it lives and bounds it. The folder is per machine, as XLA:CPU
compiles for the CPU it runs on and a home folder can be shared by hosts with other CPUs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib
import platform

DEFAULT_MAX_BYTES = 2 * 2**30  # least recently used programs are deleted above this


def cache_root() -> pathlib.Path:
    """Where jaxcnn keeps what it builds for this host: `$JAXCNN_CACHE_DIR`, else
    `$XDG_CACHE_HOME/jaxcnn` (default `~/.cache/jaxcnn`)."""
    root = os.environ.get("JAXCNN_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "jaxcnn")
    return pathlib.Path(root)


def machine_key() -> str:
    """A short name for this CPU's model and instruction set (what XLA:CPU compiles for)."""
    described = f"{platform.system()} {platform.machine()} {platform.processor()}"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            first = cpuinfo.read().split("\n\n")[0]
        described += "".join(line for line in first.splitlines()
                             if line.split(":")[0].strip() in ("vendor_id", "cpu family", "model", "flags"))
    except OSError:
        pass
    return hashlib.sha256(described.encode()).hexdigest()[:16]


def use_compilation_cache(max_bytes: int = DEFAULT_MAX_BYTES) -> pathlib.Path | None:
    """Have JAX keep compiled programs (those that took over a second) in
    `cache_root()/xla/<machine>`, at most `max_bytes`; the folder, or None where the user chose
    otherwise (`JAX_COMPILATION_CACHE_DIR` or `jax_compilation_cache_dir` set: that folder is
    used as given; `JAX_ENABLE_COMPILATION_CACHE=false`: none) or the folder cannot be made.
    Call it before the first compilation; the command line does."""
    import jax

    if jax.config.jax_compilation_cache_dir or not jax.config.jax_enable_compilation_cache \
            or importlib.util.find_spec("filelock") is None:  # a dependency; without it JAX fails to bound
        return None
    path = cache_root() / "xla" / machine_key()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: compile every time, without a warning per program
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    if "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ:
        # A bound also makes JAX lock the folder, so parallel processes never read a half-written file.
        jax.config.update("jax_compilation_cache_max_size", max_bytes)
    return path
