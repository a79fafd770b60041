"""The epoch plan: which example, and which crop / flip, every position of a training epoch gets.

One definition shared by the host pipeline (`jaxcnn.data.pipeline.Loader`) and the device one
(`jaxcnn.data.device.DeviceLoader`), so both give the same batches for (seed, epoch, position):

    order = epoch_order(seed, epoch, n)          # int64 (n,): position -> example of the source
    draws = epoch_draws(seed, stream, epoch, n, k)  # float64 (n, k) uniform in [0, 1)

A planned transform (`RandomCrop`, `RandomHorizontalFlip`: they define `DRAWS` and
`apply_drawn`) turns its row of draws into its parameters; `stream` is its place in the recipe,
so two ops never share draws. Both tables come from NumPy's generator seeded with the integers
(seed, stream, epoch) -- a pure function of them, the same in every worker process.

Why not Grain's `shuffle` and `random_map` generators: the device path needs a whole epoch's order
and parameters at once. Grain's shuffle permutes one index per call of `index_shuffle`
(~3 us each: 0.15 s per 50k-example epoch here) and `random_map` seeds a Philox generator per
element; drawing the epoch as two NumPy arrays takes ~1 ms for 50k examples.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import grain
import numpy as np

ORDER_STREAM = 0  # the permutation; planned transforms use streams 1, 2, ... (their place in the recipe)


def _generator(seed: int, stream: int, epoch: int) -> np.random.Generator:
    if seed < 0 or epoch < 0:
        raise ValueError(f"the seed and the epoch must be >= 0, got seed {seed} and epoch {epoch}")
    return np.random.default_rng([int(seed), int(stream), int(epoch)])


# Small caches, per process (each worker holds its own): the epoch being read and the next one.
@functools.lru_cache(maxsize=2)
def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The examples of training epoch `epoch` in order: a read-only permutation of range(n)."""
    order = _generator(seed, ORDER_STREAM, epoch).permutation(n)
    order.flags.writeable = False
    return order


@functools.lru_cache(maxsize=4)  # a crop and a flip, two epochs
def epoch_draws(seed: int, stream: int, epoch: int, n: int, k: int) -> np.ndarray:
    """`k` uniform draws in [0, 1) for each of the `n` positions of epoch `epoch` (read-only)."""
    if stream == ORDER_STREAM:
        raise ValueError(f"stream {ORDER_STREAM} is the epoch order's; transforms use streams from 1")
    draws = _generator(seed, stream, epoch).random((n, k))
    draws.flags.writeable = False
    return draws


def is_planned(transform) -> bool:
    """Whether `transform` takes its randomness from the epoch plan (it defines DRAWS/apply_drawn)."""
    return hasattr(transform, "DRAWS") and hasattr(transform, "apply_drawn")


class EpochShuffle(grain.MapDataset):
    """`parent` (of length n) in the order `epoch_order(seed, e, n)` in each epoch e: index
    `e * n + i` reads parent index `e * n + order[i]` (Grain sources wrap indices modulo n)."""

    def __init__(self, parent: grain.MapDataset, seed: int):
        super().__init__(parent)
        self._seed = int(seed)

    def __len__(self) -> int:
        return len(self._parent)

    def __str__(self) -> str:
        return f"EpochShuffle(seed={self._seed})"

    def _shuffled(self, index: int) -> int:
        epoch, position = divmod(int(index), len(self._parent))
        return epoch * len(self._parent) + int(epoch_order(self._seed, epoch, len(self._parent))[position])

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        return self._parent[self._shuffled(index)]

    def _getitems(self, indices: Sequence[int]) -> list[Any]:
        return self._parent._getitems([self._shuffled(i) for i in indices])  # pylint: disable=protected-access


class PlannedMap(grain.transforms.MapWithIndex):
    """A planned transform applied at dataset index `e * n + i` with row i of its epoch-e draws."""

    def __init__(self, transform, *, seed: int, stream: int, length: int):
        if not is_planned(transform):
            raise TypeError(f"{transform!r} does not draw from the epoch plan (no DRAWS / apply_drawn)")
        self.transform, self.seed, self.stream, self.length = transform, int(seed), int(stream), int(length)

    def map_with_index(self, index: int, record: dict) -> dict:
        epoch, position = divmod(int(index), self.length)
        draws = epoch_draws(self.seed, self.stream, epoch, self.length, self.transform.DRAWS)[position]
        return {**record, "image": self.transform.apply_drawn(record["image"], draws)}

    def __repr__(self) -> str:
        return f"PlannedMap({self.transform!r}, stream={self.stream})"
