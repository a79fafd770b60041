"""Checkpoint faults: declined and failed saves are errors, and resume falls back to the newest readable one."""

import errno
import os
import pathlib
import shutil

import jax
import orbax.checkpoint as ocp
import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from jaxcnn.train import Checkpointer, OptimConfig, make_optimizer
from jaxcnn.train.checkpoints import CheckpointError, UnreadableCheckpointError
from mount_helpers import tmpfs
from train_helpers import TinyCNN, tiny_state, trees_equal


@pytest.fixture(scope="module")
def states():
    """Two distinguishable tiny TrainStates (different initialisations)."""
    tx = make_optimizer(OptimConfig(name="sgd", learning_rate=0.1, schedule="constant"), steps_per_epoch=1, epochs=1)
    return tiny_state(tx, seed=0), tiny_state(tx, seed=1)


def save_two(directory, states):
    """Epoch 1 (the best) and epoch 2 (the latest, a different state): two checkpoints kept."""
    with Checkpointer(directory) as checkpointer:
        checkpointer.save(1, states[0], {"epoch": 1}, {"val_accuracy": 0.9})
        checkpointer.save(2, states[1], {"epoch": 2}, {"val_accuracy": 0.5})
    assert sorted(p.name for p in pathlib.Path(directory).iterdir()) == ["1", "2"]


def listing(directory):
    return sorted(p.name for p in pathlib.Path(directory).iterdir())


def test_a_declined_save_is_an_error(tmp_path, states):
    save_two(tmp_path, states)  # e.g. an old run in the same folder
    with Checkpointer(tmp_path) as checkpointer:
        with pytest.raises(CheckpointError) as error:
            checkpointer.save(1, states[0], {"epoch": 1}, {"val_accuracy": 0.99})
    assert str(error.value) == (
        f"the checkpoint of epoch 1 was not saved: {tmp_path} already holds epoch 2, and orbax only "
        "saves later epochs; a run folder must belong to one run"
    )


# The four ways a newest checkpoint was found broken: orbax 0.12.8 writes `<epoch>/state/` as an
# OCDBT database (`manifest.ocdbt`, data files under `d/` and `ocdbt.process_0/d/`), the tree's
# `_METADATA`, per-array metadata in `array_metadatas/`, and the loop's JSON in `<epoch>/meta/`.
def truncate_array_files(step):
    files = [f for f in (step / "state").rglob("*") if f.is_file() and f.parent.name == "d"]
    assert files
    for f in files:
        os.truncate(f, f.stat().st_size // 2)


CORRUPTIONS = {
    "truncated array files": (truncate_array_files, "OUT_OF_RANGE"),
    "deleted array metadata": (lambda step: shutil.rmtree(step / "state" / "array_metadatas"),
                               ".rng is uint32[2], expected key<fry>[]"),
    "deleted tree metadata": (lambda step: os.remove(step / "state" / "_METADATA"), "pytree structure error"),
    "deleted meta folder": (lambda step: shutil.rmtree(step / "meta"), 'Item "meta" was not found'),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_resume_falls_back_to_the_newest_readable_checkpoint(tmp_path, states, corruption):
    directory = tmp_path / "checkpoints"
    save_two(directory, states)
    corrupt, why = CORRUPTIONS[corruption]
    corrupt(directory / "2")
    with Checkpointer(directory) as checkpointer:
        with pytest.raises(UnreadableCheckpointError) as error:
            checkpointer.restore(states[0])
        assert str(error.value).startswith(f"the checkpoint of epoch 2 ({directory / '2'}) is unreadable: ")
        assert why in str(error.value) and "\n" not in str(error.value) and len(str(error.value)) < 500

        restored = checkpointer.restore_newest_readable(jax.eval_shape(lambda: states[1]), set_aside=True)
        assert restored.epoch == 1 and restored.meta == {"epoch": 1} and trees_equal(restored.state, states[0])
        (problem,) = restored.problems  # the same checkpoint, reported the same way (orbax's reason may vary)
        assert problem.startswith(f"the checkpoint of epoch 2 ({directory / '2'}) is unreadable: ")
        assert problem.endswith(f"; moved to {tmp_path / 'checkpoints.unreadable' / '2'}")
        assert listing(directory) == ["1"] and checkpointer.latest_epoch == 1
        checkpointer.save(2, states[1], {"epoch": 2}, {"val_accuracy": 0.95})  # the resumed run goes on
    assert listing(directory) == ["2"] and listing(tmp_path / "checkpoints.unreadable") == ["2"]


def test_restored_leaves_must_match_the_target(tmp_path, states):
    save_two(tmp_path, states)
    with Checkpointer(tmp_path) as checkpointer:
        as_data = jax.tree.map(ocp.utils.to_shape_dtype_struct, states[0])  # the key as uint32 data
        restored, _ = checkpointer.restore(as_data, epoch=1)
        assert trees_equal(restored, states[0])
        wider = tiny_state(states[0].tx, model=TinyCNN(num_classes=4))
        with pytest.raises(UnreadableCheckpointError, match=r"is unreadable: ValueError: Requested shape: .* is not "
                           r"compatible with the stored shape"):  # the Dense head: 4 classes, stored 3
            checkpointer.restore(wider, epoch=1)


def test_no_readable_checkpoint_is_one_clear_error(tmp_path, states):
    save_two(tmp_path, states)
    shutil.rmtree(tmp_path / "1" / "meta")
    truncate_array_files(tmp_path / "2")
    with Checkpointer(tmp_path) as checkpointer:
        with pytest.raises(UnreadableCheckpointError) as error:
            checkpointer.restore_newest_readable(states[0], set_aside=True)
    message = str(error.value)
    assert message.startswith(f"none of the 2 checkpoints in {tmp_path} is readable: the checkpoint of epoch 2 ")
    assert "; the checkpoint of epoch 1 " in message and "\n" not in message
    assert listing(tmp_path) == ["1", "2"]  # nothing is moved when there is nothing to resume from
    with Checkpointer(tmp_path / "empty") as checkpointer, pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpointer.restore_newest_readable(states[0])


def inject_enospc(monkeypatch):
    """Make the JSON write of every save fail as on a full disk (orbax runs it in a background thread)."""
    async def disk_full(self, item, directory):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory / "metadata"))

    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", disk_full)


