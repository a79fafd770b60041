"""`--workers auto`: how many data worker processes, from the backend, the CPU count and the source.

- On the CPU backend, none: XLA:CPU runs the train step on every core, so a worker process only
  takes cores from it, and per-record work (a PNG decode, a crop) is small next to a CPU step.
- On an accelerator, the host has nothing else to do: sources read per record (image files,
  TFDS records) get a worker for every core but one (the one drives the devices), up to
  `MAX_WORKERS`; in-memory sources (CIFAR, MNIST, cached folders) only augment, and up to
  `MAX_IN_MEMORY_WORKERS` keep a fast device fed (the device-resident input needs none).
"""

from __future__ import annotations

from jaxcnn.system import usable_cpus

MAX_WORKERS = 16
MAX_IN_MEMORY_WORKERS = 4


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
