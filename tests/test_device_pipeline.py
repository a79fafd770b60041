"""The device-resident input path: the host Loader's batches, the auto rule, and training alike."""

import json
import logging
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

import jaxcnn
from archive_fixtures import write_idx_set
from device_loader_run import CASES, as_host, compare, split_source
from jaxcnn.config import ConfigError
from jaxcnn.data import device as device_module
from jaxcnn.data.arrays import ArraySource
from jaxcnn.data import load_data
from jaxcnn.data.device import DeviceLoader, DeviceStore, choose_pipeline, in_memory, resident_bytes
from jaxcnn.data.pipeline import Loader
from jaxcnn.data.plan import epoch_draws, epoch_order
from jaxcnn.data.splits import Subset
from jaxcnn.run_config import RunConfig
from jaxcnn.train.loop import LoopRun
from jaxcnn.train.spec import Steps
from jaxcnn.train import InputNormalization, OptimConfig, compile_steps, create_train_state, make_mesh, make_optimizer, replicate, shard_batch
from jaxcnn.train.loop import fit
from train_helpers import TinyCNN

TESTS = pathlib.Path(__file__).parent


def test_the_epoch_plan_is_a_pure_function_of_seed_epoch_and_stream():
    order = epoch_order(3, 1, 50)
    assert sorted(order) == list(range(50)) and not order.flags.writeable
    assert not np.array_equal(order, epoch_order(3, 2, 50)) and not np.array_equal(order, epoch_order(4, 1, 50))
    epoch_order.cache_clear()
    np.testing.assert_array_equal(order, epoch_order(3, 1, 50))
    draws = epoch_draws(3, 1, 1, 50, 2)
    assert draws.shape == (50, 2) and ((0 <= draws) & (draws < 1)).all()
    assert not np.array_equal(draws, epoch_draws(3, 2, 1, 50, 2))  # another op of the recipe
    with pytest.raises(ValueError, match="stream 0"):
        epoch_draws(3, 0, 1, 50, 2)


def test_device_batches_equal_the_host_loaders_on_one_device():
    assert compare(make_mesh()) == [f"{split} {augment}" for split, augment in CASES]


def test_device_batches_equal_the_host_loaders_on_four_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS.parent), str(TESTS), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, str(TESTS / "device_loader_run.py")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"devices": 4, "checked": [f"{split} {augment}" for split, augment in CASES]}


def test_device_batches_pass_through_the_mesh_placement_untouched():
    mesh = make_mesh()
    loader = DeviceLoader(split_source(), batch_size=8, train=False, image_size=(12, 10), mean=(0.5,), std=(0.5,),
                          mesh=mesh)
    batch = next(loader.epoch(0))
    placed = shard_batch(batch, mesh)
    assert placed.keys() == batch.keys() and all(placed[name] is batch[name] for name in batch)
    host = {name: np.asarray(array) for name, array in batch.items()}
    assert shard_batch(host, mesh)["image"].sharding == batch["image"].sharding  # host batches still placed


def test_train_and_validation_share_one_copy_of_the_data_set():
    source = split_source()
    store = DeviceStore(make_mesh())
    for train in (True, False):
        DeviceLoader(source, batch_size=8, train=train, image_size=(12, 10), mean=(0.5,), std=(0.5,), store=store)
    assert store.bytes_per_device == source.source.images.nbytes + source.source.labels.nbytes


@pytest.mark.parametrize("augment, size, blocked", [
    ("cifar,randaugment", (12, 10), "randaugment run on the host only"),
    ("rotate10,erase", (12, 10), "erase, rotate run on the host only"),
    ("imagenet", (12, 10), "rrc run on the host only"),
    ("cifar", 8, "resize run on the host only"),
])
def test_a_recipe_the_device_cannot_run_falls_back_under_auto_and_is_an_error_under_device(augment, size, blocked):
    splits, mesh = {"train": split_source(), "val": split_source()}, make_mesh()
    pipeline, why = choose_pipeline("auto", splits, augment=augment, hflip=0.5, image_size=size, mesh=mesh)
    assert pipeline == "host" and blocked in why
    with pytest.raises(ConfigError, match=f"data.input_pipeline.*{blocked}"):
        choose_pipeline("device", splits, augment=augment, hflip=0.5, image_size=size, mesh=mesh)
    with pytest.raises(ValueError, match=f"{blocked}.*use the host input pipeline"):
        DeviceLoader(split_source(), batch_size=8, train=True, image_size=size, mean=(0.5,), std=(0.5,),
                     augment=augment, mesh=mesh)


