"""The epoch loop around the pure steps: early stopping, non-finite losses, Ctrl-C, resume state."""

import types
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.models import create_model
from jaxcnn.report.console import format_epoch
from jaxcnn.termination import exit_status, handle_termination
from jaxcnn.train import (
    PlateauConfig,
    OptimConfig,
    Checkpointer,
    EarlyStopping,
    EmaConfig,
    LoopState,
    NonFiniteLossError,
    compile_steps,
    create_train_state,
    evaluate,
    fit,
    make_mesh,
    make_optimizer,
    replicate,
)
from jaxcnn.run_config import RunConfig
from jaxcnn.train.loop import LoopRun
from jaxcnn.train.spec import Steps


def loop_run(train_loader, val_loader, train_step, eval_step, mesh, *, epochs=5, best_metric="val_accuracy",
             plateau=None, prefetch=2, ema_decay=None) -> LoopRun:
    """The run `fit` trains, from these parts and a config with these loop settings."""
    optim = {"schedule": "plateau", "plateau": {"metric": plateau.metric}} if plateau else {"schedule": "constant"}
    config = RunConfig.from_dict({"loop": {"epochs": epochs, "best_metric": best_metric, "ema_decay": ema_decay},
                                  "optim": optim,
                                  "data": {"prefetch": prefetch}, "progress": False})
    return LoopRun(config, train_loader, val_loader, Steps(train_step, eval_step, None, 0), mesh)


@pytest.mark.parametrize(
    "mode, values, stop_after",
    [
        ("max", [0.50, 0.60, 0.60, 0.59, 0.70], 4),  # two epochs without a better accuracy
        ("min", [1.0, 0.9, 0.95, 0.85, 0.86, 0.9], 6),
        ("max", [0.5, float("nan"), 0.4], 3),  # NaN never improves
    ],
)
def test_early_stopping_triggers_after_patience_bad_epochs(mode, values, stop_after):
    stopping = EarlyStopping(patience=2, mode=mode)
    for epoch, value in enumerate(values, start=1):
        stopping = stopping.update(value)
        if stopping.should_stop:
            break
    assert epoch == stop_after


def test_early_stopping_min_delta_and_disabled():
    stopping = EarlyStopping(patience=1, mode="max", min_delta=0.05).update(0.5).update(0.54)
    assert stopping.should_stop and stopping.best == 0.5
    assert not EarlyStopping(patience=0).update(1.0).update(0.0).update(0.0).should_stop


def test_loop_state_round_trips_through_json():
    loop = LoopState(epoch=3, history=[{"epoch": 1}], early_stopping=EarlyStopping(4, "min", 0.1, 0.3, 2))
    assert LoopState.from_json(loop.to_json()) == loop


def test_epoch_line_matches_the_tutorials():
    row = dict(epoch=3, train_loss=0.5521, train_accuracy=0.7123, val_loss=0.6093, val_accuracy=0.668,
               lr=1e-4, epoch_seconds=41.23, images_per_second=155.2)
    assert format_epoch(row, 55) == (
        "Epoch 3/55 | train loss 0.552 acc 0.712 | val loss 0.609 acc 0.668 | lr 1e-04 | 41.2 s, 155 img/s"
    )


class ArrayLoader:
    """Fixed batches of a tiny random 2-class problem (the loop only needs `len` and `epoch`)."""

    def __init__(self, n_batches=3, batch=8, seed=0):
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, 2, (n_batches, batch)).astype(np.int32)
        images = rng.normal(size=(n_batches, batch, 28, 28, 1)).astype(np.float32) + labels[..., None, None, None]
        self.batches = [dict(image=images[i], label=labels[i], mask=np.ones(batch, np.float32))
                        for i in range(n_batches)]

    def __len__(self):
        return len(self.batches)

    def epoch(self, epoch):
        return iter(self.batches)


class Recorder:
    def __init__(self):
        self.rows, self.messages = [], []

    def epoch_end(self, row, total_epochs):
        self.rows.append(row)

    def message(self, text):
        self.messages.append(text)


def small_setup():
    mesh = make_mesh()
    tx = make_optimizer(
        OptimConfig(name="adam", learning_rate=1e-3, schedule="constant"),
        steps_per_epoch=3, epochs=5)
    state = create_train_state(jax.random.key(0), create_model("lenet5", 2), tx, (28, 28, 1))
    return mesh, replicate(state, mesh), *compile_steps(mesh)


def test_non_finite_loss_stops_and_keeps_earlier_checkpoints(tmp_path):
    mesh, state, train_step, eval_step = small_setup()
    calls = []

    def diverging_step(state, batch):  # the real step, whose loss turns NaN in epoch 2
        calls.append(None)
        state, metrics = train_step(state, batch)
        if len(calls) > 3:
            metrics = {**metrics, "loss_sum": metrics["loss_sum"] * jnp.nan}
        return state, metrics

    checkpointer = Checkpointer(tmp_path / "ckpt", best_metric="val_accuracy", best_mode="max")
    recorder = Recorder()
    with pytest.raises(NonFiniteLossError, match="epoch 2"):
        fit(loop_run(ArrayLoader(), ArrayLoader(seed=1), diverging_step, eval_step, mesh), state,
            checkpointer=checkpointer, logger=recorder)
    checkpointer.wait()
    assert [row["epoch"] for row in recorder.rows] == [1]
    assert checkpointer.latest_epoch == 1 and checkpointer.best_epoch == 1
    assert any("nan" in m and "earlier epochs are kept" in m for m in recorder.messages)
    checkpointer.close()


