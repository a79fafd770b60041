"""jaxcnn's train step against the same model, batch and optimizer in PyTorch, timed alternately.

    PYTHONPATH=/tmp/torch_bench python benchmarks/compare_torch.py --arch resnet20,vgg16 \\
        --image-size 32 --batch-size 32,128 [--xla] [--rounds 5] [--json out.json]

torch is optional (never a jaxcnn dependency): install it anywhere on PYTHONPATH, e.g.
`pip install --target /tmp/torch_bench torch==2.13.0`. The PyTorch twins are in
jaxcnn/weights/torch_models.py (the definitions the parity tests check against jaxcnn).

Per architecture, three contenders train on the same synthetic batch with the CLI's optimizer
(Adam, lr 1e-4 by default): jaxcnn's jitted `train_step` (harness.TrainSetup, 1 device),
PyTorch eager in NCHW, and PyTorch eager in channels_last. On a CPU "jaxcnn" runs the convolutions
`JAXCNN_CPU_CONV` chooses (oneDNN by default, `environment.cpu_convolutions` in the JSON says which);
`--xla` adds "jaxcnn xla", compiled with XLA's convolutions (`conv_settings(backend="xla")`). Each round runs one window of each (A, B, C, A, B,
C...: the machine's load drifts, so contenders alternate), each after a `--settle-seconds` pause
(PyTorch's OpenMP workers spin on after its window and slowed the next contender by ~15 %); the
table shows the median images/s and jaxcnn / PyTorch ratios (above 1: jaxcnn is faster). `--device cuda` runs
PyTorch on the GPU (synchronized at the end of each window) against jaxcnn on JAX's GPU backend.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax

import harness
from jaxcnn.models.cpu_conv import conv_settings

try:
    import torch
    from torch.nn import functional as F
except ImportError:
    torch = None


def torch_trainer(arch: str, batch: dict, *, image_size: int, channels: int, num_classes: int,
                  optimizer: str, learning_rate: float, channels_last: bool, device: str = "cpu"):
    """A closure running `steps` PyTorch training steps on `batch` (the Adam/SGD update included)."""
    from jaxcnn.weights.torch_models import torch_model

    model = torch_model(arch, num_classes, image_size, channels).train()
    x = torch.from_numpy(batch["image"].transpose(0, 3, 1, 2).copy())
    y = torch.from_numpy(batch["label"].astype("int64"))
    model, x, y = model.to(device), x.to(device), y.to(device)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=0.9)
    else:
        opt = (torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam)(model.parameters(), lr=learning_rate)

    def run(steps: int) -> None:
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            logits = model(x)
            F.cross_entropy(logits[0] if isinstance(logits, tuple) else logits, y).backward()
            opt.step()
        if device == "cuda":
            torch.cuda.synchronize()  # CUDA runs asynchronously: a window ends when its steps have

    return run


def jax_trainer(setup: harness.TrainSetup, compiled):
    """A closure running `steps` of the compiled step: the executable compiled under the
    contender's `conv_settings`, never a retrace of `setup.train_step` outside them."""
    state = setup.state

    def run(steps: int) -> None:
        nonlocal state
        for _ in range(steps):
            state, metrics = compiled(state, setup.batch)
        jax.block_until_ready((state, metrics))

    return run


