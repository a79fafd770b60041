"""`--batch-size auto`: the largest per-device batch whose compiled train step fits in memory.

The answer comes from XLA's memory analysis of the compiled step (arguments + outputs - donated
buffers + temporaries, per device), never from running until out-of-memory: the step is
compiled, not run, at per-device batches 8 and 16, the bytes are fitted as `fixed + per_example
* batch`, the largest multiple of 8 under the budget is taken, and that batch is compiled once
more to check the fit against the measured size (stepping down by 8 while it does not fit).

The budget is `MEMORY_FRACTION` of what the device reports (`memory_stats()["bytes_limit"]`,
the allocator's pool on GPU and TPU), leaving room for the eval step, the prefetched batches and
fragmentation. XLA:CPU reports no device memory: there the budget is the host's available
memory shared by the local devices, and the batch is capped at `CPU_MAX_PER_DEVICE`, because on
a CPU larger batches bring no more images per second (benchmarks/README.md) while each epoch
then makes fewer optimizer steps.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from jaxcnn.system import available_memory

GRANULE = 8  # per-device batches are multiples of 8 (sublane / warp friendly; the rule)
MEMORY_FRACTION = 0.9
CPU_MAX_PER_DEVICE = 128
ACCELERATOR_MAX_PER_DEVICE = 1024  # beyond this the LR recipe, not memory, is the question


@dataclasses.dataclass(frozen=True)
class BatchSizeChoice:
    """The chosen per-device batch, and the figures it was chosen from (bytes per device)."""

    per_device: int
    devices: int
    estimate_bytes: int  # the linear fit's prediction at `per_device`
    measured_bytes: int  # XLA's memory analysis of the step compiled at `per_device`
    budget_bytes: int
    budget_source: str  # where the budget came from
    limit: str | None = None  # what capped the batch below the memory fit, if anything

    @property
    def global_batch(self) -> int:
        return self.per_device * self.devices

    def message(self) -> str:
        capped = f", capped by {self.limit}" if self.limit else ""
        return (
            f"--batch-size auto: {self.per_device} per device x {self.devices} device(s) = {self.global_batch}"
            f"{capped}; train step memory per device: estimate {_gib(self.estimate_bytes)}, XLA buffers "
            f"{_gib(self.measured_bytes)}, budget {_gib(self.budget_bytes)} ({self.budget_source})"
        )


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def step_bytes(compiled) -> int:
    """Bytes one device holds while running `compiled`: its arguments and outputs (the donated
    state counted once) plus XLA's temporary buffers."""
    stats = compiled.memory_analysis()
    return (stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
            + stats.temp_size_in_bytes)


