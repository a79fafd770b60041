"""Shared test set-up: CPU only, and the repository root importable for `scripts/`."""

import os
import pathlib
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