def test_disk_full_during_a_save_is_one_error_and_leaves_no_temporary_folder(tmp_path, states, monkeypatch):
    checkpointer = Checkpointer(tmp_path)
    checkpointer.save(1, states[0], {"epoch": 1}, {"val_accuracy": 0.9})
    checkpointer.wait()
    inject_enospc(monkeypatch)
    checkpointer.save(2, states[1], {"epoch": 2}, {"val_accuracy": 0.5})  # fails in the background
    with pytest.raises(CheckpointError) as error:
        checkpointer.close()
    assert str(error.value) == (
        f"could not save the checkpoint of epoch 2 to {tmp_path / '2'}: OSError: [Errno 28] No space left on "
        f"device: '{tmp_path / '2.orbax-checkpoint-tmp' / 'meta.orbax-checkpoint-tmp' / 'metadata'}'; "
        f"saved before: epoch 1 (latest) and epoch 1 (best) in {tmp_path}"
    )
    assert listing(tmp_path) == ["1"]
    monkeypatch.undo()
    with Checkpointer(tmp_path) as reopened:
        restored, meta = reopened.restore(states[0])
    assert meta == {"epoch": 1} and trees_equal(restored, states[0])


def test_failed_first_save_says_nothing_was_saved(tmp_path, states, monkeypatch):
    inject_enospc(monkeypatch)
    with pytest.raises(CheckpointError, match="epoch 1 .*No space left.*; no checkpoint was saved before it$"):
        with Checkpointer(tmp_path) as checkpointer:
            checkpointer.save(1, states[0], {"epoch": 1}, {"val_accuracy": 0.9})
            checkpointer.save(2, states[1], {"epoch": 2}, {"val_accuracy": 0.5})  # confirms epoch 1 first
    assert listing(tmp_path) == []


@pytest.fixture
def small_filesystem(tmp_path):
    """A real 256 KiB filesystem (skipped where this sandbox cannot mount one)."""
    with tmpfs(tmp_path / "small", "size=256k") as mount_point:
        yield mount_point


def test_a_really_full_disk(small_filesystem, states):
    directory = small_filesystem / "checkpoints"
    checkpointer = Checkpointer(directory)
    checkpointer.save(1, states[0], {"epoch": 1}, {"val_accuracy": 0.9})
    checkpointer.wait()
    stat = os.statvfs(small_filesystem)
    (small_filesystem / "filler").write_bytes(bytes(stat.f_bavail * stat.f_frsize - 2048))
    with pytest.raises(CheckpointError) as error, checkpointer:  # from the save or from the confirming close
        checkpointer.save(2, states[1], {"epoch": 2}, {"val_accuracy": 0.5})
    assert str(error.value).startswith(f"could not save the checkpoint of epoch 2 to {directory / '2'}: ")
    assert "No space left on device" in str(error.value)
    assert str(error.value).endswith(f"saved before: epoch 1 (latest) and epoch 1 (best) in {directory}")
    assert listing(directory) == ["1"]
