"""Where one CPU train step's time goes, by kind of op, for jaxcnn and (where installed) PyTorch.

    PYTHONPATH=.:/tmp/torch_ref python benchmarks/profile_step.py --arch resnet20 --batch-size 128

XLA:CPU in jaxlib 0.10.2 emits no per-thunk profiler events (`jax.profiler.trace`, with or without
`--xla_cpu_enable_xprof_traceme`, records only `ThunkExecutor::Execute`), so jaxcnn's step is
attributed by timing its parts alone, jitted, on the model's own shapes (recorded while tracing
the model): every convolution's forward, input gradient and weight gradient (with the batch
slices the step uses), every BatchNorm's forward + backward, and the optimizer update over the
real parameter tree; "rest" is the whole step minus those (ReLU, residual adds, pooling, loss,
the fusions XLA builds across ops). PyTorch's step is attributed by `torch.profiler` (self CPU
time per aten op, grouped the same way; its convolution backward computes both gradients in
one op). Timings are medians of repeated calls.

The parts are separate jitted calls, each paying its own dispatch (~0.1-1 ms on a loaded CPU), and
miss the fusions XLA makes across them (BatchNorm with ReLU, ...): the split is meaningful for steps
of tens of milliseconds and more (ResNets, VGG), not for LeNet-5's ~10 ms, where the parts add up to
more than the step ("rest" goes negative).
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import harness
from conv_micro import time_ms as median_ms
from jaxcnn.models import layers
from jaxcnn.train import prepare_inputs


def recorded_layers(setup: harness.TrainSetup, state):
    """(conv calls, BatchNorm input shapes) of one training forward pass of the model."""
    convs, norms = [], []
    original = layers.conv_general_dilated

    def record_conv(lhs, rhs, *args, **kwargs):
        convs.append((lhs.shape, rhs.shape, args, kwargs))
        return original(lhs, rhs, *args, **kwargs)

    def record_norm(next_fun, args, kwargs, context):
        if isinstance(context.module, layers.BatchNorm) and context.method_name == "__call__":
            norms.append(args[0].shape)
        return next_fun(*args, **kwargs)

    variables = {"params": state.params, "batch_stats": state.batch_stats}
    layers.conv_general_dilated = record_conv
    try:
        with nn.intercept_methods(record_norm):
            jax.eval_shape(lambda v, x: setup.training.model.apply(
                v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)}),
                variables, prepare_inputs(setup.batch, setup.normalize)["image"])
    finally:
        layers.conv_general_dilated = original
    return convs, norms


def conv_parts(convs) -> dict[str, float]:
    """ms of every recorded convolution's forward, input gradient and weight gradient, summed.

    The first convolution reads the image, which needs no gradient: the step never computes its
    input gradient, so neither is it timed here."""
    totals = collections.Counter()
    for index, (lhs_shape, rhs_shape, args, kwargs) in enumerate(convs):
        x, w = jnp.ones(lhs_shape), jnp.full(rhs_shape, 0.01)

        def conv(x, w, args=args, kwargs=kwargs):
            return layers.conv_general_dilated(x, w, *args, **kwargs)

        dy = jnp.ones(jax.eval_shape(conv, x, w).shape)
        totals["conv forward"] += median_ms(jax.jit(conv), x, w)
        if index:
            totals["conv input grad"] += median_ms(jax.jit(lambda dy, w: jax.vjp(lambda a: conv(a, w), x)[1](dy)), dy, w)
        totals["conv weight grad"] += median_ms(jax.jit(lambda x, dy: jax.vjp(lambda v: conv(x, v), w)[1](dy)), x, dy)
    return dict(totals)


def norm_ms(norms) -> float:
    """ms of every recorded BatchNorm's training forward + backward."""
    total = 0.0
    for shape in norms:
        module = layers.BatchNorm(use_running_average=False)
        variables = module.init(jax.random.key(0), jnp.ones(shape))

        def loss(params, x, variables=variables, module=module):
            y, _ = module.apply({**variables, "params": params}, x, mutable=["batch_stats"])
            return jnp.vdot(y, x)

        x = jax.random.normal(jax.random.key(1), shape)
        total += median_ms(jax.jit(jax.grad(loss, argnums=(0, 1))), variables["params"], x)
    return total


def optimizer_ms(setup: harness.TrainSetup, params) -> float:
    tx = setup.training.optimizer
    opt_state = tx.init(params)

    def update(grads, opt_state, params):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return median_ms(jax.jit(update), params, opt_state, params)


def jax_profile(arch: str, batch: int, image_size: int) -> dict[str, float]:
    setup = harness.TrainSetup(arch, image_size, batch)
    compiled, _ = setup.compile()
    state = setup.state

    def step(state):
        return compiled(state, setup.batch)[0]

    state = step(state)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        state = jax.block_until_ready(step(state))
        times.append((time.perf_counter() - start) * 1e3)
    convs, norms = recorded_layers(setup, state)
    parts = conv_parts(convs) | {"BatchNorm fwd+bwd": norm_ms(norms), "optimizer update": optimizer_ms(setup, state.params)}
    whole = statistics.median(times)
    return parts | {"rest (ReLU, adds, pooling, loss, ...)": whole - sum(parts.values()), "whole step": whole}


TORCH_GROUPS = (  # (group, substrings of aten op names), matched in order
    ("conv forward", ("convolution", "mkldnn_conv", "conv2d")),
    ("conv backward (input + weight grad)", ("convolution_backward",)),
    ("BatchNorm fwd+bwd", ("batch_norm",)),
    ("optimizer update", ("_foreach", "adam", "optimizer")),
)


def torch_profile(arch: str, batch: int, image_size: int) -> dict[str, float]:
    import torch

    from compare_torch import torch_trainer

    host = harness.synthetic_batch(batch, image_size, 3, 10)
    host = harness.normalized_on_host(host, harness.synthetic_stats(3))
    run = torch_trainer(arch, host, image_size=image_size, channels=3, num_classes=10, optimizer="adam",
                        learning_rate=1e-4, channels_last=True)
    run(2)
    steps = 5
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        run(steps)
        whole = (time.perf_counter() - start) * 1e3 / steps
    groups = collections.Counter()
    for event in prof.key_averages():
        name = event.key.lower()
        group = next((g for g, keys in TORCH_GROUPS if any(k in name for k in keys)), "rest (ReLU, adds, pooling, loss, ...)")
        if "backward" in name and group == "conv forward":
            group = "conv backward (input + weight grad)"
        groups[group] += event.self_cpu_time_total / 1e3 / steps
    scale = whole / max(1e-9, sum(groups.values()))  # self times of 2 threads' ops -> wall time shares
    return {g: v * scale for g, v in groups.items()} | {"whole step": whole}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet20")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--image-size", type=int, default=32)
    args = p.parse_args()
    rows = {"jaxcnn": jax_profile(args.arch, args.batch_size, args.image_size)}
    try:
        rows["torch channels_last"] = torch_profile(args.arch, args.batch_size, args.image_size)
    except ImportError:
        print("(torch not importable: jaxcnn only)")
    for name, parts in rows.items():
        whole = parts["whole step"]
        print(f"\n{name} {args.arch} batch {args.batch_size}: {whole:.1f} ms per step")
        for part, ms in parts.items():
            if part != "whole step":
                print(f"  {part:<40} {ms:8.1f} ms  {100 * ms / whole:5.1f} %")


if __name__ == "__main__":
    main()
