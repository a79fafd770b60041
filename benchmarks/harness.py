"""What every jaxcnn benchmark shares: the real train step on synthetic data, timing, environment.

`TrainSetup` builds exactly what `jaxcnn train` builds — through the public builder,
`jaxcnn.build_training(RunConfig)` (model -> optimizer -> replicated state -> compiled steps) —
for a synthetic uint8 batch already on the mesh (normalized inside the step, as a run's batches
are), so a benchmark times the function users train with, not a re-implementation of it.
Timings are medians of windows; a window blocks only at its end, so the host keeps XLA's
dispatch queue full exactly as the training loop does.
"""

from __future__ import annotations

import dataclasses
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

from jaxcnn.system import keep_freed_memory  # noqa: E402

KEPT_FREED_MEMORY = keep_freed_memory()  # as the command line does, before JAX starts its backend

from jaxcnn.builder import build_training  # noqa: E402
from jaxcnn.models.cpu_conv import cpu_backend  # noqa: E402
from jaxcnn.run_config import RunConfig  # noqa: E402
from jaxcnn.data.transforms import Normalize  # noqa: E402
from jaxcnn.train import InputNormalization, make_mesh, shard_batch  # noqa: E402

DEFAULTS = RunConfig()  # the command line's defaults (optimizer, learning rate, schedule, seed)


def synthetic_stats(channels: int) -> InputNormalization:
    """The statistics of `synthetic_batch`'s uniform pixels (mean 127.5 / 255, std ~73.9 / 255)."""
    return InputNormalization((0.5,) * channels, (0.29,) * channels)


def synthetic_batch(global_batch: int, image_size: int, channels: int, num_classes: int, seed: int = 0) -> dict:
    """A host batch in the loaders' layout (uint8 images, int32 labels, mask of ones)."""
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (global_batch, image_size, image_size, channels), np.uint8),
        "label": rng.integers(0, num_classes, global_batch).astype(np.int32),
        "mask": np.ones(global_batch, np.float32),
    }


def normalized_on_host(batch: dict, normalize: InputNormalization) -> dict:
    """`batch` with float32 images normalized on the host (what a PyTorch contender trains on)."""
    return {**batch, "image": Normalize(normalize.mean, normalize.std).apply(batch["image"])}


@dataclasses.dataclass
class TrainSetup:
    """What `jaxcnn train` trains for one configuration, plus one sharded synthetic batch.

    "Batch" here is per device, as benchmark tables report it; the training config's
    `data.batch_size` (the command line's `--batch-size`) is the global batch,
    `per_device_batch * devices`. `normalize`: the statistics the steps normalize with (default
    `synthetic_stats`; a data set's own where its loader feeds the steps).
    """

    arch: str
    image_size: int
    per_device_batch: int
    dtype: str = "float32"
    devices: int = 1
    channels: int = 3
    num_classes: int = 10
    optimizer: str = DEFAULTS.optim.name
    normalize: InputNormalization | None = None

    def __post_init__(self):
        self.normalize = self.normalize or synthetic_stats(self.channels)
        available = jax.devices()
        if self.devices > len(available):
            raise ValueError(f"{self.devices} devices requested, {len(available)} visible")
        self.mesh = make_mesh(available[: self.devices])
        self.global_batch = self.per_device_batch * self.devices
        self.config = RunConfig.from_dict({
            "model": {"arch": self.arch, "dtype": self.dtype},
            "data": {"batch_size": self.global_batch},
            "optim": {"name": self.optimizer},
        })
        self.training = build_training(
            self.config, num_classes=self.num_classes, input_shape=(self.image_size, self.image_size, self.channels),
            steps_per_epoch=1000, mesh=self.mesh, normalize=self.normalize,
        )
        self.state, self.train_step, self.eval_step = (
            self.training.state, self.training.train_step, self.training.eval_step)
        self.seed, self.learning_rate = self.config.seed, self.config.optim.learning_rate
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
        "cpu_model": cpu_model(),
        "glibc_keeps_freed_memory": KEPT_FREED_MEMORY,
        **({"cpu_convolutions": cpu_backend()} if device.platform == "cpu" else {}),
    }


def cpu_model() -> str:
    """The host CPU's model name (Linux /proc/cpuinfo), which any absolute CPU figure needs."""
    try:
        with open("/proc/cpuinfo") as info:
            return next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
                        platform.processor())
    except OSError:
        return platform.processor() or "unknown"


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
