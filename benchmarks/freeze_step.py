"""Train-step time with the backbone frozen (`--freeze-backbone-epochs`) against the whole
network training, for one configuration, timed alternately (A, B, A, B, ...) in one process.

    python benchmarks/freeze_step.py --arch vgg16 --image-size 224 --batch 2 --rounds 3 --steps 2

Both steps come from `jaxcnn.build_training` exactly as `jaxcnn train` builds them; the frozen
one differentiates the head only, so it runs the backbone forward and no backward through it.
"""

from __future__ import annotations

import argparse
import json
import time

import jax

from harness import environment, median, synthetic_batch, synthetic_stats
from jaxcnn.builder import build_training
from jaxcnn.run_config import RunConfig
from jaxcnn.train import make_mesh, shard_batch


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="vgg16")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=2, help="global batch, on 1 device")
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two steps")
    parser.add_argument("--steps", type=int, default=2, help="steps per timed window")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    mesh = make_mesh(jax.devices()[:1])
    config = RunConfig.from_dict({"model": {"arch": args.arch}, "data": {"batch_size": args.batch},
                                  "finetune": {"freeze_backbone_epochs": 1}})
    training = build_training(config, num_classes=args.classes, steps_per_epoch=1000, mesh=mesh,
                              input_shape=(args.image_size, args.image_size, 3), normalize=synthetic_stats(3))
    batch = shard_batch(synthetic_batch(args.batch, args.image_size, 3, args.classes, config.seed), mesh)
    state, compiled, compile_seconds = training.state, {}, {}
    for name, step in (("frozen", training.steps.frozen_train_step), ("full", training.train_step)):
        start = time.perf_counter()
        compiled[name] = step.lower(state, batch).compile()
        compile_seconds[name] = time.perf_counter() - start
        state, _ = compiled[name](state, batch)  # warm-up
    jax.block_until_ready(state)

    per_step = {name: [] for name in compiled}
    for _ in range(args.rounds):
        for name, step in compiled.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                state, metrics = step(state, batch)
            jax.block_until_ready((state, metrics))
            per_step[name].append((time.perf_counter() - start) / args.steps)
    results = {"config": vars(args), "compile_seconds": compile_seconds, "seconds_per_step": per_step,
               "median_seconds_per_step": {name: median(times) for name, times in per_step.items()},
               "environment": environment()}
    medians = results["median_seconds_per_step"]
    print(f"{args.arch} {args.image_size} px, batch {args.batch}: frozen {medians['frozen']:.3f} s/step, "
          f"full {medians['full']:.3f} s/step ({medians['frozen'] / medians['full']:.2f}x); "
          f"compile {compile_seconds['frozen']:.1f} s / {compile_seconds['full']:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
