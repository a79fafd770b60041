"""The Grain input pipeline: a source in, fixed-shape uint8 batches out, one epoch at a time.

    loader = Loader(data.train, batch_size=128, train=True, image_size=32, mean=data.mean,
                    std=data.std, augment="cifar", seed=0, workers=2)
    for batch in loader.epoch(3):   # {"image": u8 (B, H, W, C), "label": i32 (B,), "mask": f32 (B,)}
        ...

The pipeline is one Grain `MapDataset` of *batches* over all epochs:

    source (+ None padding, eval) -> seed -> shuffle (train) -> per-image transforms
        -> batch (+ erase boxes) -> repeat -> this process's slot of every global batch

Images stay uint8 all the way to the device (a quarter of float32's bytes, no float math on the
host); the jitted steps normalize them with `loader.normalize`'s statistics and zero the boxes a
recipe ending in `erase` drew, which ride in the batch as `"erase": int32 (B, 4)`
(`jaxcnn.train.inputs.prepare_inputs`).

Batch `g` holds positions `[i * B, (i + 1) * B)` of epoch `e = g // len(loader)`, `i = g % len(loader)`.
The epoch's order and the crop / flip parameters come from the epoch plan (`jaxcnn.data.plan`,
shared with the device-resident `DeviceLoader`), the other random transforms from the generator
Grain seeds from (seed, the element's position in all epochs). So a batch is a pure function of
(seed, epoch, index): the same for any worker count (workers build whole batches and Grain
interleaves them back in order), and a resumed run
sees exactly the data it would have seen. Worker processes persist from one epoch to the next
while epochs are read in order.

Batching is done on the `MapDataset`, before any filtering, because that keeps `len(loader)`
exact and every batch `batch_size` long: a record the source returns as None (a file found
unreadable when read) takes its slot as padding with mask 0, like the padding of the last eval
batch, so it is trained on and counted nowhere. Train drops the last partial batch (a different
remainder every epoch); eval keeps it, padded, so every example is counted exactly once.

In a run of P processes (`process_count`), `B` is the global batch and process p reads only its
slot of each: positions `[i * B + p * B/P, i * B + (p + 1) * B/P)`, which the trainer assembles
into the global batch (`jaxcnn.train.sharding.shard_batch`). The records are batched by B/P and
process p takes local batch `i * P + p` of each epoch; eval sources are first padded with None
records to a whole number of global batches, so every process has full local batches (the
padding is masked out like the rest). The union of the P processes' batches is exactly the
1-process batch: the records, their shuffle and their augmentation do not depend on P.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import grain
import numpy as np
from absl import flags

from jaxcnn.data.autoaugment import ERASE_KEY, RandomErasing
from jaxcnn.data.plan import EpochShuffle, PlannedMap, is_planned
from jaxcnn.data.splits import DataError
from jaxcnn.data.transforms import Normalize, ToChannels, as_size, build_transforms
from jaxcnn.data.workers import cap_workers, exit_with_parent

# Pillow / ITU-R 601-2 weights, to turn RGB statistics into gray ones.
_LUMA = np.array([0.299, 0.587, 0.114])


def _mark_absl_flags_parsed() -> None:
    """Grain reads absl flags when it starts workers; an argparse program never parsed them."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _channel_stats(values: Sequence[float], channels: int, name: str) -> tuple[float, ...]:
    """Per-channel statistics for `channels` outputs (1 -> broadcast, RGB -> gray by luma weights)."""
    values = tuple(float(v) for v in values)
    if len(values) == channels:
        return values
    if len(values) == 1:
        return values * channels
    if len(values) == 3 and channels == 1:
        return (float(_LUMA @ np.asarray(values)),)  # exact for the mean, an upper bound for std
    raise ValueError(f"{name} has {len(values)} values for {channels}-channel images; give 1 or {channels}")


class _Collate:
    """Grain `batch_fn`: stack the uint8 images, drop None records, pad to `batch_size`; with
    `erase`, also stack the boxes `RandomErasing` drew (the step zeroes them after normalizing,
    as torchvision erases after `Normalize`).

    Valid records come first; padding slots are zero images, label 0, mask 0 and no erase box.
    """

    def __init__(self, batch_size: int, image_shape: tuple[int, int, int], erase: bool):
        self.batch_size = batch_size
        self.image_shape = image_shape
        self.erase = erase

    def __call__(self, records: Sequence[dict | None]) -> dict:
        valid = [r for r in records if r is not None]
        images = np.zeros((self.batch_size, *self.image_shape), np.uint8)
        labels = np.zeros(self.batch_size, np.int32)
        for i, record in enumerate(valid):
            if record["image"].shape != self.image_shape:
                raise ValueError(
                    f"an image of shape {record['image'].shape} reached batching; every image must be "
                    f"{self.image_shape} after the transforms (a source returned an unexpected layout)"
                )
            images[i] = record["image"]
            labels[i] = record["label"]
        mask = np.zeros(self.batch_size, np.float32)
        mask[: len(valid)] = 1.0
        batch = {"image": images, "label": labels, "mask": mask}
        if self.erase:  # every batch of the loader has the key, so the compiled step sees one structure
            batch[ERASE_KEY] = np.zeros((self.batch_size, 4), np.int32)
            for i, record in enumerate(valid):
                batch[ERASE_KEY][i] = record[ERASE_KEY]
        return batch


