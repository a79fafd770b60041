"""XLA:CPU's and jaxcnn's oneDNN convolution kernels against PyTorch's, one convolution at a time (CPU).

    python benchmarks/conv_kernels.py [--shapes 128x32x16x16,32x8x64x64,128x32x3x6x5] [--rounds 5]
        [--json out.json]

For each shape (batch x size x in channels x out channels: a 3x3 stride-1 "same" convolution;
with a fifth number K: a KxK "valid" one, as LeNet-5's; NHWC, float32) it times, alternating in one process (A, B, C, A, B, C...), medians of `--rounds`:

- jaxcnn's three kernels, each jitted alone on NHWC arrays: the forward pass, the input gradient
  and the kernel gradient (both as one call, the latter also as jaxcnn computes it on CPU, in the
  batch slices of `cpu_conv.cpu_batch_chunk`), and which XLA:CPU implementation runs each: read
  from the compiled HLO, either a `__ynn_fusion` (YNNPACK) or XLA's own convolution thunk (Eigen's
  spatial convolution);
- the same three through jaxcnn's oneDNN extension (`jaxcnn.onednn.conv2d`, where it is available);
- torch's channels_last convolution (`nn.Conv2d`, no bias): the forward pass under `no_grad`, and
  forward + backward (its `convolution_backward` computes both gradients in one call).

The last columns, forward + input gradient + kernel gradient over torch's forward + backward, for
XLA's kernels (with jaxcnn's batch slices) and for oneDNN's, and XLA's over oneDNN's, are the
kernels' share of the gap that `compare_torch.py` measures for whole steps.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics

import jax
import jax.numpy as jnp

from conv_chunk import time_ms
from jaxcnn.models import cpu_conv

# ResNet-20/56's three stages, VGG-16's and LeNet-5's two at 32 px, at batch 32 and 128.
DEFAULT_SHAPES = ("32x32x16x16,128x32x16x16,32x16x32x32,128x16x32x32,32x8x64x64,128x8x64x64,"
                  "128x32x64x64,128x16x128x128,128x8x256x256,128x4x512x512,128x32x3x6x5,128x14x6x16x5")
NUMBERS = ("NHWC", "HWIO", "NHWC")


def padding(w) -> str:
    return "SAME" if w.shape[0] == 3 else "VALID"


def lax_conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), padding(w), dimension_numbers=NUMBERS)


def jaxcnn_xla_conv(x, w):
    with cpu_conv.conv_settings(backend="xla"):  # read when traced: XLA's convolution, jaxcnn's slices
        return cpu_conv.conv_general_dilated(x, w, (1, 1), padding(w), dimension_numbers=NUMBERS)


def onednn_kernels(x, w, dy):
    """{name: (jitted fn, operands)} of the three oneDNN calls, or {} where the extension is unavailable."""
    from jaxcnn.onednn.conv import conv2d
    from jaxcnn.onednn.library import extension

    if extension("auto") is None:
        return {}
    pad = w.shape[0] // 2 if padding(w) == "SAME" else 0
    geometry = (1, 1, pad, pad, pad, pad)
    conv = lambda x, w: conv2d(x, w, geometry)  # noqa: E731
    return {"forward, oneDNN": (jax.jit(conv), (x, w)),
            "input grad, oneDNN": (jax.jit(lambda dy, w: jax.vjp(lambda a: conv(a, w), x)[1](dy)[0]), (dy, w)),
            "kernel grad, oneDNN": (jax.jit(lambda x, dy: jax.vjp(lambda v: conv(x, v), w)[1](dy)[0]), (x, dy))}


def jax_kernels(x, w):
    """{name: (jitted fn, operands)} for the forward, input-gradient and kernel-gradient convolutions."""
    y = lax_conv(x, w)
    dy = jnp.ones_like(y)

    def input_grad(dy, w):
        return jax.vjp(lambda a: lax_conv(a, w), x)[1](dy)[0]

    def kernel_grad(conv):
        return lambda x, dy: jax.vjp(lambda v: conv(x, v), w)[1](dy)[0]

    return {"forward": (jax.jit(lax_conv), (x, w)), "input grad": (jax.jit(input_grad), (dy, w)),
            "kernel grad": (jax.jit(kernel_grad(lax_conv)), (x, dy)),
            "kernel grad, jaxcnn": (jax.jit(kernel_grad(jaxcnn_xla_conv)), (x, dy)), **onednn_kernels(x, w, dy)}


def implementation(fn, operands) -> str:
    """Which implementation runs the compiled function's convolutions: XLA:CPU's or oneDNN's."""
    text = fn.lower(*operands).compile().as_text()
    if "jaxcnn_conv_" in text:
        return "oneDNN"
    bodies = dict(re.findall(r"^(%[\w.\-]+) \(.*?\{\n(.*?)\n\}", text, re.S | re.M))
    ynn = {name for name, body in bodies.items() if " convolution(" in body
           and re.search(rf"ynn_fusion[\w.\-]* = .*calls={re.escape(name)}\b", text)}
    thunks = len(re.findall(r" convolution\(", text)) - sum(bodies[n].count(" convolution(") for n in ynn)
    kinds = (["YNNPACK"] if ynn else []) + (["Eigen"] if thunks else [])
    return "+".join(kinds) or "none"


