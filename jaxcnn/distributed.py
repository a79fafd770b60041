"""Several processes, one training run: `jax.distributed` started from the run's `distributed` options.

Every process (one per host, or one per GPU) runs the same `jaxcnn train` command. Once
`jax.distributed` is up, `jax.devices()` lists every process's devices, so the run's mesh is
global; each process reads only its slot of every global batch (`jaxcnn.data.Loader`),
`jaxcnn.train.sharding.shard_batch` assembles the global batch, the replicated metrics read the
same in every process, and Orbax writes the checkpoints together. Process 0 owns the run folder
(lock, config.json, metrics.csv, TensorBoard, results.json) and the console; the others log
warnings and errors only. The run folder must be on a file system every process reaches.

When jaxcnn starts `jax.distributed` (`mode`, the `--distributed` flag):
- `auto` (default): when `--coordinator`, `--num-processes` or `--process-id` is given, with
  those (one left out is read from the cluster's environment, as `jax.distributed.initialize`
  does); else when this process is one task of several in a SLURM job step (`srun`) or an Open
  MPI job (`mpirun`), with what JAX reads from that environment; else a single process.
- `on`: always; `jax.distributed.initialize()` detects what it supports (SLURM, Open MPI, Cloud
  TPU pods, Kubernetes jobs, ...) and fails when it finds nothing and no flags say it.
- `off`: a single process, whatever the environment says.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from typing import Callable, Mapping

from jaxcnn.config import ConfigError, check_choice, check_int, option
from jaxcnn.errors import UserError

MODES = ("auto", "on", "off")
log = logging.getLogger("jaxcnn")


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """How this process joins a multi-process run (see the module docstring). It describes the
    launch, not the run: a resumed run may give other values (same process count)."""

    mode: str = option("auto", "when to start jax.distributed: auto when the flags below are given or in an "
                               "srun / mpirun job of several tasks, on always (JAX detects the cluster), off never",
                       flag="--distributed", choices=MODES, metavar="MODE", resume=True)
    coordinator: str | None = option(None, "HOST:PORT where process 0 serves jax.distributed's coordinator "
                                           "(the same on every process)", metavar="HOST:PORT", resume=True)
    num_processes: int | None = option(None, "processes in the run", resume=True)
    process_id: int | None = option(None, "this process's index, 0 .. num_processes - 1 (0 owns the run folder)",
                                    resume=True)

    def __post_init__(self):
        check_choice("mode", self.mode, MODES)
        check_int("num_processes", self.num_processes, minimum=1, optional=True)
        check_int("process_id", self.process_id, minimum=0, optional=True)
        if self.coordinator is not None:
            host, _, port = str(self.coordinator).rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError("coordinator", f"expected HOST:PORT (e.g. 10.0.0.1:1234), got {self.coordinator!r}")
        if None not in (self.num_processes, self.process_id) and self.process_id >= self.num_processes:
            raise ConfigError("process_id", f"must be < num_processes ({self.num_processes}), got {self.process_id}")
        if self.mode == "off" and self.explicit:
            raise ConfigError("mode", "is off, yet coordinator / num_processes / process_id are given; "
                                      "use mode auto or on to run several processes")

    @property
    def explicit(self) -> bool:
        """Whether any of coordinator, num_processes, process_id is given."""
        return any(value is not None for value in (self.coordinator, self.num_processes, self.process_id))

    def wanted(self, environ: Mapping[str, str] = os.environ) -> bool:
        """Whether this process should start `jax.distributed` (the rules of the module docstring)."""
        if self.mode != "auto":
            return self.mode == "on"
        return self.explicit or cluster_tasks(environ) > 1


def cluster_tasks(environ: Mapping[str, str]) -> int:
    """The task count of the SLURM job step or Open MPI job this process runs in (1 outside one),
    read where JAX's own SLURM and Open MPI detection reads it. A SLURM batch script itself is no
    step: only `srun` sets `SLURM_STEP_NUM_TASKS`, so `python` run straight from `sbatch` stays alone."""
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(name in environ for name in slurm) and "SLURM_STEP_NUM_TASKS" in environ:
        return int(environ["SLURM_STEP_NUM_TASKS"])
    if "OMPI_MCA_orte_hnp_uri" in environ and "OMPI_COMM_WORLD_SIZE" in environ:
        return int(environ["OMPI_COMM_WORLD_SIZE"])
    return 1


def initialize(config: DistributedConfig) -> None:
    """Start `jax.distributed` for this process when `config` wants it and it is not running yet.

    It must come before anything uses JAX's devices (the first computation, `jax.devices()`),
    which is why `jaxcnn train` and `jaxcnn.run` call it first. On CPU, JAX's default cross-process
    collectives (gloo) carry the all-reduces.
    """
    import jax

    if jax.distributed.is_initialized() or not config.wanted():
        return
    try:
        jax.distributed.initialize(config.coordinator, config.num_processes, config.process_id)
    except RuntimeError as error:
        if "must be called before" not in str(error):
            raise
        raise ConfigError("distributed", "JAX already used its devices in this process, so jax.distributed can no "
                                         "longer start; start the run (jaxcnn.run) before anything else touches "
                                         "JAX, or call jax.distributed.initialize first") from None
    except (ValueError, TypeError) as error:
        raise ConfigError("distributed", f"jax.distributed cannot start: {error}") from None
    log.debug(f"jax.distributed: process {jax.process_index()} of {jax.process_count()}")


def is_primary() -> bool:
    """Whether this is process 0, the one that owns the run folder and the console."""
    import jax

    return jax.process_index() == 0


class PrimaryProcessError(UserError, ValueError):
    """What process 0 raised in `on_primary`, raised in every other process with its message."""


def on_primary(work: Callable[[], str]) -> str:
    """Run `work` on process 0 only and give every process its result (a string).

    Run-folder work is process 0's, but every process needs its outcome; and when it fails, no
    process may go on to wait for process 0 in a collective: the error is raised as it is on
    process 0 and as a `PrimaryProcessError` with its message on the others.
    """
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
        return work()
    failure = None
    if is_primary():
        try:
            outcome = {"result": work()}
        except Exception as error:
            failure, outcome = error, {"error": f"process 0: {error}"}
    text = json.dumps(outcome).encode() if is_primary() else b""
    size = int(multihost_utils.broadcast_one_to_all(np.int32(len(text))))
    data = np.frombuffer(text.ljust(size, b"\0"), np.uint8)
    outcome = json.loads(bytes(multihost_utils.broadcast_one_to_all(data)).decode())
    if failure is not None:
        raise failure
    if "error" in outcome:
        raise PrimaryProcessError(outcome["error"])
    return outcome["result"]


@contextlib.contextmanager
def console_of_primary():
    """While open, the "jaxcnn" logger of every process but 0 passes warnings and errors only,
    so one run prints its progress once."""
    logger = logging.getLogger("jaxcnn")
    level = logger.level
    if not is_primary():
        logger.setLevel(max(logging.WARNING, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        logger.setLevel(level)
