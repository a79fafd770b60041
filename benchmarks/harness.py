"""What every jaxcnn benchmark shares: the real train step on synthetic data, timing, environment.

`TrainSetup` builds exactly what `scripts/train.py` builds (`create_model` -> `make_optimizer` ->
`create_train_state` -> `replicate` -> `compile_steps`) for a synthetic batch already on the
mesh, so a benchmark times the function users train with, not a re-implementation of it.
Timings are medians of windows; a window blocks only at its end, so the host keeps XLA's
dispatch queue full exactly as the training loop does.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import platform
import statistics
import sys
import time
from typing import Callable

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from jaxcnn.experiment import TrainConfig  # noqa: E402
from jaxcnn.models import create_model  # noqa: E402
from jaxcnn.train import (compile_steps, create_train_state, make_mesh, make_optimizer,  # noqa: E402
                          replicate, shard_batch)

# The CLI's defaults (optimizer, learning rate, schedule, seed), read off its config.
CLI = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}


def synthetic_batch(global_batch: int, image_size: int, channels: int, num_classes: int, seed: int = 0) -> dict:
    """A host batch in the loaders' layout (normalized float32 images, int32 labels, mask of ones)."""
    rng = np.random.default_rng(seed)
    return {
        "image": rng.standard_normal((global_batch, image_size, image_size, channels), np.float32),
        "label": rng.integers(0, num_classes, global_batch).astype(np.int32),
        "mask": np.ones(global_batch, np.float32),
    }


@dataclasses.dataclass
class TrainSetup:
    """A replicated TrainState, the compiled-to-be steps and one sharded batch for one configuration."""

    arch: str
    image_size: int
    per_device_batch: int
    dtype: str = "float32"
    devices: int = 1
    channels: int = 3
    num_classes: int = 10
    optimizer: str = CLI["optimizer"]
    schedule: str = CLI["schedule"]
    learning_rate: float = CLI["lr"]
    seed: int = CLI["seed"]

    def __post_init__(self):
        available = jax.devices()
        if self.devices > len(available):
            raise ValueError(f"{self.devices} devices requested, {len(available)} visible")
        self.mesh = make_mesh(available[: self.devices])
        self.global_batch = self.per_device_batch * self.devices
        model = create_model(self.arch, self.num_classes, dtype=self.dtype)
        state = _initial_state(self.arch, self.image_size, self.channels, self.num_classes, self.optimizer,
                               self.schedule, self.learning_rate, self.seed)
        # A copy: the train step donates its state, and the cached one serves the next configuration.
        state = jax.tree.map(lambda leaf: leaf.copy(), state.replace(apply_fn=model.apply))
        self.state = replicate(state, self.mesh)
        self.train_step, self.eval_step = compile_steps(self.mesh)
        self.batch = shard_batch(
            synthetic_batch(self.global_batch, self.image_size, self.channels, self.num_classes, self.seed), self.mesh
        )

    def compile(self, eval: bool = False):
        """Trace, lower and compile the (train or eval) step for this batch: `(compiled, seconds)`."""
        step = self.eval_step if eval else self.train_step
        start = time.perf_counter()
        compiled = step.lower(self.state, self.batch).compile()
        return compiled, time.perf_counter() - start


def seconds(fn: Callable, *args) -> float:
    """Wall seconds of `fn(*args)`; `fn` must block on its own results (`jax.block_until_ready`)."""
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


@functools.lru_cache(maxsize=1)
def _initial_state(arch, image_size, channels, num_classes, optimizer, schedule, learning_rate, seed):
    """`create_train_state` as the CLI calls it, kept for the next configuration of the same model.

    The parameters are float32 whatever the computation dtype, so a float32 and a bfloat16
    configuration start from the same state (only `apply_fn` differs); initialising a deep model
    compiles its forward pass, which costs as much as compiling the step.
    """
    model = create_model(arch, num_classes)
    tx = make_optimizer(optimizer, learning_rate=learning_rate, schedule=schedule, steps_per_epoch=1000, epochs=100)
    return create_train_state(jax.random.key(seed), model, tx, (image_size, image_size, channels))


def timed_windows(run_window: Callable[[], object], *, windows: int, warmup: int = 1) -> list[float]:
    """Seconds of each of `windows` calls of `run_window` after `warmup` untimed ones."""
    for _ in range(warmup):
        run_window()
    return [seconds(run_window) for _ in range(windows)]


def median(values) -> float:
    return float(statistics.median(values))


def environment() -> dict:
    """What a figure depends on besides the configuration: versions, devices, flags, host."""
    import flax
    import jaxlib

    device = jax.devices()[0]
    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "python": platform.python_version(),
        "platform": device.platform,
        "device_kind": device.device_kind,
        "visible_devices": jax.device_count(),
        "host_cpus": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def peak_rss_bytes() -> int:
    """This process's peak resident set size (since the last `reset_peak_rss`, where Linux allows it)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def reset_peak_rss() -> None:
    """Restart the peak-RSS count from the current RSS (Linux >= 4.0: `5 > /proc/self/clear_refs`)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
