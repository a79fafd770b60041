"""`--workers auto`: how many data worker processes, from the backend, the CPU count and the source.

- On the CPU backend, none: XLA:CPU runs the train step on every core, so a worker process only
  takes cores from it, and per-record work (a PNG decode, a crop) is small next to a CPU step.
- On an accelerator, the host has nothing else to do: sources read per record (image files,
  TFDS records) get a worker for every core but one (the one drives the devices), up to
  `MAX_WORKERS`; in-memory sources (CIFAR, MNIST, cached folders) only augment, and up to
  `MAX_IN_MEMORY_WORKERS` keep a fast device fed (the device-resident input needs none).

A number the user gives is capped at the usable CPUs (`cap_workers`): more worker processes than
cores only share them, each with its own copy of the pipeline. Every worker ends with the process
that started it (`exit_with_parent`), however that one ends.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time

from jaxcnn.system import usable_cpus

MAX_WORKERS = 16
MAX_IN_MEMORY_WORKERS = 4
PARENT_POLL_SECONDS = 0.2  # how soon a worker notices that its parent is gone

log = logging.getLogger(__name__)
_capped: set[tuple[int, int]] = set()  # (requested, used) pairs warned about in this process


def in_memory(source) -> bool:
    """Whether `source` (or the source a `Subset` views) holds decoded images in memory."""
    while hasattr(source, "indices") and hasattr(source, "source"):  # a Subset
        source = source.source
    return bool(getattr(source, "in_memory", False))


def auto_workers(source, *, platform: str, cpus: int | None = None) -> tuple[int, str]:
    """(workers, why) for training from `source` on a `platform` ("cpu", "gpu", "tpu") backend."""
    cpus = usable_cpus() if cpus is None else cpus
    if platform == "cpu":
        return 0, "the CPU backend runs the step on every core"
    spare = max(cpus - 1, 0)
    if in_memory(source):
        return min(spare, MAX_IN_MEMORY_WORKERS), f"in-memory source, {cpus} CPUs: augmentation only"
    return min(spare, MAX_WORKERS), f"images read per record, {cpus} CPUs: one core drives the devices"


def cap_workers(requested: int, cpus: int | None = None) -> int:
    """`requested` worker processes, at most the usable CPUs (`os.sched_getaffinity` where the OS
    has it); a cap is logged as one warning line, once per process for each number."""
    cpus = usable_cpus() if cpus is None else cpus
    used = min(requested, cpus)
    if used < requested and (requested, used) not in _capped:
        _capped.add((requested, used))
        log.warning(f"data.workers: {requested} requested, using {used}: this process may run on {cpus} CPUs.")
    return used


def exit_with_parent(worker_index: int = 0, worker_count: int = 1) -> None:
    """Grain's `worker_init_fn`: end this worker as soon as the process that started it is gone.

    Without it, a training process killed with SIGKILL (or by the OOM killer) leaves its grain
    workers running as orphans: they block on a full queue that nobody reads, holding memory.
    A daemon thread polls `os.getppid()`: when the parent dies, the worker is re-parented (to init
    or a subreaper), its parent pid changes, and the worker `os._exit`s. Why not the alternatives:
    - `prctl(PR_SET_PDEATHSIG)` fires when the *thread* that started the child exits, not the
      process, and grain 0.2.18 starts its workers from its own prefetch threads (checked:
      `grain-thread-prefetch-...`), whose lifetime is grain's internal detail: a grain that ends
      them sooner would kill healthy workers mid-run. It is also Linux-only.
    - `multiprocessing.parent_process().sentinel` (a pipe) stays open in every process forked from
      the parent (fork copies the descriptor), so the worker would outlive its parent while one lives.
    - Signal handlers or `atexit` in the parent do not run on SIGKILL.
    The parent's pid is the one multiprocessing recorded when it made the worker, so a parent that
    died while the worker was starting is seen too.
    """
    parent = multiprocessing.parent_process()
    parent_pid = parent.pid if parent is not None else os.getppid()
    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), name="jaxcnn-exit-with-parent",
                     daemon=True).start()


def _exit_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)  # nothing to clean up: the worker's batches were for the parent, which is gone
