"""`--batch-size auto` (XLA memory analysis of the compiled step) and `--workers auto`."""

import jax
import numpy as np
import pytest

from jaxcnn.builder import resolve_batch_size
from jaxcnn.run_config import RunConfig
from jaxcnn.config import ConfigError
from jaxcnn.data.arrays import ArraySource
from jaxcnn.data.splits import Subset
from jaxcnn.data.workers import MAX_IN_MEMORY_WORKERS, auto_workers
from jaxcnn.train import make_mesh
from jaxcnn.train.batch_size import GRANULE, choose_per_device_batch


def test_choice_is_the_largest_multiple_of_8_that_fits_a_linear_step():
    measure = lambda b: 1000 + 100 * b  # noqa: E731
    batch, estimate, measured, capped = choose_per_device_batch(measure, budget=1000 + 100 * 61, cap=1024)
    assert (batch, estimate, measured, capped) == (56, 1000 + 5600, 1000 + 5600, False)
    assert choose_per_device_batch(measure, budget=10**9, cap=100)[::3] == (96, True)


def test_choice_steps_down_when_the_measured_step_is_larger_than_the_fit():
    measured = []

    def measure(b):  # linear from 8 to 16, then an extra 5000 bytes (e.g. a different conv algorithm)
        measured.append(b)
        return 1000 + 100 * b + (5000 if b > 16 else 0)

    batch, estimate, size, _ = choose_per_device_batch(measure, budget=1000 + 100 * 64, cap=1024)
    assert batch == 16 and size == 1000 + 1600 and measured[:3] == [8, 16, 64]
    assert all(b % GRANULE == 0 for b in measured)


def test_a_step_that_does_not_fit_at_batch_8_is_a_clear_error():
    with pytest.raises(ValueError, match="per-device batch of 8.*budget"):
        choose_per_device_batch(lambda b: 10**6, budget=10**5, cap=1024)


def test_auto_batch_size_measures_the_real_step_and_picks_the_largest_fit():
    config = RunConfig.from_dict({"model": {"arch": "lenet5"}, "data": {"name": "demo", "batch_size": "auto"}})
    mesh = make_mesh(jax.devices()[:1])
    resolved, choice = resolve_batch_size(config, num_classes=10, input_shape=(32, 32, 1), mesh=mesh)
    assert choice.limit == "the CPU cap" and resolved.data.batch_size == choice.global_batch == 128
    # A budget between two batches' measured sizes picks the smaller one, from the compiled steps alone.
    from jaxcnn.train.batch_size import auto_batch_size

    state_and_step = _lenet_step(config, mesh)
    small = _measured(*state_and_step, mesh, 32)
    large = _measured(*state_and_step, mesh, 40)
    budget = (small + large) // 2
    picked = auto_batch_size(*state_and_step, input_shape=(32, 32, 1), mesh=mesh, budget=(budget, "test"))
    assert picked.per_device == 32 and picked.measured_bytes == small <= budget and picked.limit is None
    assert abs(picked.estimate_bytes - small) < 0.2 * small
    assert "estimate" in picked.message() and "XLA buffers" in picked.message()


def _lenet_step(config, mesh):
    from jaxcnn.train import InputNormalization, compile_steps, create_train_state, make_optimizer

    model = config.model.build(10)
    optimizer = make_optimizer(config.optim, steps_per_epoch=1, epochs=1)
    state = jax.eval_shape(lambda: create_train_state(jax.random.key(0), model, optimizer, (32, 32, 1)))
    return compile_steps(mesh, normalize=InputNormalization((0.5,), (0.25,)))[0], state


def _measured(train_step, state, mesh, per_device):
    from jaxcnn.train.batch_size import step_bytes

    b = per_device * mesh.size
    batch = {"image": jax.ShapeDtypeStruct((b, 32, 32, 1), np.uint8),
             "label": jax.ShapeDtypeStruct((b,), np.int32), "mask": jax.ShapeDtypeStruct((b,), np.float32)}
    return step_bytes(train_step.lower(state, batch).compile())


def test_auto_batch_size_is_bounded_by_the_training_split():
    config = RunConfig.from_dict({"model": {"arch": "lenet5"}, "data": {"name": "demo", "batch_size": "auto"}})
    mesh = make_mesh(jax.devices()[:1])
    resolved, choice = resolve_batch_size(config, num_classes=10, input_shape=(32, 32, 1), mesh=mesh, max_examples=50)
    assert choice.per_device == 48 and choice.limit == "the training split's size"
    with pytest.raises(ConfigError, match="data.batch_size: --batch-size auto needs at least 8"):
        resolve_batch_size(config, num_classes=10, input_shape=(32, 32, 1), mesh=mesh, max_examples=5)


def test_batch_size_and_workers_accept_auto_or_a_number_only():
    assert RunConfig.from_dict({"data": {"batch_size": "auto", "workers": "auto"}}).data.workers == "auto"
    with pytest.raises(ConfigError, match="data.batch_size: must be an integer, got 'big'"):
        RunConfig.from_dict({"data": {"batch_size": "big"}})
    with pytest.raises(ConfigError, match="data.workers: must be >= 0"):
        RunConfig.from_dict({"data": {"workers": -1}})


def test_auto_workers_follow_the_backend_cpu_count_and_source():
    arrays = ArraySource(np.zeros((4, 8, 8, 1), np.uint8), [0, 1, 0, 1], class_names=["a", "b"], mean=[0.5], std=[0.5])
    files = type("FolderLike", (), {"in_memory": False})()
    assert auto_workers(Subset(arrays, [0, 1]), platform="cpu", cpus=64)[0] == 0
    assert auto_workers(Subset(arrays, [0, 1]), platform="gpu", cpus=64)[0] == MAX_IN_MEMORY_WORKERS
    assert auto_workers(files, platform="gpu", cpus=12)[0] == 11
    assert auto_workers(files, platform="gpu", cpus=1)[0] == 0
