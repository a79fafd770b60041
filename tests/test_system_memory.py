"""`jaxcnn.system.keep_freed_memory`: after it, a large block allocated and freed on another thread
(as XLA:CPU's per-step buffers are) comes from glibc's heap and stays there for the next step,
instead of a fresh mapping faulted in every time; the user's own malloc tunables win."""

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")

PROBE = textwrap.dedent("""
    import ctypes, sys, threading
    import numpy as np
    from jaxcnn.system import keep_freed_memory
    applied = keep_freed_memory() if sys.argv[1] == "keep" else False

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    mapped = []

    def step():  # a 100 MB buffer on a worker thread, written, measured, freed
        block = np.ones(100 * 2**20 // 8)
        mapped.append(libc.mallinfo2().hblkhd)
        del block

    for _ in range(2):
        thread = threading.Thread(target=step)
        thread.start()
        thread.join()
    print(applied, all(m >= 100 * 2**20 for m in mapped), libc.mallinfo2().arena >= 100 * 2**20)
""")


def probe(mode: str, **env) -> str:
    result = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


def test_freed_step_buffers_stay_in_the_heap():
    assert probe("plain") == "False True False"  # glibc's default: a mapping per buffer, unmapped when freed
    assert probe("keep") == "True False True"  # kept: from the heap, which keeps it


def test_the_users_malloc_tunables_are_left_alone():
    assert probe("keep", GLIBC_TUNABLES="glibc.malloc.arena_max=4") == "False True False"
    assert probe("keep", MALLOC_ARENA_MAX_="4").startswith("False")


def test_the_command_line_keeps_freed_memory():
    """Importing `jaxcnn.cli` (what `jaxcnn` and scripts/train.py do first) applies it."""
    via_cli = PROBE.replace("from jaxcnn.system import keep_freed_memory",
                            "import jaxcnn.cli\nkeep_freed_memory = lambda: True")
    result = subprocess.run([sys.executable, "-c", via_cli, "keep"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "True False True"