def test_auto_takes_the_device_where_the_data_set_fits_and_the_host_on_cpu_or_when_it_does_not(monkeypatch):
    train = split_source()
    splits, mesh = {"train": train, "val": Subset(train.source, [0, 1, 2]), "test": None}, make_mesh()
    options = dict(augment="cifar", hflip=0.5, image_size=(12, 10), mesh=mesh)
    pipeline, why = choose_pipeline("auto", splits, **options)
    assert pipeline == "host" and "report no memory limit" in why  # CPU
    assert choose_pipeline("host", splits, **options)[0] == "host"
    assert choose_pipeline("device", splits, **options)[0] == "device"
    nbytes = train.source.images.nbytes + train.source.labels.nbytes  # one base array for both splits
    assert resident_bytes(splits) == nbytes
    monkeypatch.setattr(device_module, "_device_memory", lambda mesh: 4 * nbytes)
    assert choose_pipeline("auto", splits, **options)[0] == "device"
    monkeypatch.setattr(device_module, "_device_memory", lambda mesh: 4 * nbytes - 1)
    pipeline, why = choose_pipeline("auto", splits, **options)
    assert pipeline == "host" and "exceeds 25% of device memory" in why
    not_in_memory = {"train": list(split_source())}
    pipeline, why = choose_pipeline("auto", not_in_memory, **options)
    assert pipeline == "host" and "not held in memory" in why


def test_a_gray_data_set_fed_to_a_three_channel_model_is_converted_once_as_the_host_does():
    rng = np.random.default_rng(2)
    gray = ArraySource(rng.integers(0, 256, (20, 6, 6, 1), dtype=np.uint8), np.arange(20) % 2,
                       class_names=["a", "b"], mean=(0.3,), std=(0.2,))
    options = dict(batch_size=8, train=True, image_size=6, mean=gray.mean, std=gray.std, augment="crop:1,flip",
                   channels=3)
    host, device = Loader(gray, **options), DeviceLoader(gray, mesh=make_mesh(), **options)
    for want, got in zip(host.epoch(1), device.epoch(1), strict=True):
        assert got["image"].shape == (8, 6, 6, 3)
        np.testing.assert_array_equal(as_host(got, want, device.normalize)["image"], want["image"])


def test_a_cached_image_folder_is_in_memory_and_an_uncached_one_is_not():
    cached, uncached = load_data("demo", cache=True), load_data("demo")
    images, labels, rows = in_memory(cached.val)
    assert images is cached.train.source.images and len(rows) == len(cached.val)
    np.testing.assert_array_equal(images[rows[3]], cached.val[3]["image"])
    assert labels[rows[3]] == cached.val[3]["label"]
    assert in_memory(uncached.val) is None


def test_build_chooses_and_logs_the_pipeline(tmp_path, caplog):
    write_idx_set(tmp_path, train_n=40, test_n=10)
    config = jaxcnn.RunConfig.from_dict({"model": {"arch": "lenet5"}, "data": {
        "name": "mnist", "dir": str(tmp_path), "batch_size": "auto", "input_pipeline": "device",
        "augment": "crop:2"}})
    with caplog.at_level(logging.INFO, logger="jaxcnn"), jaxcnn.build(config) as run:
        loaders = (run.train_loader, run.val_loader, run.test_loader)
        assert all(isinstance(loader, DeviceLoader) for loader in loaders)
        batch = run.config.data.batch_size  # auto: 32 training examples, 8 per device at least
        assert next(run.test_loader.epoch(0))["image"].shape == (batch, 28, 28, 1)
    (line,) = [record for record in caplog.records if "input pipeline" in record.getMessage()]
    assert line.getMessage().endswith("input pipeline: device") and line.details == "data.input_pipeline=device"
    # --batch-size auto leaves the device's copy of the data set (40 + 10 images) out of its budget.
    assert any("less the 0 MiB data set on it" in message for message in caplog.messages)
    with pytest.raises(ConfigError, match="data.input_pipeline.*randaugment"):
        jaxcnn.build(jaxcnn.RunConfig.from_dict(config.to_dict() | {"data": {
            **config.to_dict()["data"], "augment": "randaugment"}}))


def test_fit_on_device_batches_gives_the_host_metrics():
    """Both paths' uint8 batches, normalized by the same step, train to the same metrics."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    source = ArraySource(images, np.arange(40) % 3, class_names=["a", "b", "c"], mean=(0.4, 0.5, 0.6),
                         std=(0.2, 0.25, 0.3))
    mesh = make_mesh()
    train_step, eval_step = compile_steps(mesh, normalize=InputNormalization(source.mean, source.std))
    options = dict(batch_size=8, image_size=8, mean=source.mean, std=source.std, augment="crop:2,flip", seed=5)
    histories = []
    for make in (lambda **kw: Loader(source, **kw), lambda **kw: DeviceLoader(source, mesh=mesh, **kw)):
        tx = make_optimizer(OptimConfig(name="sgd", learning_rate=0.05, schedule="constant"), steps_per_epoch=5,
                            epochs=2)
        state = create_train_state(jax.random.key(0), TinyCNN(num_classes=3), tx, (8, 8, 3))
        config = RunConfig.from_dict({"loop": {"epochs": 2}, "optim": {"schedule": "constant"}, "progress": False})
        run = LoopRun(config, make(train=True, **options), make(train=False, **options),
                      Steps(train_step, eval_step, None, 0), mesh)
        _, loop = fit(run, replicate(state, mesh))
        histories.append(loop.history)
    host, device = histories
    assert len(host) == len(device) == 2
    for want, got in zip(host, device):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert got[key] == pytest.approx(want[key], abs=1e-5), key
