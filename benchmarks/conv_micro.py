"""Forward + backward of single 3x3 convolutions in plain JAX, to compare jax/jaxlib versions.

    python benchmarks/conv_micro.py [--json out.json]
    for v in 0.4.38 0.10.2; do /tmp/venv_jax$v/bin/python benchmarks/conv_micro.py; done

Needs only jax (no flax, no jaxcnn), so it runs in a throwaway venv of any jax version. The
shapes are ResNet-20's three stages and VGG's last stage at 32 px (a 2x2 map, where XLA:CPU's
algebraic simplifier swaps the convolution's operands), batch 32, NHWC, float32. Prints one
JSON line: milliseconds per forward + backward (median of 5 timings of 5 calls) per shape.
"""

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

SHAPES = {  # name: (batch, size, in channels, out channels)
    "32px-16ch": (32, 32, 16, 16),
    "16px-32ch": (32, 16, 32, 32),
    "8px-64ch": (32, 8, 64, 64),
    "4px-512ch": (32, 4, 512, 512),
    "2px-512ch": (32, 2, 512, 512),
}


def conv_loss(x, w):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(jax.nn.relu(y) ** 2)


def time_ms(fn, *args, calls: int = 5, repeats: int = 5) -> float:
    jax.block_until_ready(fn(*args))
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)
        timings.append((time.perf_counter() - start) / calls * 1e3)
    return statistics.median(timings)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="append the result line to this file")
    args = p.parse_args()
    grad = jax.jit(jax.grad(conv_loss, argnums=(0, 1)))
    result = {"jax": jax.__version__}
    for name, (n, size, cin, cout) in SHAPES.items():
        x = jax.random.normal(jax.random.PRNGKey(0), (n, size, size, cin))
        w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, cin, cout)) * 0.05
        result[name] = round(time_ms(grad, x, w), 2)
    print(json.dumps(result), flush=True)
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
