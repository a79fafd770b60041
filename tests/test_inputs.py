"""uint8 batches normalized (and erased) inside the step: the same inputs and the same training
as the float batches the host normalized before (`jaxcnn.train.inputs`)."""

import jax
import numpy as np
import optax
import pytest

from jaxcnn.builder import build
from jaxcnn.run_config import RunConfig
from jaxcnn.config import ConfigError
from jaxcnn.data.arrays import ArraySource
from jaxcnn.data.config import DataConfig
from jaxcnn.data.pipeline import Loader
from jaxcnn.data.transforms import Normalize
from jaxcnn.train import InputNormalization, compile_steps, make_mesh, prepare_inputs, replicate, shard_batch
from jaxcnn.train.inputs import erase_boxes
from train_helpers import INPUT_MEAN, INPUT_STD, make_batch, make_uint8_batch, normalized_on_host, tiny_state

STATS = InputNormalization(INPUT_MEAN, INPUT_STD)


def loader(channels: int, augment: str) -> Loader:
    rng = np.random.default_rng(channels)
    mean, std = (0.49, 0.48, 0.45)[:channels], (0.25, 0.24, 0.26)[:channels]
    source = ArraySource(rng.integers(0, 256, (40, 16, 16, channels), np.uint8), np.arange(40) % 4,
                         class_names=list("abcd"), mean=mean, std=std)
    return Loader(source, batch_size=8, train=True, image_size=16, mean=mean, std=std, augment=augment, seed=0)


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("augment", ["cifar", "cifar,erase:0.5"])
def test_the_step_inputs_equal_the_host_normalized_and_erased_batches(channels, augment):
    prepare = jax.jit(prepare_inputs, static_argnums=1)
    with loader(channels, augment) as batches:
        normalization = InputNormalization.of(batches.normalize)
        boxes = []
        for batch in batches.epoch(0):
            assert batch["image"].dtype == np.uint8
            inputs = prepare(batch, normalization)
            host = normalized_on_host(batch, normalization.mean, normalization.std)
            assert set(inputs) == {"image", "label", "mask"} and inputs["image"].dtype == np.float32
            np.testing.assert_allclose(inputs["image"], host["image"], rtol=0, atol=1e-6)
            erased = np.asarray(inputs["image"])[host["image"] == 0.0]  # where the host erased (no pixel is the mean)
            assert erased.size == sum(h * w * channels for _, _, h, w in batch.get("erase", ()))
            np.testing.assert_array_equal(erased, 0.0)  # exactly torchvision's value, at exactly the drawn boxes
            boxes += list(batch.get("erase", ()))
    if "erase" in augment:  # p = 0.5: both erased and untouched images were checked
        areas = [h * w for _, _, h, w in boxes]
        assert 0 < areas.count(0) < len(areas)


def test_train_and_eval_steps_on_uint8_batches_equal_them_on_host_normalized_floats():
    mesh = make_mesh()
    on_device, on_host = compile_steps(mesh, normalize=STATS), compile_steps(mesh)
    states = [replicate(tiny_state(optax.sgd(0.1, momentum=0.9)), mesh) for _ in range(2)]
    for step in range(3):
        batch = make_uint8_batch(8, seed=step, valid=6, erase=True)
        metrics = []
        for i, (train_step, _) in enumerate((on_device, on_host)):
            fed = batch if i == 0 else normalized_on_host(batch)
            states[i], step_metrics = train_step(states[i], shard_batch(fed, mesh))
            metrics.append(jax.device_get(step_metrics))
        for key in metrics[0]:
            np.testing.assert_allclose(metrics[0][key], metrics[1][key], rtol=0, atol=1e-5)
    for a, b in zip(jax.tree.leaves((states[0].params, states[0].batch_stats)),
                    jax.tree.leaves((states[1].params, states[1].batch_stats)), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    batch = make_uint8_batch(8, seed=9, valid=5)
    evaluated = [jax.device_get(eval_step(states[0], shard_batch(fed, mesh)))
                 for (_, eval_step), fed in ((on_device, batch), (on_host, normalized_on_host(batch)))]
    for key in evaluated[0]:
        np.testing.assert_allclose(evaluated[0][key], evaluated[1][key], rtol=0, atol=1e-5)


def test_float_batches_pass_through_and_bad_images_are_named():
    floats = make_batch(4)
    assert prepare_inputs(floats)["image"] is floats["image"]  # already normalized: as given
    with pytest.raises(ValueError, match="needs the input statistics"):
        prepare_inputs(make_uint8_batch(4))
    with pytest.raises(TypeError, match="uint8"):
        prepare_inputs({**floats, "image": floats["image"].astype(np.int16)}, STATS)
    with pytest.raises(ValueError, match="2 channels, the input statistics 3"):
        prepare_inputs(make_uint8_batch(4), InputNormalization((0.5,) * 3, (0.2,) * 3))


def test_erase_boxes_zero_exactly_their_box_and_empty_boxes_nothing():
    images = np.ones((2, 6, 7, 3), np.float32)
    erased = np.asarray(erase_boxes(images, np.array([[1, 2, 3, 4], [2, 3, 0, 0]], np.int32)))
    assert erased[0, 1:4, 2:6].max() == 0 and erased[0].sum() == 6 * 7 * 3 - 3 * 4 * 3
    np.testing.assert_array_equal(erased[1], images[1])


def test_input_normalization_is_a_static_value_with_the_host_constants():
    stats = InputNormalization([0.5, 0.25], np.array([0.2, 0.3]))
    assert stats == InputNormalization((0.5, 0.25), (0.2, 0.3)) and hash(stats) == hash(InputNormalization.of(stats))
    host = Normalize((0.5, 0.25), (0.2, 0.3))
    assert InputNormalization.of(host) == stats
    for ours, theirs in zip(stats.affine, host.affine):
        np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(ValueError, match="std > 0"):
        InputNormalization((0.5,), (0.0,))


def test_prefetch_is_at_least_one_and_reaches_the_loaders():
    assert DataConfig().prefetch == 2
    with pytest.raises(ConfigError, match="prefetch"):
        DataConfig(prefetch=0)
    config = RunConfig.from_dict({"model": {"arch": "lenet5"}, "data": {"name": "demo", "prefetch": 3}})
    with build(config) as run:
        assert run.train_loader.prefetch == run.val_loader.prefetch == 3
