"""A whole training run from one `RunConfig` (`jaxcnn.run`): the recipe behind `jaxcnn train`, top to bottom.

jax.distributed (several processes) -> run folder -> `build` (data, loaders, model, optimizer,
sharded state, steps) -> resume -> `fit` -> best and last checkpoints tested -> `results.json`.

In a multi-process run (`jaxcnn.distributed`) every process runs all of it on its slot of each
batch; the run folder's files and the console are process 0's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import pathlib
import platform

import jax

from jaxcnn.builder import build
from jaxcnn.config import ConfigError
from jaxcnn.distributed import DistributedConfig, console_of_primary, initialize, is_primary, on_primary
from jaxcnn.inference.inputs import InputSpec
from jaxcnn.models.cpu_conv import cpu_backend
from jaxcnn.report.run_log import OtherProcessLogger, RunLogger, log_to_file, recorded_log, write_json
from jaxcnn.run_config import RunConfig, recorded_config
from jaxcnn.run_folder import check_run_folder, claim_run_folder
from jaxcnn.termination import resume_hint
from jaxcnn.train import Checkpointer, LoopState, NonFiniteLossError, evaluate, fit
from jaxcnn.train.metrics import metric_mode

log = logging.getLogger("jaxcnn")


def environment() -> dict:
    """Versions and devices, recorded in config.json so a run can be reproduced and compared."""
    import flax
    import grain
    import optax
    import orbax.checkpoint

    from jaxcnn import __version__

    return {
        "jaxcnn": __version__,
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "orbax-checkpoint": orbax.checkpoint.__version__,
        "grain": getattr(grain, "__version__", "unknown"),
        "python": platform.python_version(),
        "processes": jax.process_count(),
        "devices": [str(d) for d in jax.devices()],
        **({"cpu_convolutions": cpu_backend()} if jax.default_backend() == "cpu" else {}),
    }


def run(config: RunConfig, *, resume: bool = False, overwrite: bool = False) -> dict:
    """Run a training run in `config.out` (or a new folder), or with `resume` continue the run
    there; returns `results.json`'s content.

    A new run's folder is checked first (`check_run_folder`: not held by a live run, empty
    unless `overwrite`, writable), then the run is built (data found and read, the model checked
    against the input size, the pretrained weights read and matched, the train step compiled
    and its memory checked: `build`), and only then it claims its folder: locked for the whole run, refused when it holds
    another run (unless `overwrite`, which moves its contents aside), checked for writing. A
    start that fails before its first checkpoint removes what it wrote (`RunFolder.remove_start`).
    A resumed run claims its folder first, then builds from its recorded config.
    Ctrl-C / SIGTERM (`jaxcnn.termination`) finish the save in flight, test what was saved, log
    the command that continues the run, and propagate.

    `config.distributed` starts `jax.distributed` first when it asks for several processes
    (`jaxcnn.distributed.initialize`; nothing may use JAX's devices before). Then process 0
    claims the folder and every process learns its path, or process 0's refusal.
    """
    initialize(config.distributed)
    config.require_complete()
    with contextlib.ExitStack() as stack, console_of_primary():
        folders = []

        def claim() -> str:
            folder = stack.enter_context(claim_run_folder(config.run_dir(), resume=resume, overwrite=overwrite))
            folders.append(folder)
            if folder.moved_aside:
                log.info(f"Moved the old contents of {folder.path} to {folder.moved_aside}")
            return str(folder.path)

        if resume:
            path = pathlib.Path(on_primary(claim))
            earlier = []
            built = stack.enter_context(build(dataclasses.replace(config, out=str(path)), pretrained=False))
        else:
            on_primary(lambda: check_run_folder(config.run_dir(), overwrite=overwrite) or "")  # before any work
            with recorded_log() as earlier:
                built = stack.enter_context(build(config))
            path = pathlib.Path(on_primary(claim))
            built = dataclasses.replace(built, config=dataclasses.replace(built.config, out=str(path)))
        try:
            return _run(built, path, resume, earlier)
        except BaseException as error:
            _after_failure(error, path, folders[0] if folders else None)
            raise


WRITE_FAILURES = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)


def _after_failure(error: BaseException, path: pathlib.Path, folder) -> None:
    """A start that saved no checkpoint leaves no stub (the folder as it was claimed); then the
    command that continues the run, or which folder a failed write was writing to."""
    started = (path / "checkpoints").is_dir() and any(p.name.isdigit() for p in (path / "checkpoints").iterdir())
    if folder is not None and not started:
        folder.remove_start()
        log.info(f"Nothing was saved: removed what this start wrote to {path}.")
    elif isinstance(error, KeyboardInterrupt):
        log.info(resume_hint(path, program="jaxcnn train"))
    if isinstance(error, OSError) and error.filename is None and error.errno in WRITE_FAILURES:
        # a failed write() names no file (the log, the CSV, TensorBoard's event file...): say
        # which folder the run was writing to
        raise OSError(error.errno, f"{error.strerror} (writing the run folder {path})") from error


def _run(run, run_dir: pathlib.Path, resume: bool, earlier: list) -> dict:
    primary = is_primary()
    with contextlib.ExitStack() as cleanup:
        if primary:
            cleanup.enter_context(log_to_file(run_dir / "train.log", earlier))
        config, data, training = run.config, run.data, run.training
        best_metric = config.loop.best_metric
        checkpointer = cleanup.enter_context(Checkpointer(
            run_dir / "checkpoints", best_metric=best_metric, best_mode=metric_mode(best_metric)
        ))
        state, loop, problems = _starting_point(run, checkpointer, resume)

        inputs = InputSpec.from_data(data, config).to_dict()  # what `load_run` needs to preprocess
        if primary:
            write_json(run_dir / "config.json",
                       {"config": recorded_config(config), "inputs": inputs, "environment": environment()})
        logger = RunLogger(run_dir, loop.history) if primary else OtherProcessLogger(jax.process_index())
        cleanup.callback(logger.close)
        for problem in problems:
            logger.message(problem)
        mesh = training.mesh
        logger.message(
            f"{'Resuming' if loop.epoch else 'Training'} {config.model.arch} on {data.name} "
            f"({run.image_size}x{run.image_size}x{data.channels}, {mesh.size} {mesh.devices.flat[0].platform} device(s))"
            + (f" from epoch {loop.epoch + 1}" if loop.epoch else "") + f", run folder {run_dir}"
        )
        logger.skipped_files(data.skipped_files())

        abstract_state = training.spec.abstract_state
        failure = None
        try:
            state, loop = fit(run, state, loop, checkpointer=checkpointer, logger=logger,
                              progress=config.progress and primary)
        except (NonFiniteLossError, KeyboardInterrupt) as error:
            failure = error
        skipped = data.skipped_files()  # now including the files that failed when first read
        logger.skipped_files(skipped)

        results, split = _test_checkpoints(run, checkpointer, abstract_state, logger)
        results.update(epochs_completed=loop.epoch, stop_reason=loop.stop_reason or "completed",
                       skipped_files=len(skipped))
        if primary:
            logger.finish(results, data.class_names, split, recorded_config(config), checkpointer.best_epoch)
            write_json(run_dir / "results.json", results)
    if failure:
        raise failure
    return results


def _starting_point(run, checkpointer, resume: bool):
    """(state, loop state, problems): the newest readable checkpoint of a resumed run (each
    unreadable one newer than it is a problem line), else the built state (with the pretrained
    weights in it when the run names some)."""
    state, config = run.training.state, run.config
    if resume and checkpointer.latest_epoch is not None:
        restored = checkpointer.restore_newest_readable(state, set_aside=True)
        return restored.state, LoopState.from_json(restored.meta), restored.problems
    return state, LoopState(early_stopping=config.loop.early_stopping()), ()


def _test_checkpoints(run, checkpointer, state, logger) -> tuple[dict, str | None]:
    """Evaluate the best and the last checkpoint on the final split (test, else validation), as the
    tutorials report both, and with an EMA also the last checkpoint's EMA weights (`ema`). When the
    best checkpoint was chosen by an EMA metric, `best` is its EMA weights. Returns the results
    (with `split`) and the split's name (None when there is neither)."""
    loader, split = (run.test_loader, "test") if run.test_loader is not None else (run.val_loader, "val")
    if loader is None:
        return {"split": None}, None
    best_is_ema = run.config.loop.best_metric.endswith("_ema")
    eval_step, mesh, class_names = run.training.eval_step, run.training.mesh, run.data.class_names
    results = {}
    entries = [("best", checkpointer.best_epoch, best_is_ema), ("last", checkpointer.latest_epoch, False)]
    if state.ema is not None:
        entries.append(("ema", checkpointer.latest_epoch, True))
    for tag, epoch, use_ema in entries:
        if epoch is None:
            continue
        restored, _ = checkpointer.restore(state, epoch)
        result = evaluate(eval_step, restored.ema_view() if use_ema else restored, loader.epoch(0), mesh,
                          prefetch=run.config.data.prefetch)
        results[tag] = {"epoch": epoch, "checkpoint": str(checkpointer.path(epoch)), "ema_weights": use_ema,
                        **result.as_dict(class_names)}
        what = "EMA weights of the last checkpoint" if tag == "ema" else (
            f"{tag.capitalize()} checkpoint" + (" (its EMA weights)" if use_ema else ""))
        logger.message(
            f"{what} (epoch {epoch}, {checkpointer.path(epoch)}): "
            f"{split} loss {result.loss:.4f}, accuracy {result.accuracy:.4f}"
        )
    return {**results, "split": split}, split
