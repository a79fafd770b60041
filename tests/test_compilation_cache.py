"""`jaxcnn.compilation_cache`: where the commands keep compiled programs, and that what the user set
wins. That a second command loads the first one's programs is tested on a real run in
test_use_run.py."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

PROBE = """
import json
import jax
from jaxcnn.compilation_cache import machine_key, use_compilation_cache
path = use_compilation_cache()
print(json.dumps({"returned": None if path is None else str(path), "machine": machine_key(),
                  "dir": jax.config.jax_compilation_cache_dir, "max_size": jax.config.jax_compilation_cache_max_size}))
"""


def probe(tmp_path, **env) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")
            and k != "JAX_ENABLE_COMPILATION_CACHE"}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120,
                          env={**base, "PYTHONPATH": str(REPO_ROOT), "JAXCNN_CACHE_DIR": str(tmp_path), **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_the_cache_is_per_machine_under_jaxcnns_folder_and_bounded(tmp_path):
    seen = probe(tmp_path)
    assert seen["returned"] == seen["dir"] == str(tmp_path / "xla" / seen["machine"])
    assert len(seen["machine"]) == 16 and seen["max_size"] == 2 * 2**30


def test_a_folder_that_cannot_be_made_means_no_cache(tmp_path):
    (tmp_path / "a-file").write_text("")
    seen = probe(tmp_path / "a-file")
    assert seen["returned"] is None and seen["dir"] is None


@pytest.mark.parametrize("env, expected_dir, expected_max", [
    ({"JAX_COMPILATION_CACHE_DIR": "{tmp}/mine"}, "{tmp}/mine", -1),
    ({"JAX_ENABLE_COMPILATION_CACHE": "false"}, None, -1),
    ({"JAX_COMPILATION_CACHE_MAX_SIZE": "12345"}, "{tmp}/xla/{machine}", 12345),
], ids=["own folder", "cache off", "own bound"])
def test_what_the_user_set_wins(tmp_path, env, expected_dir, expected_max):
    seen = probe(tmp_path, **{k: v.format(tmp=tmp_path) for k, v in env.items()})
    if expected_dir is not None:
        expected_dir = expected_dir.format(tmp=tmp_path, machine=seen["machine"])
    assert seen["dir"] == expected_dir and seen["max_size"] == expected_max
    # jaxcnn says it chose the folder only when it did
    assert seen["returned"] == (expected_dir if "JAX_COMPILATION_CACHE_DIR" not in env and expected_dir else None)
