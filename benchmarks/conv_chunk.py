"""One convolution's three XLA:CPU kernels, in one call against static batch slices, alternating.

    python benchmarks/conv_chunk.py [--shapes 128x32x16x16,128x8x64x64] [--chunks 64,32,16,8]
        [--rounds 5] [--json out.json]

For each shape (batch x size x in channels x out channels, a 3x3 stride-1 "same" convolution,
NHWC, float32) it times, per slice size, the three convolutions a training step runs:
forward (x, w -> y), input gradient (dy, w -> dx) and weight gradient (x, dy -> dw), each jitted
alone. All variants of one shape run in one process, alternating (A, B, C, A, B, C...: the
machine is shared and its load drifts); the table shows median milliseconds and, per kernel,
one call / best slices. This is the grid `jaxcnn.models.cpu_conv.cpu_batch_chunk`'s rule is fit to.
"""

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

# ResNet-20/56 stages (32, 16, 8 px), VGG-16's at 32 px; batch 32 and 128.
DEFAULT_SHAPES = ("32x32x16x16,128x32x16x16,32x16x32x32,128x16x32x32,32x8x64x64,128x8x64x64,"
                  "32x16x128x128,128x8x256x256,32x4x512x512,128x4x512x512")
DIMS = ("NHWC", "HWIO", "NHWC")


def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=DIMS)


def transpose(linear, cotangent, image_shape, like=None):
    """The transpose of the linear map `linear` applied to `cotangent` (what backprop computes)."""
    primal = like if like is not None else jax.ShapeDtypeStruct(
        (cotangent.shape[0], *image_shape), cotangent.dtype)
    return jax.linear_transpose(linear, primal)(cotangent)[0]


def kernels(x, w, chunk):
    """The jitted forward, input-gradient and weight-gradient convolutions for one slice size."""
    def forward(x, w):
        return jnp.concatenate([conv(x[i:i + chunk], w) for i in range(0, x.shape[0], chunk)])

    def input_grad(dy, w):
        return jnp.concatenate([transpose(lambda a: conv(a, w), dy[i:i + chunk], x.shape[1:])
                                for i in range(0, dy.shape[0], chunk)])

    def weight_grad(x, dy):
        grads = [transpose(lambda v: conv(x[i:i + chunk], v), dy[i:i + chunk], None, w)
                 for i in range(0, x.shape[0], chunk)]
        return sum(grads[1:], grads[0])

    return {"forward": jax.jit(forward), "input grad": jax.jit(input_grad), "weight grad": jax.jit(weight_grad)}


def time_ms(fn, args, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / calls * 1e3


def measure(shape, chunks, rounds: int) -> dict:
    n, size, cin, cout = shape
    x = jax.random.normal(jax.random.PRNGKey(0), (n, size, size, cin))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, cin, cout)) * 0.05
    dy = jax.random.normal(jax.random.PRNGKey(2), (n, size, size, cout))
    operands = {"forward": (x, w), "input grad": (dy, w), "weight grad": (x, dy)}
    variants = {c: kernels(x, w, c) for c in [n] + [c for c in chunks if c < n]}
    calls = {}
    for chunk, fns in variants.items():
        for kernel, fn in fns.items():
            jax.block_until_ready(fn(*operands[kernel]))
            calls[chunk, kernel] = max(1, round(0.1 / (time_ms(fn, operands[kernel], 1) / 1e3)))
    timings = {key: [] for key in calls}
    for _ in range(rounds):
        for (chunk, kernel), count in calls.items():
            timings[chunk, kernel].append(time_ms(variants[chunk][kernel], operands[kernel], count))
    return {f"{kernel}@{'one' if chunk == n else chunk}": round(statistics.median(t), 2)
            for (chunk, kernel), t in timings.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default=DEFAULT_SHAPES, help="comma list of BxSIZExCINxCOUT")
    p.add_argument("--chunks", default="64,32,16,8", help="slice sizes to try besides one call")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", help="append one JSON line per shape to this file")
    args = p.parse_args()
    chunks = [int(c) for c in args.chunks.split(",")]
    for text in args.shapes.split(","):
        shape = tuple(int(v) for v in text.split("x"))
        result = measure(shape, chunks, args.rounds)
        gains = {}
        for kernel in ("forward", "input grad", "weight grad"):
            mine = {k.split("@")[1]: v for k, v in result.items() if k.startswith(kernel)}
            best = min(mine, key=mine.get)
            gains[kernel] = f"{mine['one']:.1f} ms -> {mine[best]:.1f} ms @{best} ({mine['one'] / mine[best]:.2f}x)"
        print(f"{text:>16}  " + "  |  ".join(f"{k}: {g}" for k, g in gains.items()), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps({"shape": text, "ms": result}) + "\n")


if __name__ == "__main__":
    main()