@pytest.mark.parametrize("signum", [None, signal.SIGTERM])  # None: a plain Ctrl-C KeyboardInterrupt
def test_interrupt_finishes_the_save_in_flight_and_propagates(tmp_path, signum):
    mesh, state, train_step, eval_step = small_setup()
    calls = []

    def interrupted_step(state, batch):
        calls.append(None)
        if len(calls) == 5:  # inside epoch 2, while epoch 1's checkpoint may still be written
            if signum is None:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signum)
        return train_step(state, batch)

    checkpointer = Checkpointer(tmp_path / "ckpt")
    recorder = Recorder()
    loop = LoopState()
    with handle_termination(), pytest.raises(KeyboardInterrupt) as raised:
        fit(loop_run(ArrayLoader(), ArrayLoader(seed=1), interrupted_step, eval_step, mesh), state, loop,
            checkpointer=checkpointer, logger=recorder)
    assert exit_status(raised.value) == (143 if signum else 130)
    name = "SIGTERM" if signum else "SIGINT"
    assert loop.epoch == 1 and loop.stop_reason == f"interrupted by {name} during epoch 2"
    assert recorder.messages[-1] == f"Interrupted by {name} during epoch 2. Last checkpoint: epoch 1."
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["1"]  # written, no temporary left
    assert checkpointer.latest_epoch == 1
    checkpointer.close()


def test_ema_and_top5_columns_and_an_ema_best_metric(tmp_path):
    mesh = make_mesh()
    tx = make_optimizer(
        OptimConfig(name="adam", learning_rate=1e-3, schedule="constant"),
        steps_per_epoch=3, epochs=1)
    model = create_model("lenet5", 10)  # 10 outputs (labels 0-1): top-5 is reported
    state = replicate(create_train_state(jax.random.key(0), model, tx, (28, 28, 1), ema=EmaConfig(0.5)), mesh)
    train_step, eval_step = compile_steps(mesh)
    recorder = Recorder()
    with Checkpointer(tmp_path / "ckpt", best_metric="val_accuracy_ema") as checkpointer:
        run = loop_run(ArrayLoader(), ArrayLoader(seed=1), train_step, eval_step, mesh, epochs=1,
                       best_metric="val_accuracy_ema", ema_decay=0.5)
        state, loop = fit(run, state, checkpointer=checkpointer, logger=recorder)
        assert checkpointer.best_epoch == 1
    (row,) = recorder.rows
    assert {"train_top5", "val_top5", "val_loss_ema", "val_accuracy_ema", "val_top5_ema"} <= set(row)
    ema = evaluate(eval_step, state.ema_view(), ArrayLoader(seed=1).epoch(1), mesh)
    assert (row["val_loss_ema"], row["val_accuracy_ema"], row["val_top5_ema"]) == (ema.loss, ema.accuracy,
                                                                                 ema.top5_accuracy)
    assert row["val_loss_ema"] != row["val_loss"]  # the average (decay 0.5 over 3 updates) is not the model


def test_fit_shards_prefetch_batches_ahead_of_the_step():
    mesh, state, train_step, eval_step = small_setup()
    pulled, seen = [0], []

    class CountingLoader(ArrayLoader):
        def epoch(self, epoch):
            for batch in self.batches:
                pulled[0] += 1
                yield batch

    def step(state, batch):  # how many batches the loader had handed over when this step started
        seen.append(pulled[0])
        return train_step(state, batch)

    fit(loop_run(CountingLoader(n_batches=6), None, step, eval_step, mesh, epochs=1, best_metric="train_loss",
                 prefetch=3), state, logger=Recorder())
    assert seen == [4, 5, 6, 6, 6, 6]  # 3 ahead of the one the step takes, until the epoch runs out


def test_an_ema_metric_needs_an_ema():
    state = types.SimpleNamespace(ema=None)  # checked before anything runs
    with pytest.raises(ValueError, match="'val_loss_ema' needs a state with an EMA"):
        fit(loop_run(None, object(), None, None, None, epochs=1, plateau=PlateauConfig(metric="val_loss_ema"),
                     ema_decay=0.5),
            state)


def test_piped_output_gets_a_progress_line_every_interval(caplog):
    import logging

    from jaxcnn.train.loop import PipedProgress

    with caplog.at_level(logging.INFO, logger="jaxcnn"):
        with PipedProgress(5, "Epoch 1/3", every=0.0) as bar:
            bar.set_postfix(loss="0.5123", refresh=False)
            bar.update(1)
        with PipedProgress(5, "Epoch 2/3", every=3600.0) as quiet:
            quiet.update(5)
    assert caplog.messages == ["Epoch 1/3: step 1/5, loss 0.5123"]