def torch_kernels(n, size, cin, cout, k):
    """{name: fn} for torch's channels_last forward and forward + backward, or {} without torch."""
    try:
        import torch
    except ImportError:
        return {}
    conv = torch.nn.Conv2d(cin, cout, k, padding=1 if k == 3 else 0, bias=False).to(
        memory_format=torch.channels_last)
    x = torch.randn(n, cin, size, size).contiguous(memory_format=torch.channels_last).requires_grad_()
    out = size if k == 3 else size - k + 1
    dy = torch.ones(n, cout, out, out).contiguous(memory_format=torch.channels_last)

    def forward():
        with torch.no_grad():
            conv(x)

    def forward_backward():
        conv(x).backward(dy)

    return {"torch forward": forward, "torch fwd+bwd": forward_backward}


def measure(shape, rounds: int) -> dict:
    n, size, cin, cout, k = (*shape, 3)[:5]
    x = jax.random.normal(jax.random.key(0), (n, size, size, cin))
    w = jax.random.normal(jax.random.key(1), (k, k, cin, cout)) * 0.05
    kernels = jax_kernels(x, w)
    calls = {name: (lambda fn=fn, ops=ops: fn(*ops)) for name, (fn, ops) in kernels.items()}
    calls |= torch_kernels(n, size, cin, cout, k)
    repeats = {}
    for name, fn in calls.items():
        fn()
        repeats[name] = max(1, round(100 / time_ms(fn, (), 1)))  # ~0.1 s windows
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            times[name].append(time_ms(fn, (), repeats[name]))
    result = {"shape": "x".join(map(str, shape)), "ms": {k: round(statistics.median(v), 3) for k, v in times.items()},
              "implementation": {name: implementation(fn, ops) for name, (fn, ops) in kernels.items()}}
    ms = result["ms"]
    xla = ms["forward"] + ms["input grad"] + ms["kernel grad, jaxcnn"]
    onednn = ms["forward, oneDNN"] + ms["input grad, oneDNN"] + ms["kernel grad, oneDNN"] if "forward, oneDNN" in ms else None
    if onednn:
        result["xla / onednn time"] = round(xla / onednn, 2)
    if "torch fwd+bwd" in ms:
        result["xla / torch time"] = round(xla / ms["torch fwd+bwd"], 2)
        if onednn:
            result["onednn / torch time"] = round(onednn / ms["torch fwd+bwd"], 2)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default=DEFAULT_SHAPES, help="comma list of BxSIZExCINxCOUT")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", help="append one JSON line per shape to this file")
    args = p.parse_args()
    print(f"jax {jax.__version__}; ms per call, medians of {args.rounds} alternating rounds")
    for text in args.shapes.split(","):
        result = measure(tuple(int(v) for v in text.split("x")), args.rounds)
        ms, impl = result["ms"], result["implementation"]
        cells = [f"{k} {v:.2f}" + (f" ({impl[k]})" if k in impl else "") for k, v in ms.items()]
        ratios = "  ".join(f"{k} {v:.2f}x" for k, v in result.items() if k.endswith(" time"))
        print(f"{text:>16}  " + "  ".join(cells) + (f"  | {ratios}" if ratios else ""), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
