"""`--batch-size auto`: its estimate against the measured XLA buffer size, per architecture.

For each architecture the train step is compiled (not run) on abstract state, the per-device
batch is chosen as `jaxcnn train --batch-size auto` chooses it (linear fit of the compiled
step's memory at batches 8 and 16, checked by compiling the chosen batch), and the fit's estimate
is printed beside XLA's memory analysis of the step compiled at that batch. On a GPU the budget
is the device's; give `--budget-gib` to see the fit at a fixed budget (as on a CPU, which reports
no device memory), and `--cap` to lift the CPU cap of 128 per device.

    python benchmarks/batch_size.py --arch resnet20,resnet18,vgg16 --image-size 32 --budget-gib 4 --cap 4096
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from jaxcnn.builder import resolve_batch_size  # noqa: E402
from jaxcnn.run_config import RunConfig  # noqa: E402
from jaxcnn.train import make_mesh  # noqa: E402
from jaxcnn.train.batch_size import memory_budget  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet20,resnet18,vgg16", help="comma list of models")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd"])
    p.add_argument("--budget-gib", type=float, default=None, help="memory budget per device (default: the device's)")
    p.add_argument("--cap", type=int, default=None, help="largest per-device batch (default: 128 on CPU, 1024 else)")
    args = p.parse_args(argv)

    mesh = make_mesh()
    budget = (int(args.budget_gib * 2**30), f"--budget-gib {args.budget_gib}") if args.budget_gib else None
    budget = budget or memory_budget(mesh.devices.flat[0], mesh.local_mesh.size)
    print(f"{mesh.size} {jax.default_backend()} device(s), budget {budget[0] / 2**30:.2f} GiB per device ({budget[1]})")
    print(f"{'arch':>10} {'batch/dev':>9} {'estimate GiB':>12} {'measured GiB':>12} {'error':>7} {'seconds':>7}  limit")
    for arch in args.arch.split(","):
        config = RunConfig.from_dict({"model": {"arch": arch}, "data": {"batch_size": "auto"},
                                      "optim": {"name": args.optimizer}})
        start = time.perf_counter()
        _, choice = resolve_batch_size(
            config, num_classes=args.num_classes, input_shape=(args.image_size, args.image_size, args.channels),
            mesh=mesh, budget=budget, cap=args.cap,
        )
        error = choice.estimate_bytes / choice.measured_bytes - 1
        print(f"{arch:>10} {choice.per_device:>9} {choice.estimate_bytes / 2**30:>12.3f} "
              f"{choice.measured_bytes / 2**30:>12.3f} {error:>+7.1%} {time.perf_counter() - start:>7.1f}  "
              f"{choice.limit or 'memory'}", flush=True)


if __name__ == "__main__":
    main()
