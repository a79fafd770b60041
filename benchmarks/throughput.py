"""Training throughput of jaxcnn's real train step per architecture, batch size, dtype and device count.

    python benchmarks/throughput.py --arch resnet20,vgg16 --batch-size 32 --image-size 32 \\
        --dtype float32,bfloat16 --devices 1,2,4 --json results.json
    python benchmarks/throughput.py --arch resnet50 --image-size 224 --batch-size 64 --eval
    python benchmarks/throughput.py --arch lenet5 --image-size 28 --batch-size 128 --pipeline --data demo
    python benchmarks/throughput.py --arch all --image-size 32,224 --batch-size auto --dtype float32,bfloat16 \
        --devices 1,2,4,8 --json gpu.json      # the whole GPU table (benchmarks/README.md)
    python benchmarks/throughput.py --arch resnet20 --image-size 28 --pipeline device \
        --data fashion_mnist --data-dir /usr/share/datasets/fashion-mnist

Each configuration builds what `jaxcnn train` builds (`harness.TrainSetup`) on a synthetic
uint8 batch already on the devices (normalized inside the step, as a run's batches are), then reports:
- compile_s: trace + lower + XLA compile of the step (what the first call costs beyond one step);
- images_per_s: the median over `--windows` timed windows (each ~`--window-seconds`, blocking
  only at its end) after a warm-up window; step_s: the median window time per step;
- flops_per_image: XLA's cost analysis of the compiled step (forward, backward and optimizer
  update; with N devices, of one device's program divided by its batch); tflops_per_s: what
  the run achieved; mfu: that over the device's peak (PEAK_TFLOPS; blank where unknown, e.g. CPU);
- xla_memory_bytes: one device's buffers of the compiled step (arguments + outputs - donated +
  temporaries), exact per configuration; peak_memory_bytes: the device's peak bytes in use where
  the backend reports it (GPU, TPU; cumulative over the process), else this process's peak RSS
  since the configuration started (`peak_memory_source` says which);
- speedup / efficiency: images/s against the same configuration on 1 device (global batch =
  per-device batch x devices). CPU "devices" are fake: they share the host's cores, so there
  ideal scaling is a speedup of 1, and the figure measures what sharding costs.

`--batch-size auto` chooses each configuration's per-device batch as `jaxcnn train --batch-size
auto` does (the largest multiple of 8 whose compiled train step fits the device memory; 128 at
most on CPU), so one command covers every architecture and input size on any GPU.

`--json FILE` is rewritten after every configuration, so a stopped run keeps what it measured.

`--eval` times `eval_step` instead. `--pipeline [host|device]` feeds real data (`--data`, default
the embedded demo set) through the training loop's own prefetch -- host: the Grain `Loader`;
device: the device-resident `DeviceLoader` (in-memory data, recipes of crop and flip) --,
alternating its windows with bare-step windows on the same state, and reports both rates and
their ratio.

On CPU each device count runs in a subprocess with
`XLA_FLAGS=--xla_force_host_platform_device_count=N` (it must be set before jax starts); on GPU
and TPU the first N real devices are used in this process.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import jax

import harness
from jaxcnn.builder import resolve_batch_size
from jaxcnn.config import AUTO, int_or_auto
from jaxcnn.models import list_models
from jaxcnn.train import InputNormalization

# Dense peak TFLOP/s per device: (float32 as JAX runs it by default -- TF32 tensor cores on
# Ampere and newer --, bfloat16 tensor cores). Vendor datasheets, without sparsity. Matched
# in order as substrings of `device_kind`, so a specific variant comes before its family.
PEAK_TFLOPS = (
    ("h100 pcie", 378.0, 756.0),
    ("h100 nvl", 417.5, 835.0),
    ("h100", 494.7, 989.4),
    ("h200", 494.7, 989.4),
    ("a100", 156.0, 312.0),
    ("l40s", 183.0, 362.1),
    ("l4", 60.0, 121.0),
    ("a10g", 35.0, 70.0),
    ("rtx 4090", 82.6, 165.2),
    ("rtx 3090", 35.6, 71.0),
    ("v100", 15.7, None),  # no bfloat16 tensor cores
    ("t4", 8.1, None),
)

def peak_tflops(device_kind: str, dtype: str) -> float | None:
    kind = device_kind.lower()
    for name, float32, bfloat16 in PEAK_TFLOPS:
        if name in kind:
            return float32 if dtype == "float32" else bfloat16
    return None


def measure(setup: harness.TrainSetup, args, data=None) -> dict:
    """Compile, warm up and time one configuration; returns its record (without scaling)."""
    harness.reset_peak_rss()
    compiled, compile_s = setup.compile(eval=args.eval)
    memory = compiled.memory_analysis()
    flops = (compiled.cost_analysis() or {}).get("flops")
    state = setup.state

    def run(steps: int, batches=None) -> None:
        nonlocal state
        if args.eval:
            jax.block_until_ready([setup.eval_step(state, setup.batch) for _ in range(steps)])
            return
        for _ in range(steps):
            state, metrics = setup.train_step(state, setup.batch if batches is None else next(batches))
        jax.block_until_ready((state, metrics))

    run(1)  # the first execution (the executable is cached by `compile`)
    steps = args.steps or max(1, round(args.window_seconds / harness.seconds(run, 1)))
    record = {"arch": setup.arch, "mode": "eval" if args.eval else "train"}
    if args.pipeline:
        loader, batches = pipeline_batches(setup, data, args)
        run(steps, batches)  # warm-up; the loader's threads or workers start
        bare, fed = zip(*[(harness.seconds(run, steps), harness.seconds(run, steps, batches))
                          for _ in range(args.windows)])
        loader.close()
        bare_rate = steps * setup.global_batch / harness.median(bare)
        seconds = list(fed)
        record.update(mode="pipeline", pipeline=args.pipeline, data=args.data, workers=args.workers,
                      step_images_per_s=bare_rate,
                      pipeline_ratio=steps * setup.global_batch / harness.median(seconds) / bare_rate)
    else:
        seconds = harness.timed_windows(lambda: run(steps), windows=args.windows, warmup=args.warmup)
    rates = [steps * setup.global_batch / s for s in seconds]

    images_per_s = steps * setup.global_batch / harness.median(seconds)
    flops_per_image = flops / setup.per_device_batch if flops else None
    achieved = flops_per_image * images_per_s / 1e12 if flops_per_image else None
    peak = peak_tflops(jax.devices()[0].device_kind, setup.dtype)
    device_stats = [d.memory_stats() for d in setup.mesh.devices.flat]
    if all(device_stats):
        peak_memory, source = max(s.get("peak_bytes_in_use", 0) for s in device_stats), "device"
    else:
        peak_memory, source = harness.peak_rss_bytes(), "process RSS"
    record.update(
        image_size=setup.image_size, channels=setup.channels, num_classes=setup.num_classes,
        dtype=setup.dtype, devices=setup.devices, per_device_batch=setup.per_device_batch,
        global_batch=setup.global_batch, compile_s=compile_s, steps_per_window=steps,
        windows=len(seconds), step_s=harness.median(seconds) / steps, images_per_s=images_per_s,
        window_images_per_s=rates, flops_per_image=flops_per_image, tflops_per_s=achieved,
        mfu=achieved / (peak * setup.devices) if achieved and peak else None,
        xla_memory_bytes=(memory.argument_size_in_bytes + memory.output_size_in_bytes
                          - memory.alias_size_in_bytes + memory.temp_size_in_bytes) if memory else None,
        peak_memory_bytes=peak_memory, peak_memory_source=source,
    )
    return record


def pipeline_batches(setup: harness.TrainSetup, data, args):
    """The training split's batches through the `--pipeline` loader and the loop's device
    prefetch, epoch after epoch: `(loader, iterator)`."""
    from jaxcnn.data import Loader
    from jaxcnn.data.device import DeviceLoader
    from jaxcnn.train.evaluation import prefetch_to_mesh

    options = dict(batch_size=setup.global_batch, train=True, image_size=setup.image_size, mean=data.mean,
                   std=data.std, augment=data.default_augment, hflip=data.default_hflip, seed=setup.seed,
                   channels=setup.channels)
    if args.pipeline == "device":
        loader = DeviceLoader(data.train, mesh=setup.mesh, **options)
    else:
        loader = Loader(data.train, workers=args.workers, **options)
    host = itertools.chain.from_iterable(loader.epoch(e) for e in itertools.count())
    return loader, iter(prefetch_to_mesh(host, setup.mesh))


def load_pipeline_data(args):
    from jaxcnn.data import load_data

    return load_data(args.data, args.data_dir, image_size=args.image_size[0], cache=args.cache)


def run_configs(args, device_counts, on_record=lambda record: None) -> list[dict]:
    """Measure every configuration for each device count in this process; one record each, handed
    to `on_record` as soon as it is measured (so that a stopped benchmark keeps what it measured)."""
    env = harness.environment()
    channels, num_classes, data, normalize = args.channels, args.num_classes, None, None
    if args.pipeline:
        data = load_pipeline_data(args)
        channels, num_classes = data.channels, data.num_classes
        normalize = InputNormalization(data.mean, data.std)  # the Loader's batches are normalized with these
    records = []
    for devices, arch, size, batch, dtype in itertools.product(
        device_counts, args.arch, args.image_size, args.batch_size, args.dtype
    ):
        config = dict(arch=arch, image_size=size, per_device_batch=batch, dtype=dtype, devices=devices)
        try:
            if batch == AUTO:
                config["per_device_batch"] = auto_per_device_batch(config, channels, num_classes, args.optimizer)
            setup = harness.TrainSetup(**config, channels=channels, num_classes=num_classes,
                                       optimizer=args.optimizer, normalize=normalize)
            record = measure(setup, args, data)
        except Exception as error:  # a configuration that cannot run (too small, out of memory) is reported
            record = {**config, "mode": "pipeline" if args.pipeline else "eval" if args.eval else "train",
                      "error": f"{type(error).__name__}: {error}".splitlines()[0][:300]}
        record.update(env, device_count=devices)
        records.append(record)
        on_record(record)
        print(progress_line(record), flush=True)
    return records


def auto_per_device_batch(config: dict, channels: int, num_classes: int, optimizer: str) -> int:
    """The per-device batch `jaxcnn train --batch-size auto` would train this configuration with."""
    run_config = harness.RunConfig.from_dict({"model": {"arch": config["arch"], "dtype": config["dtype"]},
                                              "data": {"batch_size": AUTO}, "optim": {"name": optimizer}})
    mesh = harness.make_mesh(jax.devices()[: config["devices"]])
    size = config["image_size"]
    _, choice = resolve_batch_size(run_config, num_classes=num_classes, input_shape=(size, size, channels), mesh=mesh)
    print(f"  {config['arch']} {size}px {config['dtype']} x{config['devices']}: {choice.message()}", flush=True)
    return choice.per_device


def progress_line(r: dict) -> str:
    head = f"  {r['arch']} {r['image_size']}px {r['dtype']} x{r['devices']} dev, batch {r['per_device_batch']}/dev"
    if "error" in r:
        return f"{head}: FAILED {r['error']}"
    return f"{head}: {r['images_per_s']:.1f} img/s, compile {r['compile_s']:.1f} s"


def run_subprocesses(args, argv: list[str]) -> list[dict]:
    """One subprocess per device count with that many fake CPU devices; their records joined.

    They append to one JSON-lines file, and each rewrites `--json` from it after every record."""
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
        for devices in args.devices:
            env = dict(os.environ, JAX_PLATFORMS="cpu")
            flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", ""))
            env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
            command = [sys.executable, __file__, *argv, "--devices", str(devices), "--records", out.name]  # later wins
            print(f"{devices} CPU device(s):", flush=True)
            subprocess.run(command, env=env, check=True)
        return read_records(out.name)


def read_records(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f.read().splitlines()]


def write_json(path: str, records: list[dict]) -> None:
    """`--json`: the records so far, with their scaling, written whole (never half a file)."""
    records = [dict(r) for r in records]
    add_scaling(records)
    temporary = pathlib.Path(f"{path}.partial")
    temporary.write_text(json.dumps(records, indent=1) + "\n")
    os.replace(temporary, path)


def add_scaling(records: list[dict]) -> None:
    """speedup = images/s over the 1-device images/s of the same configuration; efficiency = speedup / devices."""
    def key(r):
        return r["arch"], r["mode"], r["image_size"], r["per_device_batch"], r["dtype"]

    single = {key(r): r["images_per_s"] for r in records if r["devices"] == 1 and "error" not in r}
    for r in records:
        base = single.get(key(r))
        if base and "error" not in r:
            r["speedup"] = r["images_per_s"] / base
            r["efficiency"] = r["speedup"] / r["devices"]


def print_table(records: list[dict]) -> None:
    def fmt(value, spec, scale=1.0):
        return "" if value is None else format(value * scale, spec)

    pipeline = any(r["mode"] == "pipeline" for r in records)
    header = (f"{'arch':<13}{'px':>4} {'dtype':<9}{'dev':>3}{'b/dev':>6}{'global':>7}{'compile s':>10}"
              f"{'step ms':>9}{'img/s':>9}{'speedup':>8}{'eff %':>6}{'GFLOP/img':>10}{'TFLOP/s':>8}"
              f"{'MFU %':>6}{'XLA MiB':>8}{'peak MiB':>9}" + (f"{'bare img/s':>11}{'ratio':>6}" if pipeline else ""))
    print("\n" + header)
    for r in records:
        row = f"{r['arch']:<13}{r['image_size']:>4} {r['dtype']:<9}{r['devices']:>3}{r['per_device_batch']:>6}"
        if "error" in r:
            print(f"{row}  {r['error']}")
            continue
        print(
            f"{row}{r['global_batch']:>7}{r['compile_s']:>10.1f}{r['step_s'] * 1e3:>9.1f}{r['images_per_s']:>9.1f}"
            f"{fmt(r.get('speedup'), '.2f'):>8}{fmt(r.get('efficiency'), '.0f', 100):>6}"
            f"{fmt(r['flops_per_image'], '.3f', 1e-9):>10}{fmt(r['tflops_per_s'], '.3f'):>8}"
            f"{fmt(r['mfu'], '.1f', 100):>6}{fmt(r['xla_memory_bytes'], '.0f', 2**-20):>8}"
            f"{fmt(r['peak_memory_bytes'], '.0f', 2**-20):>9}"
            + (f"{fmt(r.get('step_images_per_s'), '.1f'):>11}{fmt(r.get('pipeline_ratio'), '.2f'):>6}"
               if pipeline else "")
        )
    r = next((r for r in records if "error" not in r), records[0] if records else None)
    if r:
        flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", r["xla_flags"]).strip()
        print(f"\njax {r['jax']}, jaxlib {r['jaxlib']}, {r['platform']} ({r['device_kind']}), "
              f"{r['host_cpus']} host CPUs; XLA_FLAGS={flags!r} (besides the device count)")


def comma_list(kind):
    return lambda text: [kind(x) for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", type=str, default="resnet20", help="comma list of models, or 'all'")
    p.add_argument("--batch-size", type=comma_list(int_or_auto), default=[32],
                   help="per-device batch sizes, or auto (as jaxcnn train --batch-size auto)")
    p.add_argument("--image-size", type=comma_list(int), default=[32], help="square input sizes")
    p.add_argument("--dtype", type=comma_list(str), default=["float32"], help="float32 and/or bfloat16")
    p.add_argument("--devices", type=comma_list(int), default=[1], help="device counts, e.g. 1,2,4")
    p.add_argument("--channels", type=int, default=3, help="input channels (synthetic data)")
    p.add_argument("--num-classes", type=int, default=10, help="classifier width (synthetic data)")
    p.add_argument("--optimizer", default=harness.DEFAULTS.optim.name, choices=["adam", "adamw", "sgd"])
    p.add_argument("--windows", type=int, default=5, help="timed windows; medians are reported")
    p.add_argument("--warmup", type=int, default=1, help="untimed windows after the first step")
    p.add_argument("--window-seconds", type=float, default=1.0, help="target length of a window")
    p.add_argument("--steps", type=int, default=None, help="steps per window (default: from --window-seconds)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--eval", action="store_true", help="time eval_step instead of train_step")
    mode.add_argument("--pipeline", nargs="?", const="host", choices=["host", "device"],
                      help="feed real data through the host Grain Loader or the device-resident DeviceLoader")
    p.add_argument("--data", default="demo", help="--pipeline: dataset name or folder (as scripts/train.py)")
    p.add_argument("--data-dir", default=None, help="--pipeline: where the dataset lies")
    p.add_argument("--workers", type=int, default=0, help="--pipeline: Loader worker processes")
    p.add_argument("--cache", action="store_true", help="--pipeline: keep decoded folder images in memory")
    p.add_argument("--json", help="write the records (one per configuration) to this JSON file, "
                                   "rewritten after every configuration")
    p.add_argument("--records", help=argparse.SUPPRESS)  # subprocess: append JSON lines here
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.arch = list_models() if args.arch == "all" else args.arch.split(",")
    unknown = sorted(set(args.arch) - set(list_models()) | set(args.dtype) - {"float32", "bfloat16"}
                     | {str(b) for b in args.batch_size if not (b == AUTO or isinstance(b, int) and b > 0)})
    if unknown:
        sys.exit(f"unknown --arch/--dtype/--batch-size {unknown}; models: {', '.join(list_models())}; "
                 "dtypes: float32, bfloat16; batch sizes: positive integers or auto")
    if args.records:  # a subprocess with its device count set: every record out as soon as it is measured
        def append(record: dict) -> None:
            with open(args.records, "a") as out:
                out.write(json.dumps(record) + "\n")
            if args.json:
                write_json(args.json, read_records(args.records))

        run_configs(args, args.devices, append)
        return
    if jax.default_backend() == "cpu":
        records = run_subprocesses(args, argv)
    else:
        visible = jax.device_count()
        too_many = [n for n in args.devices if n > visible]
        if too_many:
            sys.exit(f"--devices {too_many} exceed the {visible} visible {jax.default_backend()} devices")
        measured = []

        def keep(record: dict) -> None:
            measured.append(record)
            if args.json:
                write_json(args.json, measured)

        records = run_configs(args, args.devices, keep)
    add_scaling(records)
    print_table(records)
    if args.json:
        write_json(args.json, records)


if __name__ == "__main__":
    main()
