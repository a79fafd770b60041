"""Data parallelism with `jax.sharding`: batch split over a 1-D "data" mesh, state replicated.

The same jitted functions run on 1 or N devices; under jit with a sharded batch XLA inserts the
gradient all-reduce and makes BatchNorm statistics global, so N devices compute what one
device would on the whole batch.
"""

import functools
from typing import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxcnn.train.finetune import Freeze
from jaxcnn.train.inputs import InputNormalization
from jaxcnn.train.mixup import MixupConfig
from jaxcnn.train.steps import eval_step, train_step


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis "data" over `devices` (default: all visible devices)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), ("data",))


def _data_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def _replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Place a host batch on the mesh, split along its leading (batch) axis. A batch of global
    arrays already placed so (the device-resident loader's) passes through untouched."""
    sharding = _data_sharding(mesh)
    if all(isinstance(a, jax.Array) and a.sharding.is_equivalent_to(sharding, a.ndim) for a in batch.values()):
        return batch
    num_devices = mesh.shape["data"]
    for name, array in batch.items():
        if np.shape(array)[0] % num_devices:
            raise ValueError(
                f"batch size {np.shape(array)[0]} (batch[{name!r}]) is not divisible by the "
                f"{num_devices} devices of the data mesh; use a batch size that is a multiple "
                f"of {num_devices}"
            )
    return jax.device_put(batch, sharding)


def replicate(tree, mesh: Mesh):
    """Place a full copy of `tree` on every device of the mesh."""
    return jax.device_put(tree, _replicated(mesh))


def compile_steps(
    mesh: Mesh,
    *,
    label_smoothing: float = 0.0,
    aux_loss_weight: float = 0.3,
    mixup: MixupConfig | None = None,
    freeze: Freeze | None = None,
    normalize: InputNormalization | None = None,
) -> tuple[Callable, Callable]:
    """Jitted (train_step, eval_step) with explicit shardings for `mesh`; the keyword arguments
    are the train step's static settings (`freeze`: the train step of a frozen backbone;
    `normalize`: the input statistics both steps normalize uint8 batches with on the device).

    The train step donates the incoming state (its buffers are reused for the new one), so the
    caller must keep only the returned state. Metrics come back replicated. MixUp/CutMix pair
    examples across the whole global batch (XLA moves the flipped half between devices), so
    N devices mix exactly as one does.
    """
    data, replicated = _data_sharding(mesh), _replicated(mesh)
    jit_train_step = jax.jit(
        functools.partial(
            train_step, label_smoothing=label_smoothing, aux_loss_weight=aux_loss_weight, mixup=mixup,
            freeze=freeze, normalize=normalize,
        ),
        in_shardings=(replicated, data),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    jit_eval_step = jax.jit(functools.partial(eval_step, normalize=normalize), in_shardings=(replicated, data),
                            out_shardings=replicated)
    return jit_train_step, jit_eval_step
