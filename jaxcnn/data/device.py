"""The device-resident input pipeline: the uint8 data set lives on the devices, batches are made there.

    store = DeviceStore(mesh)                      # each in-memory data set goes up once
    loader = DeviceLoader(data.train, batch_size=512, train=True, image_size=32, mean=data.mean,
                          std=data.std, augment="cifar", seed=0, store=store)
    for batch in loader.epoch(3):  # {"image": uint8 (B, H, W, C), "label": i32 (B,), "mask": f32 (B,)}
        ...                        # global jax.Arrays, split over the mesh's "data" axis

For sources held in memory (CIFAR, MNIST, Fashion-MNIST, `--cache`d image folders) whose recipe
is made of device ops only (the crop and the flip, on images already at the input size). Per
epoch the host draws the epoch plan (`jaxcnn.data.plan`: the order and the crop / flip
parameters, ~2.5 ms for 50k examples) and hands each batch's rows of it to one jitted function
that gathers, crops and flips on the device. The plan is the host `Loader`'s, so both give the
same batches for (seed, epoch, position). Images stay uint8 (4x less memory and traffic than
float32); the train and eval steps normalize them.

Placement: the data set is *replicated* on every device. A shuffled batch needs any example on
any device; with a copy on each, every device gathers its slice of the batch locally, with no
cross-device traffic per step (the compiled batch function on 4 devices holds no collective),
at the price of one copy per device (CIFAR-10: 150 MB, small beside an accelerator's memory;
`choose_pipeline` checks the fraction it may take). Sharding it instead would save memory but
turn every batch's gather into an all-to-all. Arrays are built with
`jax.make_array_from_callback`, so each process provides only its devices' parts.
"""

from __future__ import annotations

import functools
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxcnn.data.autoaugment import RandAugment, RandomErasing, TrivialAugmentWide
from jaxcnn.data.pipeline import _channel_stats, batches_per_epoch
from jaxcnn.data.plan import epoch_draws, epoch_order
from jaxcnn.data.splits import Subset
from jaxcnn.data.transforms import (
    CenterCrop, Grayscale, Normalize, RandomCrop, RandomHorizontalFlip, RandomResizedCrop, RandomRotation, Resize,
    ToChannels, as_size, build_transforms,
)

# auto: the replicated data set may take this much of each device's memory; the rest is the
# model's (a CIFAR ResNet step at batch 512 needs a few GiB; activations grow with the batch).
DEVICE_MEMORY_FRACTION = 0.25
PARAM_WIDTH = {RandomCrop: 2, RandomHorizontalFlip: 1}  # plan columns per device op: (top, left), flip


def in_memory(source) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(images, labels, rows) of a source held in memory -- an `ArraySource`, a cached image
    folder, or a `Subset` of one: record i is `images[rows[i]]` -- else None."""
    rows = None
    while isinstance(source, Subset):
        rows = source.indices if rows is None else source.indices[rows]
        source = source.source
    images = getattr(source, "images", None)
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        return None
    rows = np.arange(len(images)) if rows is None else np.asarray(rows, np.int64)
    return images, np.asarray(source.labels, np.int32), rows


class DeviceStore:
    """Puts each in-memory data set on every device of `mesh` once (replicated, see the module
    docstring), for all the loaders that read it: train and validation share their base arrays."""

    def __init__(self, mesh: Mesh):
        self.mesh = mesh
        self._placed: dict[tuple[int, int], tuple[np.ndarray, jax.Array, jax.Array]] = {}

    def place(self, images: np.ndarray, labels: np.ndarray, channels: int) -> tuple[jax.Array, jax.Array]:
        """Device (images with `channels` channels, labels) of these host arrays."""
        key = (id(images), channels)
        if key not in self._placed:
            converted = images
            if images.shape[-1] != channels:  # pointwise and 0 -> 0, so it commutes with crop and flip
                converted = np.stack([ToChannels(channels).apply(image) for image in images])
            replicated = NamedSharding(self.mesh, P())
            device_images = jax.make_array_from_callback(converted.shape, replicated, lambda i: converted[i])
            device_labels = jax.make_array_from_callback(labels.shape, replicated, lambda i: labels[i])
            self._placed[key] = (images, device_images, device_labels)  # holding `images` keeps its id unique
        _, device_images, device_labels = self._placed[key]
        return device_images, device_labels

    @property
    def bytes_per_device(self) -> int:
        return sum(images.nbytes + labels.nbytes for _, images, labels in self._placed.values())


def _crop(images: jax.Array, origins: jax.Array, op: RandomCrop) -> jax.Array:
    """`op` on a batch: pad with its fill, then each image's window at `origins` (top, left)."""
    height, width = as_size(op.size)
    pad = op.padding
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=op.fill)
    window = lambda image, origin: jax.lax.dynamic_slice(  # noqa: E731
        image, (origin[0], origin[1], 0), (height, width, image.shape[-1]))
    return jax.vmap(window)(padded, origins)


