"""Data parallelism with `jax.sharding`: batch split over a 1-D "data" mesh, state replicated.

The same jitted functions run on 1 or N devices; under jit with a sharded batch XLA inserts the
gradient all-reduce and makes BatchNorm statistics global, so N devices compute what one
device would on the whole batch.
"""

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxcnn.train.finetune import Freeze
from jaxcnn.train.inputs import InputNormalization
from jaxcnn.train.mixup import MixupConfig
from jaxcnn.train.steps import eval_step, train_step


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis "data" over `devices` (default: every device of every process).

    `jax.devices()` lists the devices process by process, so in a multi-process run process p's
    devices hold rows `[p * B/P, (p + 1) * B/P)` of a global batch of B: the slot its `Loader` reads.
    """
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), ("data",))


def _data_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def _replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """This process's rows of a batch -> the global batch on the mesh, split along its leading axis.

    A host batch holds this process's slot of the global batch (all of it in a 1-process run):
    `jax.make_array_from_process_local_data` places it on this process's devices, whose rows of
    the global batch are this process's slot as `make_mesh` orders devices. Leaves that already
    are `jax.Array`s (a device-resident input path builds global batches itself) pass through
    untouched.
    """
    sharding = _data_sharding(mesh)
    local_devices = len(mesh.local_devices)

    def place(name: str, array):
        if isinstance(array, jax.Array):
            return array
        rows = np.shape(array)[0]
        if rows % local_devices:
            raise ValueError(
                f"batch size {rows} (batch[{name!r}]) is not divisible by the {local_devices} devices of "
                f"this process on the data mesh; use a batch size that is a multiple of {mesh.size} "
                f"(the mesh's devices)"
            )
        global_shape = (rows * (mesh.size // local_devices), *np.shape(array)[1:])
        return jax.make_array_from_process_local_data(sharding, array, global_shape)

    return {name: place(name, array) for name, array in batch.items()}


def replicate(tree, mesh: Mesh):
    """Place a full copy of `tree` on every device of the mesh, of every process.

    Each process gives the same values (every process builds the state from the same seed, or
    reads the same weights). `jax.device_put` only reaches this process's devices, so each leaf
    is assembled from per-device copies with `jax.make_array_from_callback`, which works for 1
    and N processes alike. Leaves already replicated on the mesh pass through.

    Every leaf comes out committed to the mesh's replicated sharding, as the jitted steps return
    their state: an equivalent but uncommitted leaf (a fresh state on 1 device) would give the
    steps' first call another signature than the later ones, and compile each step twice.
    """
    sharding = _replicated(mesh)

    def place(leaf):
        leaf = leaf if isinstance(leaf, jax.Array) else jnp.asarray(leaf)
        if leaf.sharding == sharding and leaf.committed:
            return leaf
        if leaf.is_fully_addressable and leaf.sharding.is_equivalent_to(sharding, leaf.ndim):
            return jax.device_put(leaf, sharding)  # the same devices: nothing moves between them
        return jax.make_array_from_callback(leaf.shape, sharding, lambda index: leaf[index])

    return jax.tree.map(place, tree)


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
