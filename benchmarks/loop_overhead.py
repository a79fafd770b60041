"""What the training loop costs: `fit()` against the bare compiled steps on the same batches.

    python benchmarks/loop_overhead.py [--arch lenet5,resnet20] [--batch-size 16] [--epochs 2] \\
        [--rounds 3] [--json out.json]

On the embedded demo set (1,200 training / 300 validation Fashion-MNIST images, 28x28 gray) with
the CLI's defaults (batch 16, Adam 1e-4, plateau schedule, the dataset's augmentation), each
round times, one after the other:
- loop: `fit()` for `--epochs` epochs, as `scripts/train.py` runs it: the Grain Loader decoding
  and augmenting, device prefetch, per-step metrics, the progress bar, validation, plateau and
  early-stopping bookkeeping, the run folder's CSV / TensorBoard / log, and an Orbax checkpoint
  per epoch (waited for at the end, as a run does);
- bare: the same compiled train and eval steps over the same epochs' batches, prepared and put
  on the device beforehand, blocking once per epoch.
overhead = loop / bare - 1, from the medians over rounds (compilation is done before round 1);
s/epoch = (loop - bare) / epochs, the loop's cost per epoch, which carries over to larger datasets.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import tempfile

import jax

import harness
from jaxcnn.data import Loader, load_data
from jaxcnn.report.run_log import RunLogger
from jaxcnn.train import Checkpointer, InputNormalization, LoopState, fit
from jaxcnn.train.evaluation import sum_metrics
from jaxcnn.train.loop import LoopRun


def loaders(data, batch_size: int, seed: int) -> tuple[Loader, Loader]:
    def make(source, train):
        return Loader(source, batch_size=batch_size, train=train, image_size=data.default_image_size,
                      mean=data.mean, std=data.std, augment=data.default_augment, hflip=data.default_hflip,
                      seed=seed, channels=data.channels)

    return make(data.train, True), make(data.val, False)


def measure(arch: str, batch_size: int, args, run_dir: pathlib.Path) -> dict:
    data = load_data("demo", split_seed=harness.DEFAULTS.seed, cache=args.cache)
    train_loader, val_loader = loaders(data, batch_size, harness.DEFAULTS.seed)
    setup = harness.TrainSetup(arch, data.default_image_size, batch_size, channels=data.channels,
                               num_classes=data.num_classes, devices=1,
                               normalize=InputNormalization.of(train_loader.normalize))
    state, mesh = setup.state, setup.mesh
    checkpointer = Checkpointer(run_dir / "checkpoints")
    loop = LoopState()  # no early stopping: every round trains its epochs
    logger = RunLogger(run_dir)

    def run_fit(epochs: int) -> None:
        nonlocal state, loop
        config = dataclasses.replace(setup.config, loop=dataclasses.replace(setup.config.loop, epochs=loop.epoch + epochs))
        run = LoopRun(config, train_loader, val_loader, setup.training.steps, mesh)
        state, loop = fit(run, state, loop, checkpointer=checkpointer, logger=logger, progress=args.progress)

    def device_batches(loader, epoch):
        return [jax.device_put(b, setup.batch["image"].sharding) for b in loader.epoch(epoch)]

    def run_bare(epochs: list[tuple[list, list]]) -> None:
        nonlocal state
        for train_batches, val_batches in epochs:
            per_step = []
            for batch in train_batches:
                state, metrics = setup.train_step(state, batch)
                per_step.append(metrics)
            evaluation = [setup.eval_step(state, batch) for batch in val_batches]
            sum_metrics(per_step), sum_metrics(evaluation)  # the host reads the epoch's metrics

    run_fit(1)  # compiles both steps
    loop_s, bare_s = [], []
    for _ in range(args.rounds):
        first = loop.epoch + 1
        loop_s.append(harness.seconds(run_fit, args.epochs))
        prepared = [(device_batches(train_loader, e), device_batches(val_loader, e))
                    for e in range(first, first + args.epochs)]
        bare_s.append(harness.seconds(run_bare, prepared))
    checkpointer.close()
    logger.close()
    train_loader.close()
    val_loader.close()
    loop_median, bare_median = harness.median(loop_s), harness.median(bare_s)
    images = args.epochs * len(train_loader) * batch_size
    return {
        "arch": arch, "batch_size": batch_size, "cache": args.cache, "progress": args.progress, "epochs_per_round": args.epochs, "rounds": args.rounds,
        "train_batches_per_epoch": len(train_loader), "val_batches_per_epoch": len(val_loader),
        "loop_s": loop_s, "bare_s": bare_s, "loop_images_per_s": images / loop_median,
        "bare_images_per_s": images / bare_median, "overhead": loop_median / bare_median - 1,
        "overhead_s_per_epoch": (loop_median - bare_median) / args.epochs,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", default="lenet5,resnet20", help="comma list of models")
    p.add_argument("--batch-size", default="16", help="comma list of batch sizes (the CLI's default: 16)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per timed block")
    p.add_argument("--rounds", type=int, default=3, help="alternating loop / bare blocks; medians are reported")
    p.add_argument("--cache", action="store_true", help="decode the images once, as `scripts/train.py --cache`")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="time fit() without the progress bar")
    p.add_argument("--json", help="write the results to this JSON file")
    args = p.parse_args()
    results = []
    print(f"{'arch':<10}{'batch':>6}{'loop img/s':>12}{'bare img/s':>12}{'overhead':>10}{'s/epoch':>9}", flush=True)
    for arch in args.arch.split(","):
        for batch_size in (int(b) for b in args.batch_size.split(",")):
            with tempfile.TemporaryDirectory() as run_dir:
                r = measure(arch, batch_size, args, pathlib.Path(run_dir))
            results.append(r | {"environment": harness.environment()})
            print(f"{arch:<10}{batch_size:>6}{r['loop_images_per_s']:>12.0f}{r['bare_images_per_s']:>12.0f}"
                  f"{r['overhead']:>9.1%}{r['overhead_s_per_epoch']:>9.2f}", flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
