"""Data worker processes: at most the usable CPUs, and none outlives the process that started it."""

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import jaxcnn
from jaxcnn.data import workers
from jaxcnn.data.arrays import ArraySource
from jaxcnn.data.pipeline import Loader

STATS = dict(mean=(0.5,), std=(0.25,))


def tiny_source(n=64):
    return ArraySource(np.zeros((n, 8, 8, 1), np.uint8), np.arange(n) % 2, class_names=("a", "b"), **STATS)


def test_workers_beyond_the_usable_cpus_are_capped_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(workers, "_capped", set())
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    requested = cpus + 3
    with caplog.at_level(logging.WARNING, logger="jaxcnn.data.workers"):
        train = Loader(tiny_source(), batch_size=4, train=True, image_size=8, workers=requested, **STATS)
        val = Loader(tiny_source(), batch_size=4, train=False, image_size=8, workers=requested, **STATS)
    assert train.workers == val.workers == cpus
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # once per process, not once per loader
    assert f"{requested} requested, using {cpus}" in warnings[0] and "\n" not in warnings[0]
    assert Loader(tiny_source(), batch_size=4, train=True, image_size=8, workers=cpus, **STATS).workers == cpus
    assert len(caplog.records) == 1  # a number within the CPUs is used as given, silently


# Makes a Loader with 2 workers, reads a batch (so the workers run and fill their buffers), then waits.
_CHILD = textwrap.dedent("""
    import time
    import numpy as np
    from jaxcnn.data.arrays import ArraySource
    from jaxcnn.data.pipeline import Loader

    source = ArraySource(np.zeros((64, 8, 8, 1), np.uint8), np.arange(64) % 2, class_names=("a", "b"),
                         mean=(0.5,), std=(0.25,))
    loader = Loader(source, batch_size=4, train=True, image_size=8, mean=(0.5,), std=(0.25,), workers=2, prefetch=1)
    next(loader.epoch(0))
    print("ready", flush=True)
    time.sleep(120)
""")


def _descendants(root: int) -> list[int]:
    """Pids of every process under `root`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting to be reaped has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="lists processes through /proc")
def test_no_worker_outlives_a_main_process_killed_with_sigkill():
    here = os.path.dirname(os.path.dirname(jaxcnn.__file__))  # the jaxcnn under test, in the child too
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    main = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, text=True, env=env)
    started = []
    try:
        assert main.stdout.readline().strip() == "ready"
        started = _descendants(main.pid)
        commands = [open(f"/proc/{pid}/cmdline").read() for pid in started]
        assert sum("spawn_main" in c for c in commands) == min(2, workers.usable_cpus()), commands  # grain's
        main.send_signal(signal.SIGKILL)
        main.wait()
        deadline = time.monotonic() + 5
        while any(map(_running, started)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in started if _running(pid)], "processes of the killed main process survive"
    finally:
        if main.poll() is None:
            main.kill()
            main.wait()
        for pid in started:  # this test's own leftovers only: the processes its child started
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