def _flip(images: jax.Array, flips: jax.Array) -> jax.Array:
    return jnp.where(flips[:, None, None, None] != 0, images[:, :, ::-1], images)


def _assemble(images: jax.Array, labels: jax.Array, plan: jax.Array, *, ops: tuple) -> dict:
    """The batch of `plan` rows [row, valid, params of each op...]: gather, then the ops in order;
    rows with valid 0 are padding (zero image, label 0, mask 0), as the host `Loader` pads."""
    rows, valid = plan[:, 0], plan[:, 1] != 0
    batch, column = images[rows], 2
    for op in ops:
        params = plan[:, column : column + PARAM_WIDTH[type(op)]]
        batch = _crop(batch, params, op) if isinstance(op, RandomCrop) else _flip(batch, params[:, 0])
        column += PARAM_WIDTH[type(op)]
    batch = jnp.where(valid[:, None, None, None], batch, jnp.zeros((), batch.dtype))
    return {"image": batch, "label": jnp.where(valid, labels[rows], 0), "mask": valid.astype(jnp.float32)}


def device_blockers(source, *, augment: str, train: bool, image_size: int | tuple[int, int],
                    hflip: float = 0.5) -> list[str]:
    """Why `source` with this recipe cannot be loaded on the device; [] when it can."""
    arrays = in_memory(source)
    if arrays is None:
        return ["the images are not held in memory as one uint8 array (archive datasets and --cache'd "
                "folders are)"]
    transforms = build_transforms(augment, train=train, image_size=image_size, hflip=hflip)
    host_only = sorted({_op_name(t) for t in transforms if not _runs_on_device(t, arrays[0].shape[1:3])})
    return [f"{', '.join(host_only)} run on the host only"] if host_only else []


def _runs_on_device(transform, source_size: tuple[int, int]) -> bool:
    if isinstance(transform, Resize):  # only the resize that changes nothing
        return transform.output_size(*source_size) == tuple(source_size)
    return type(transform) in PARAM_WIDTH


def _op_name(transform) -> str:
    """The op's name as `--augment` spells it; 'resize' and 'center crop' for the fixed steps."""
    names = {Resize: "resize", CenterCrop: "center crop", RandomResizedCrop: "rrc", RandomRotation: "rotate",
             Grayscale: "gray", RandAugment: "randaugment", TrivialAugmentWide: "trivialaugment",
             RandomErasing: "erase", RandomCrop: "crop", RandomHorizontalFlip: "flip"}
    return names.get(type(transform), type(transform).__name__)


def _device_memory(mesh: Mesh) -> int | None:
    """The smallest `bytes_limit` of the mesh's devices; None where the backend reports none (CPU)."""
    limits = [(device.memory_stats() or {}).get("bytes_limit") for device in mesh.devices.flat]
    return None if None in limits else min(limits)


def resident_bytes(splits: dict) -> int:
    """Bytes per device of the in-memory data sets of `splits` (name -> source or None) on the
    device path: each base array once, however many splits read it."""
    bases = {}
    for arrays in (in_memory(source) for source in splits.values() if source is not None):
        if arrays is not None:
            images, labels, _ = arrays
            bases[id(images)] = images.nbytes + labels.nbytes
    return sum(bases.values())


def choose_pipeline(requested: str, splits: dict, *, augment: str, hflip: float,
                    image_size: int | tuple[int, int], mesh: Mesh) -> tuple[str, str]:
    """("host" or "device", why) for `requested` in ("auto", "host", "device") and the sources of
    `splits` (name -> source; "train" gets the train recipe, the others its eval side).

    auto is device where every source is in memory, the recipe runs on the device and the data
    set fits in `DEVICE_MEMORY_FRACTION` of each device's memory; host elsewhere, and on CPU,
    where the train step, not the input, is the bottleneck (benchmarks/README.md) and each fake
    device would hold one more copy of the data set in host memory. `device` where it cannot
    apply is a ConfigError naming what blocks it.
    """
    from jaxcnn.config import ConfigError

    if requested == "host":
        return "host", "data.input_pipeline=host"
    splits_of: dict[str, list[str]] = {}  # reason -> the splits it holds for: each reason said once
    for name, source in splits.items():
        if source is not None:
            for reason in device_blockers(source, augment=augment, train=name == "train", image_size=image_size,
                                          hflip=hflip):
                splits_of.setdefault(reason, []).append(name)
    blockers = [f"{', '.join(names)}: {reason}" for reason, names in splits_of.items()]
    if blockers and requested == "device":
        raise ConfigError("data.input_pipeline", f"device cannot load this data ({'; '.join(blockers)}); "
                                                 "use host or auto")
    if requested == "device":
        return "device", "data.input_pipeline=device"
    if blockers:
        return "host", f"auto: {'; '.join(blockers)}"
    limit = _device_memory(mesh)
    if limit is None:
        return "host", f"auto: {mesh.devices.flat[0].platform} devices report no memory limit (host on CPU)"
    needed = resident_bytes(splits)
    if needed > DEVICE_MEMORY_FRACTION * limit:
        return "host", (f"auto: the data set ({needed / 2**20:.0f} MiB) exceeds {DEVICE_MEMORY_FRACTION:.0%} "
                        f"of device memory ({limit / 2**20:.0f} MiB)")
    return "device", (f"auto: the data set ({needed / 2**20:.0f} MiB) is in memory, fits in "
                      f"{DEVICE_MEMORY_FRACTION:.0%} of device memory and its recipe runs on the device")