def memory_budget(device: jax.Device, local_devices: int) -> tuple[int, str]:
    """(bytes, source): `MEMORY_FRACTION` of the device's memory, or on a backend that reports
    none (CPU) of the host's available memory shared by the `local_devices`."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"] * MEMORY_FRACTION), f"{MEMORY_FRACTION:.0%} of {device.platform} memory"
    available = available_memory()
    if available is None:
        raise RuntimeError("--batch-size auto: neither the device nor the host reports its memory; give a number")
    return int(available * MEMORY_FRACTION / local_devices), f"{MEMORY_FRACTION:.0%} of available host memory"


def choose_per_device_batch(measure: Callable[[int], int], *, budget: int,
                            cap: int) -> tuple[int, int, int, bool]:
    """(per-device batch, estimated bytes, measured bytes, capped): the largest multiple of
    `GRANULE` up to `cap` whose `measure(batch)` (bytes) fits `budget`, from a linear fit of two
    small measurements checked by a third; `capped` when memory would allow more than `cap`.
    A ValueError when not even `GRANULE` fits."""
    if cap < GRANULE:
        raise ValueError(f"the batch cap {cap} is below the smallest per-device batch, {GRANULE}")
    small, large = GRANULE, 2 * GRANULE
    small_bytes = measure(small)
    if small_bytes > budget:
        raise ValueError(f"the train step needs {_gib(small_bytes)} per device at a per-device batch of {small}, "
                         f"more than the budget of {_gib(budget)}: choose a smaller model or input size")
    large_bytes = measure(large) if cap >= large else small_bytes
    per_example = max((large_bytes - small_bytes) / GRANULE, 1.0)
    fixed = small_bytes - per_example * small
    fits = int((budget - fixed) // per_example) // GRANULE * GRANULE
    top = cap // GRANULE * GRANULE
    batch = max(GRANULE, min(fits, top))

    def estimate(b: int) -> int:
        return int(fixed + per_example * b)

    measured = {small: small_bytes, large: large_bytes}
    while True:
        if batch not in measured:
            measured[batch] = measure(batch)
        if measured[batch] <= budget or batch == GRANULE:
            return batch, estimate(batch), measured[batch], fits > top
        batch -= GRANULE


def auto_batch_size(
    train_step,
    state,
    *,
    input_shape: tuple[int, int, int],
    mesh: jax.sharding.Mesh,
    image_dtype=jnp.uint8,
    max_examples: int | None = None,
    budget: tuple[int, str] | None = None,
    cap: int | None = None,
) -> BatchSizeChoice:
    """The per-device batch for the jitted `train_step` on `state` (arrays or shape structs) with
    (H, W, C) images of `image_dtype` on `mesh`; `max_examples` (the training split) bounds the global batch
    so that an epoch has at least one step; `budget` (bytes, source) and `cap` (per-device batch)
    override the device's."""
    device = mesh.devices.flat[0]
    local_devices = sum(1 for d in mesh.devices.flat if d.process_index == jax.process_index())
    budget_bytes, source = budget or memory_budget(device, local_devices)
    if cap is not None:
        limit = "the given cap"
    elif device.platform == "cpu":
        cap, limit = CPU_MAX_PER_DEVICE, "the CPU cap"
    else:
        cap, limit = ACCELERATOR_MAX_PER_DEVICE, "the per-device cap"
    if max_examples is not None and max_examples // mesh.size < cap:
        cap, limit = max_examples // mesh.size, "the training split's size"
        if cap < GRANULE:
            raise ValueError(f"--batch-size auto needs at least {GRANULE * mesh.size} training examples ({GRANULE} "
                             f"per device); the split has {max_examples}: give a number")

    def measure(per_device: int) -> int:
        b = per_device * mesh.size
        batch = {"image": jax.ShapeDtypeStruct((b, *input_shape), image_dtype),
                 "label": jax.ShapeDtypeStruct((b,), jnp.int32),
                 "mask": jax.ShapeDtypeStruct((b,), jnp.float32)}
        return step_bytes(train_step.lower(state, batch).compile())

    per_device, estimate, measured, capped = choose_per_device_batch(measure, budget=budget_bytes, cap=cap)
    return BatchSizeChoice(per_device, mesh.size, estimate, measured, budget_bytes, source,
                           limit if capped else None)


def check_batch_fits(train_step, state, *, batch_size: int, input_shape: tuple[int, int, int],
                     mesh: jax.sharding.Mesh, image_dtype=jnp.uint8) -> int | None:
    """Compile `train_step` for the run's global `batch_size` (on `state`'s shapes) and refuse,
    with a ConfigError naming `--batch-size` and `--image-size`, a step whose buffers exceed the
    `--batch-size auto` budget; returns the step's bytes per device (None where no device or
    host reports its memory). The executable is the one the first real step runs (jit's cache
    holds it), so the check costs no second compilation."""
    from jaxcnn.config import ConfigError

    local_devices = sum(1 for d in mesh.devices.flat if d.process_index == jax.process_index())
    try:
        budget, source = memory_budget(mesh.devices.flat[0], local_devices)
    except RuntimeError:
        return None
    data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    batch = {"image": jax.ShapeDtypeStruct((batch_size, *input_shape), image_dtype, sharding=data),
             "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=data),
             "mask": jax.ShapeDtypeStruct((batch_size,), jnp.float32, sharding=data)}
    needed = step_bytes(train_step.lower(state, batch).compile())
    if needed > budget:
        height, width, channels = input_shape
        raise ConfigError(
            "data.batch_size",
            f"{batch_size} images of {height}x{width}x{channels} need {_gib(needed)} per device for the train step "
            f"(XLA's buffers), more than the {_gib(budget)} budget ({source}); use a smaller data.batch_size or "
            f"data.image_size, or data.batch_size auto")
    return needed
