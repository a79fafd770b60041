"""What this host offers and how its C library serves memory: available memory, usable CPUs (for
caches, workers, batch sizes), and glibc's malloc kept from unmapping XLA's step buffers."""

from __future__ import annotations

import ctypes
import os
import sys


def available_memory() -> int | None:
    """Bytes the host can still give without swapping (Linux MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for reuse instead of giving it back to the OS; True if done.

    XLA:CPU allocates each step's temporary buffer (288 MB for ResNet-20 at batch 128) on its
    worker threads and frees it when the step ends. glibc serves an allocation of over 64 MB from
    a thread's arena with a fresh mapping and unmaps it when freed, so every step faulted all its
    pages in again: a quarter of the step's CPU time, 1.4x on the whole ResNet-20 step once kept
    (benchmarks/README.md). So: one arena (the main one, which can grow without mappings), no
    mappings, and the heap trimmed only above 2 GiB free. Takes effect for the threads that have
    not allocated yet: call it before JAX starts its backend (the command line does, on import).
    Not applied where glibc's malloc is not in use or the user set its tunables.
    """
    if not sys.platform.startswith("linux") or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "") \
            or any(name.startswith("MALLOC_") and name.endswith("_") for name in os.environ):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1
               for param, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)))
