"""Compare the device-resident loader with the host Loader, batch for batch, on every visible device.

Imported by tests/test_device_pipeline.py (1 device) and run there as a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=4 (set before jax is imported); prints JSON.
"""

import json

import jax
import numpy as np

from jaxcnn.data.arrays import ArraySource
from jaxcnn.data.device import DeviceLoader, DeviceStore
from jaxcnn.data.pipeline import Loader
from jaxcnn.data.splits import Subset
from jaxcnn.train import make_mesh

CASES = (("train", "cifar"), ("train", "flip"), ("train", "none"), ("eval", "cifar"))


def split_source() -> Subset:
    """A seeded part of an in-memory set, as the builder's train / val splits are: 45 of 52 images."""
    rng = np.random.default_rng(0)
    base = ArraySource(rng.integers(0, 256, (52, 12, 10, 3), dtype=np.uint8), np.arange(52) % 5,
                       class_names=[str(c) for c in range(5)], mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    return Subset(base, np.sort(rng.permutation(52)[:45]))


def as_host(device_batch: dict, like: dict, normalize) -> dict:
    """The device batch in the host batch's format: uint8 images normalized where the host's are float."""
    batch = {name: np.asarray(array) for name, array in device_batch.items()}
    if like["image"].dtype != np.uint8:
        batch["image"] = normalize.apply(batch["image"])
    return batch


def compare(mesh, *, epochs=(0, 1), batch_size=8) -> list[str]:
    """Assert every batch of every case equal on both paths; the cases checked."""
    source, store, checked = split_source(), DeviceStore(mesh), []
    for split, augment in CASES:
        options = dict(batch_size=batch_size, train=split == "train", image_size=(12, 10), mean=source.mean,
                       std=source.std, augment=augment, hflip=0.5, seed=7)
        host, device = Loader(source, **options), DeviceLoader(source, store=store, **options)
        assert len(host) == len(device) and device.num_examples == host.num_examples
        for epoch in epochs:
            for index, (want, got) in enumerate(zip(host.epoch(epoch), device.epoch(epoch), strict=True)):
                where = f"{split} {augment} epoch {epoch} batch {index}"
                assert got["image"].dtype == np.uint8, where
                assert got["image"].sharding.spec == jax.sharding.PartitionSpec("data"), where
                got = as_host(got, want, device.normalize)
                for name in ("image", "label", "mask"):
                    assert got[name].dtype == want[name].dtype, (where, name)
                    np.testing.assert_array_equal(got[name], want[name], err_msg=f"{where}: {name}")
        checked.append(f"{split} {augment}")
    return checked


if __name__ == "__main__":
    print(json.dumps({"devices": jax.device_count(), "checked": compare(make_mesh())}))
