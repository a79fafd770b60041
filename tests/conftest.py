"""Shared test set-up: CPU only, and the repository root importable for `scripts/`."""

import os
import pathlib
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def pytest_sessionstart(session):
    """`JAXCNN_REQUIRE=torch,tensorflow_datasets` (set by .ci/run): those optional packages must be
    importable, so that the tests that need them run and can fail instead of being skipped."""
    import importlib

    missing = []
    for name in filter(None, os.environ.get("JAXCNN_REQUIRE", "").split(",")):
        try:
            importlib.import_module(name)
        except ImportError as error:
            missing.append(f"{name} ({error})")
    if missing:
        import pytest

        pytest.exit(f"JAXCNN_REQUIRE names packages that are not installed: {', '.join(missing)}", returncode=1)

    # As the `jaxcnn` command does, before this process compiles anything: the many tests that train
    # or evaluate the same small models then compile each program once (JAX_ENABLE_COMPILATION_CACHE=false
    # turns it off).
    from jaxcnn.compilation_cache import use_compilation_cache

    use_compilation_cache()