class _ProcessSlots(grain.MapDataset):
    """Local batch `index` of one process: its slot of global batch `index` (see the module
    docstring). Grain's own sharding (`ShardOptions`, slicing) gives a process a contiguous or
    strided range of *records*; a slot of every global batch is a per-epoch index mapping that
    Grain has no transformation for, so this small one does it."""

    def __init__(self, parent: grain.MapDataset, *, batches_per_epoch: int, local_per_epoch: int,
                 process_index: int, process_count: int):
        super().__init__(parent)
        self._batches_per_epoch = batches_per_epoch
        self._local_per_epoch = local_per_epoch  # local batches of B/P in one epoch of the parent
        self._process_index = process_index
        self._process_count = process_count

    def __len__(self) -> int:
        return len(self._parent) // self._local_per_epoch * self._batches_per_epoch

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        epoch, position = divmod(index, self._batches_per_epoch)
        return self._parent[epoch * self._local_per_epoch + position * self._process_count + self._process_index]

    def __str__(self) -> str:
        return f"ProcessSlots(process {self._process_index} of {self._process_count})"


def _check_loader_arguments(source, batch_size, workers: int, prefetch: int, process_index: int,
                            process_count: int) -> None:
    """A ValueError naming the first of `Loader`'s arguments that cannot work."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if workers < 0 or prefetch < 0:
        raise ValueError(f"workers and prefetch must be >= 0, got {workers} and {prefetch}")
    if len(source) == 0:
        raise ValueError("the source is empty: there is nothing to load")
    if not 0 <= process_index < process_count or batch_size % process_count:
        raise ValueError(
            f"process {process_index} of {process_count}: batch_size ({batch_size}) must be divisible by "
            f"the process count, and the process index in [0, {process_count})"
        )


def batches_per_epoch(num_examples: int, batch_size: int, train: bool) -> int:
    """Whole batches for training (the remainder is dropped), every example's batch for evaluation
    (the last one padded); a DataError when training would see no batch at all."""
    num_batches = num_examples // batch_size if train else math.ceil(num_examples / batch_size)
    if num_batches == 0:
        raise DataError(
            f"the training split has {num_examples} examples, fewer than one batch of {batch_size}; "
            "lower data.batch_size"
        )
    return num_batches


def _map_transforms(ds: grain.MapDataset, transforms: list, *, seed: int, length: int) -> grain.MapDataset:
    """`ds` with the per-image transforms applied in order: planned ones (crop, flip) from the epoch
    plan, their stream their place in the recipe; other random ones with the generator Grain seeds
    per element; the rest as plain maps."""
    for stream, transform in enumerate(transforms, start=1):
        if is_planned(transform):
            ds = ds.map_with_index(PlannedMap(transform, seed=seed, stream=stream, length=length))
        elif isinstance(transform, grain.transforms.RandomMap):
            ds = ds.random_map(transform)
        else:
            ds = ds.map(transform)
    return ds


class Loader:
    """Batches of a source for training (shuffled, augmented, drop remainder) or evaluation (in
    order, padded and masked), deterministic given (seed, epoch); see the module docstring.

    Args:
      source: a grain random-access source of {"image": uint8 (H, W, C), "label": int} or None.
      batch_size: examples per global batch (the trainer shards it over devices); this process
        reads `batch_size / process_count` of them (`local_batch_size`).
      train: shuffle + augment + drop the last partial batch, or evaluate every example once.
      image_size: S or (h, w) of the output images.
      mean, std: per-channel statistics on the 0..1 scale (1 value, or 3 for RGB into gray), kept
        per output channel as `normalize`; the steps normalize the uint8 batches with them.
      augment: a recipe or comma list of ops (`jaxcnn.data.transforms`); eval uses its eval side.
      hflip: probability of the recipe's horizontal flip.
      seed: shuffle and augmentation seed.
      workers: worker processes (0: in this process), at most the usable CPUs (`cap_workers`); each
        ends when this process does, however it ends (`exit_with_parent`).
      prefetch: batches prepared ahead: reader threads in this process when workers == 0, the
        buffer of each worker otherwise; 0 reads synchronously.
      channels: output channels (1 or 3); default the source's.
      process_index, process_count: this process and how many read the global batches
        (`jax.process_index()`, `jax.process_count()` in a multi-process run).
    """

    def __init__(
        self,
        source,
        *,
        batch_size: int,
        train: bool,
        image_size: int | tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        augment: str = "none",
        hflip: float = 0.5,
        seed: int = 0,
        workers: int = 0,
        prefetch: int = 2,
        channels: int | None = None,
        process_index: int = 0,
        process_count: int = 1,
    ):
        _check_loader_arguments(source, batch_size, workers, prefetch, process_index, process_count)
        self.source = source
        self.batch_size = batch_size
        self.local_batch_size = batch_size // process_count
        self.train = train
        self.workers = cap_workers(workers)
        self.prefetch = prefetch
        self.seed = seed
        channels = channels or source.channels
        height, width = as_size(image_size)
        self.image_shape = (height, width, channels)
        self._num_batches = batches_per_epoch(len(source), batch_size, train)
        transforms = build_transforms(augment, train=train, image_size=(height, width), hflip=hflip)
        transforms.append(ToChannels(channels))
        # The statistics per output channel: the steps normalize with them (`InputNormalization.of`).
        self.normalize = Normalize(_channel_stats(mean, channels, "mean"), _channel_stats(std, channels, "std"))
        self._batches = self._batch_dataset(transforms, process_index, process_count)
        self._iterator = None
        self._next_batch = None
        if workers:
            _mark_absl_flags_parsed()

    def _batch_dataset(self, transforms: list, process_index: int, process_count: int) -> grain.MapDataset:
        """This process's batches of every epoch, by global batch index (the module docstring's pipeline)."""
        ds = grain.MapDataset.source(self.source)
        if not self.train:  # None records (masked padding) up to a whole number of global batches
            padding = self._num_batches * self.batch_size - len(self.source)
            ds = grain.MapDataset.concatenate([ds, grain.MapDataset.source([None] * padding)]) if padding else ds
        ds = ds.seed(self.seed)
        if self.train:
            ds = EpochShuffle(ds, self.seed)
        ds = _map_transforms(ds, transforms, seed=self.seed, length=len(self.source))
        erase = any(isinstance(t, RandomErasing) for t in transforms)
        collate = _Collate(self.local_batch_size, self.image_shape, erase)
        local = ds.batch(self.local_batch_size, drop_remainder=self.train, batch_fn=collate)
        return _ProcessSlots(local.repeat(), batches_per_epoch=self._num_batches, local_per_epoch=len(local),
                             process_index=process_index, process_count=process_count)

    def __len__(self) -> int:
        """Batches per epoch."""
        return self._num_batches

    @property
    def num_examples(self) -> int:
        """Records in the source (train uses `len(self) * batch_size` of them per epoch)."""
        return len(self.source)

    def epoch(self, epoch: int) -> Iterator[dict]:
        """The `len(self)` batches of epoch `epoch` (0, 1, ...), as host numpy dicts (this
        process's `local_batch_size` rows of each global batch)."""
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        first = int(epoch) * self._num_batches
        return (self._batch(index) for index in range(first, first + self._num_batches))

    def _batch(self, index: int) -> dict:
        """Global batch `index`, from the running iterator when it is there, else a new one."""
        if self._iterator is None or self._next_batch != index:
            self.close()
            ds = self._batches[index:].to_iter_dataset(
                grain.ReadOptions(num_threads=self.prefetch, prefetch_buffer_size=self.prefetch)
            )
            if self.workers:
                options = grain.MultiprocessingOptions(num_workers=self.workers,
                                                       per_worker_buffer_size=max(self.prefetch, 1))
                # No orphaned workers when this process is killed (see `exit_with_parent`).
                ds = ds.mp_prefetch(options, worker_init_fn=exit_with_parent)
            self._iterator = iter(ds)
        self._next_batch = None  # unknown until `next` returns (it may raise)
        batch = next(self._iterator)
        self._next_batch = index + 1
        return batch

    def close(self) -> None:
        """Stop the running iterator and its worker processes (a later epoch starts new ones)."""
        if self._iterator is not None and hasattr(self._iterator, "close"):
            self._iterator.close()
        self._iterator = None
        self._next_batch = None

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "train" if self.train else "eval"
        return (
            f"Loader({kind}, {self.num_examples} examples, {len(self)} batches of {self.batch_size}"
            + (f" ({self.local_batch_size} in this process)" if self.local_batch_size != self.batch_size else "")
            + ", "
            f"image {self.image_shape}, workers={self.workers})"
        )
