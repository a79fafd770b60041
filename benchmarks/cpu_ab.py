"""The real train step under two or more `cpu_conv.conv_settings`, alternating in one process (CPU).

    python benchmarks/cpu_ab.py --arch resnet20,lenet5 --batch-size 16,32,64,128,256 \\
        [--variants before:batch_chunk=0,after:batch_chunk=auto] [--rounds 5] [--json out.json]

Per (arch, batch), one `harness.TrainSetup` per variant is built and compiled with that
variant's settings (they are read when the step is traced), then their windows alternate
(A, B, A, B...: the machine is shared and its load drifts). Prints median images/s per variant,
each variant's ratio to the first (of medians, and of the fastest windows: on a shared machine the
fastest window is the one least disturbed), and the number of convolutions in each compiled step (the
proof that the variants really differ).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re

import jax

import harness
from jaxcnn.models.cpu_conv import conv_settings


def parse_variants(text: str) -> dict[str, dict]:
    """'name:key=value+key=value,name2:...' -> {name: {key: value}} for `conv_settings`."""
    variants = {}
    for item in text.split(","):
        name, _, settings = item.partition(":")
        variants[name] = dict(pair.split("=", 1) for pair in settings.split("+") if pair)
    return variants


def build(arch: str, batch: int, settings: dict, args):
    """A compiled setup under `settings` and a closure running `steps` train steps on it."""
    with conv_settings(**settings):
        setup = harness.TrainSetup(arch, args.image_size, batch, optimizer=args.optimizer)
        compiled, _ = setup.compile()
    state = setup.state

    def run(steps: int) -> None:
        nonlocal state
        for _ in range(steps):
            state, metrics = compiled(state, setup.batch)
        jax.block_until_ready((state, metrics))

    return run, len(re.findall(r" convolution\(", compiled.as_text()))


def compare(arch: str, batch: int, variants: dict, args) -> dict:
    runs, convolutions = {}, {}
    for name, settings in variants.items():
        runs[name], convolutions[name] = build(arch, batch, settings, args)
        runs[name](1)
    first = next(iter(runs.values()))
    steps = max(1, round(args.window_seconds / harness.seconds(first, 1)))
    rates = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            rates[name].append(steps * batch / harness.seconds(run, steps))
    medians = {name: harness.median(r) for name, r in rates.items()}
    base, best = next(iter(medians.values())), max(next(iter(rates.values())))
    return {"arch": arch, "batch_size": batch, "images_per_s": medians, "window_images_per_s": rates,
            "ratio_to_first": {name: m / base for name, m in medians.items()},
            "best_window_ratio_to_first": {name: max(r) / best for name, r in rates.items()},
            "convolutions": convolutions, "steps_per_window": steps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", default="resnet20")
    p.add_argument("--batch-size", default="32,128", help="comma list (1 device)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--optimizer", default=harness.DEFAULTS.optim.name, choices=["adam", "adamw", "sgd"])
    p.add_argument("--variants", default="before:batch_chunk=0,after:batch_chunk=auto",
                   help="name:setting=value+setting=value,... (settings of cpu_conv.conv_settings)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians are reported")
    p.add_argument("--window-seconds", type=float, default=1.0)
    p.add_argument("--json", help="write the results to this JSON file")
    args = p.parse_args()
    variants = parse_variants(args.variants)
    env = harness.environment()
    print(f"jax {env['jax']} ({env['device_kind']}), {env['host_cpus']} CPUs, {args.image_size} px, "
          f"{args.optimizer}; variants {variants}", flush=True)
    results = []
    for arch in args.arch.split(","):
        for batch in (int(b) for b in args.batch_size.split(",")):
            r = compare(arch, batch, variants, args) | {"environment": env}
            results.append(r)
            print(f"{arch:<10} batch {batch:>4}  " + "  ".join(
                f"{name} {rate:8.1f} img/s ({r['ratio_to_first'][name]:.2f}x, best windows "
                f"{r['best_window_ratio_to_first'][name]:.2f}x, {r['convolutions'][name]} convs)"
                for name, rate in r["images_per_s"].items()), flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
