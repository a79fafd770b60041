"""Compile `conv.cc` against the pip-installed oneDNN and jaxlib's XLA FFI headers, once per machine.

The library is built on first use, like torch's C++ extensions, not by `pip install`: the source
is the project's own file, the compiler and oneDNN are the machine's, and a machine without a
compiler still installs jaxcnn (it then runs XLA's convolutions). The result is cached under
`$JAXCNN_CACHE_DIR` (default `~/.cache/jaxcnn`), keyed by everything that changes the binary:
the source, the compiler, jaxlib and oneDNN. A file lock lets parallel processes (tests,
multi-process runs) build it once.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import pathlib
import shutil
import subprocess
import sys
import time

from jaxcnn.compilation_cache import cache_root

SOURCE = pathlib.Path(__file__).with_name("conv.cc")
LIBRARY_NAME = "libjaxcnn_onednn.so"
HEADERS_PACKAGE = "onednn-devel-cpu-gomp"  # oneDNN 3.2's headers; requires the library's package:
LIBRARY_PACKAGE = "onednn-cpu-gomp"  # libdnnl.so.3, built with GNU OpenMP
INSTALL_HINT = f"pip install '{HEADERS_PACKAGE}==2023.2.0'"


class BuildError(Exception):
    """The extension cannot be built here; the message says why in one line."""


def onednn_paths() -> tuple[pathlib.Path, pathlib.Path, str]:
    """(include dir, library dir, version) of the pip-installed oneDNN."""
    try:
        headers = importlib.metadata.distribution(HEADERS_PACKAGE)
        library = importlib.metadata.distribution(LIBRARY_PACKAGE)
    except importlib.metadata.PackageNotFoundError as missing:
        raise BuildError(f"oneDNN is not installed ({missing.name} missing; {INSTALL_HINT})") from None
    header = next((f for f in headers.files or () if f.as_posix().endswith("oneapi/dnnl/dnnl.hpp")), None)
    shared = next((f for f in library.files or () if f.name == "libdnnl.so.3"), None)
    if header is None or shared is None:
        raise BuildError(f"the {HEADERS_PACKAGE} / {LIBRARY_PACKAGE} install lacks dnnl.hpp or libdnnl.so.3")
    include, lib = pathlib.Path(header.locate()).parents[2], pathlib.Path(shared.locate()).parent
    return include.resolve(), lib.resolve(), library.version


def _compiler() -> tuple[str, str]:
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        raise BuildError(f"no C++ compiler ({os.environ.get('CXX', 'g++')}) on PATH")
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    return compiler, version.splitlines()[0] if version else "unknown"


def library_path() -> pathlib.Path:
    """The built library, compiling it first when this machine has no build of this source."""
    import jax.ffi
    import jaxlib

    if not (sys.platform == "linux" and os.uname().machine == "x86_64"):
        raise BuildError(f"built for Linux x86-64 only (this is {sys.platform} {os.uname().machine})")
    include, lib, onednn_version = onednn_paths()
    compiler, compiler_version = _compiler()
    key = hashlib.sha256("\0".join(
        [SOURCE.read_text(), compiler_version, jaxlib.__version__, onednn_version, str(lib)]).encode()).hexdigest()
    target = cache_root() / f"onednn-conv-{key[:16]}" / LIBRARY_NAME
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / ".lock"):
        if target.exists():  # another process built it while this one waited
            return target
        print("jaxcnn: compiling its oneDNN convolutions for this machine (once, a few seconds)...",
              file=sys.stderr, flush=True)
        started = time.perf_counter()
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        command = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-w",
                   f"-I{include}", f"-I{jax.ffi.include_dir()}", str(SOURCE), f"-L{lib}", "-l:libdnnl.so.3",
                   f"-Wl,-rpath,{lib}", "-o", str(partial)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            log = target.parent / "build.log"
            log.write_text(" ".join(command) + "\n\n" + done.stderr)
            first = next((line for line in done.stderr.splitlines() if "error" in line), "no message")
            raise BuildError(f"compiling {SOURCE.name} failed ({first.strip()}; full output in {log})")
        os.replace(partial, target)
        print(f"jaxcnn: compiled in {time.perf_counter() - started:.0f} s into {target.parent}",
              file=sys.stderr, flush=True)
    return target


@contextlib.contextmanager
def _locked(path: pathlib.Path):
    import fcntl  # POSIX only, as the build is (checked before)

    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