class DeviceLoader:
    """`jaxcnn.data.pipeline.Loader`'s batches, made on the devices of `mesh` from a data set held
    there (see the module docstring); uint8 images, global arrays split over the "data" axis.

    Arguments as `Loader`'s, plus `mesh` (or `store`, whose mesh it is) instead of workers and
    prefetch: nothing runs in the background, each batch is one asynchronous jitted call.
    """

    def __init__(self, source, *, batch_size: int, train: bool, image_size: int | tuple[int, int],
                 mean: Sequence[float], std: Sequence[float], augment: str = "none", hflip: float = 0.5,
                 seed: int = 0, channels: int | None = None, mesh: Mesh | None = None,
                 store: DeviceStore | None = None):
        if (mesh is None) == (store is None):
            raise ValueError("give DeviceLoader a mesh or a DeviceStore (whose mesh it uses), not both")
        store = store or DeviceStore(mesh)
        blockers = device_blockers(source, augment=augment, train=train, image_size=image_size, hflip=hflip)
        if blockers:
            raise ValueError(f"this source and recipe {augment!r} cannot be loaded on the device: "
                             f"{'; '.join(blockers)} (use the host input pipeline)")
        if not isinstance(batch_size, int) or batch_size < 1 or batch_size % store.mesh.size:
            raise ValueError(f"batch_size must be a positive multiple of the {store.mesh.size} devices, "
                             f"got {batch_size!r}")
        images, labels, self._rows = in_memory(source)
        if len(self._rows) == 0:
            raise ValueError("the source is empty: there is nothing to load")
        self.batch_size, self.train, self.seed, self.mesh = batch_size, train, seed, store.mesh
        channels = channels or source.channels
        self.image_shape = (*as_size(image_size), channels)
        self._num_batches = batches_per_epoch(len(self._rows), batch_size, train)
        self.normalize = Normalize(_channel_stats(mean, channels, "mean"), _channel_stats(std, channels, "std"))
        transforms = build_transforms(augment, train=train, image_size=image_size, hflip=hflip)
        # (stream, op): the stream is the op's place in the recipe, as in the host Loader.
        self._ops = [(stream, t) for stream, t in enumerate(transforms, start=1) if type(t) in PARAM_WIDTH]
        self._images, self._labels = store.place(images, labels, channels)
        self._plan_sharding = NamedSharding(self.mesh, P("data"))
        self._assemble = jax.jit(functools.partial(_assemble, ops=tuple(t for _, t in self._ops)),
                                 out_shardings=self._plan_sharding)

    def __len__(self) -> int:
        """Batches per epoch."""
        return self._num_batches

    @property
    def num_examples(self) -> int:
        return len(self._rows)

    def epoch_plan(self, epoch: int) -> np.ndarray:
        """int32 (len(self) * batch_size, 2 + params): per position [row, valid, op params...]."""
        n, count = len(self._rows), self._num_batches * self.batch_size
        records = epoch_order(self.seed, epoch, n)[:count] if self.train else np.arange(count)
        valid = records < n  # eval pads its last batch past the end
        columns = [self._rows[np.where(valid, records, 0)], valid]
        for stream, op in self._ops:
            draws = epoch_draws(self.seed, stream, epoch, n, op.DRAWS)[:count] if self.train else None
            if isinstance(op, RandomCrop):
                columns += list(op.origins(draws, *self.image_shape[:2]).T)
            else:
                columns.append(op.flips(draws))
        return np.stack(columns, axis=1).astype(np.int32)

    def epoch(self, epoch: int) -> Iterator[dict]:
        """The `len(self)` batches of epoch `epoch` (0, 1, ...), as global arrays on the mesh."""
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        return self._batches(self.epoch_plan(int(epoch)))

    def _batches(self, plan: np.ndarray) -> Iterator[dict]:
        shape = (self.batch_size, plan.shape[1])
        for start in range(0, len(plan), self.batch_size):
            rows = plan[start : start + self.batch_size]
            device_rows = jax.make_array_from_callback(shape, self._plan_sharding, lambda index: rows[index])
            yield self._assemble(self._images, self._labels, device_rows)

    def close(self) -> None:
        """Nothing to stop (no threads or processes); the loader stays usable."""

    def __enter__(self) -> DeviceLoader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "train" if self.train else "eval"
        return (f"DeviceLoader({kind}, {self.num_examples} examples, {len(self)} batches of {self.batch_size}, "
                f"image {self.image_shape}, {self.mesh.size} devices)")