def compare(arch: str, batch_size: int, args) -> dict:
    def trainer_under(**settings):  # the settings are read when the step is traced: compile here
        with conv_settings(**settings):
            setup = harness.TrainSetup(arch, args.image_size, batch_size, channels=3,
                                       num_classes=args.num_classes, optimizer=args.optimizer)
            return setup, jax_trainer(setup, setup.compile()[0])

    setup, trainer = trainer_under()
    host_batch = harness.normalized_on_host(  # PyTorch on the CPU trains on what its host normalized
        harness.synthetic_batch(batch_size, args.image_size, 3, args.num_classes, setup.seed), setup.normalize)
    contenders = {"jaxcnn": trainer}
    if args.xla:
        contenders["jaxcnn xla"] = trainer_under(backend="xla")[1]
    for name, channels_last in (("torch eager", False), ("torch channels_last", True)):
        contenders[name] = torch_trainer(arch, host_batch, image_size=args.image_size, channels=3,
                                         num_classes=args.num_classes, optimizer=args.optimizer,
                                         learning_rate=setup.learning_rate, channels_last=channels_last,
                                         device=args.device)
    steps = {}
    for name, run in contenders.items():
        run(1)  # compile / warm the allocators
        steps[name] = max(1, round(args.window_seconds / harness.seconds(run, 1)))
        run(steps[name])
    rates = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, run in contenders.items():
            time.sleep(args.settle_seconds)
            rates[name].append(steps[name] * batch_size / harness.seconds(run, steps[name]))
    medians = {name: harness.median(r) for name, r in rates.items()}
    return {
        "arch": arch, "image_size": args.image_size, "batch_size": batch_size, "optimizer": args.optimizer,
        "images_per_s": medians, "window_images_per_s": rates, "steps_per_window": steps,
        "ratio_vs_torch_eager": medians["jaxcnn"] / medians["torch eager"],
        "ratio_vs_torch_channels_last": medians["jaxcnn"] / medians["torch channels_last"],
    } | ({"xla_ratio_vs_torch_channels_last": medians["jaxcnn xla"] / medians["torch channels_last"],
          "jaxcnn_over_xla": medians["jaxcnn"] / medians["jaxcnn xla"]} if args.xla else {})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", default="resnet20,vgg16", help="comma list of models")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", default="32", help="comma list (1 device)")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--optimizer", default=harness.DEFAULTS.optim.name, choices=["adam", "adamw", "sgd"])
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians are reported")
    p.add_argument("--window-seconds", type=float, default=1.0, help="target length of one window")
    p.add_argument("--settle-seconds", type=float, default=0.5,
                   help="idle pause before each window, so that torch's OpenMP workers, which keep "
                        "spinning after its window, do not slow the next contender")
    p.add_argument("--xla", action="store_true",
                   help="also time jaxcnn on XLA's convolutions (JAXCNN_CPU_CONV=xla), alternating")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="PyTorch's device; jaxcnn runs on JAX's default backend (the GPU where jax[cuda12] is installed)")
    p.add_argument("--json", help="write the results to this JSON file")
    args = p.parse_args()
    if args.device == "cuda" and jax.default_backend() != "gpu":
        sys.exit("--device cuda compares on a GPU, but JAX's backend is " + jax.default_backend()
                 + ": install jax[cuda12] (pip install -e '.[cuda12]')")
    if torch is None:
        sys.exit("torch is not importable: `pip install --target DIR torch==2.13.0` and put DIR on PYTHONPATH "
                 "(torch is never a jaxcnn dependency)")
    env = harness.environment() | {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    print(f"jax {env['jax']} ({env['device_kind']}, {env['cpu_model']}), torch {env['torch']} "
          f"({env['torch_threads']} threads), {env['host_cpus']} CPUs; {args.image_size} px, {args.optimizer}; "
          f"CPU convolutions: {env.get('cpu_convolutions', 'n/a')}", flush=True)
    results = []
    for arch in args.arch.split(","):
        for batch_size in map(int, args.batch_size.split(",")):
            results.append(compare(arch, batch_size, args) | {"environment": env})
            r = results[-1]
            print(f"{arch:<13} {batch_size:>4} " + "  ".join(f"{name} {rate:7.1f}" for name, rate in r["images_per_s"].items())
                  + f" img/s | jaxcnn/eager {r['ratio_vs_torch_eager']:.2f}x"
                  f"  jaxcnn/channels_last {r['ratio_vs_torch_channels_last']:.2f}x"
                  + (f" (xla {r['xla_ratio_vs_torch_channels_last']:.2f}x; jaxcnn/xla "
                     f"{r['jaxcnn_over_xla']:.2f}x)" if args.xla else ""), flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
