"""jaxcnn's oneDNN convolutions (`jaxcnn.onednn`, the CPU's convolution wherever the extension builds):
lax's values and both gradients on every convolution of the zoo, a batch sharded over devices
convolved where it lies, no call for a gradient nothing reads, the CPU's choice only, never in an
export, and XLA's convolution, said in one line, where the extension cannot be built."""

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.models import create_model, layers
from jaxcnn.models.cpu_conv import conv_general_dilated, conv_settings
from jaxcnn.models.registry import list_models, usual_data

pytestmark = pytest.mark.skipif(not (sys.platform == "linux" and os.uname().machine == "x86_64"),
                                reason="the extension is built for Linux x86-64 only")
NUMBERS = ("NHWC", "HWIO", "NHWC")
TARGET = re.compile(r'(?:custom_call_target="|custom_call @)(jaxcnn_conv_\w+)')


def zoo_convolutions() -> dict[tuple, list[str]]:
    """{(input NHWC at batch 2, kernel HWIO, strides, padding): [archs]} of every convolution the zoo
    runs at its usual input size, recorded while tracing each model's shapes."""
    seen: dict[tuple, list[str]] = {}

    def record(arch):
        def conv(lhs, rhs, strides, padding, *args, **kwargs):
            if isinstance(padding, str):
                padding = jax.lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
            key = ((2, *lhs.shape[1:]), tuple(rhs.shape), tuple(strides), tuple(map(tuple, padding)))
            seen.setdefault(key, []).append(arch)
            return jax.lax.conv_general_dilated(lhs, rhs, strides, padding, *args, **kwargs)
        return conv

    for arch in list_models():
        classes, size, channels = usual_data(arch)
        model = create_model(arch, num_classes=classes)
        original = layers.conv_general_dilated
        layers.conv_general_dilated = record(arch)
        try:
            jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                           jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32))
        finally:
            layers.conv_general_dilated = original
    return seen


def relative_error(mine, theirs) -> float:
    """|mine - theirs| / |theirs| in the Frobenius norm (the two sum float32 products in different
    orders: a kernel gradient of 2x224x224 terms differs by up to 1.2e-5 of its largest value)."""
    mine, theirs = np.asarray(mine, np.float64), np.asarray(theirs, np.float64)
    return float(np.linalg.norm(mine - theirs) / np.linalg.norm(theirs))


def value_and_grads(backend, x, w, strides, padding, cotangent):
    with conv_settings(backend=backend):
        def conv(x, w):
            return conv_general_dilated(x, w, strides, padding, dimension_numbers=NUMBERS)
        y, pullback = jax.vjp(jax.jit(conv), x, w)
        return (y, *jax.jit(pullback)(cotangent))


ZOO = zoo_convolutions()
# One of each kind for the default run (the whole zoo, 90+ shapes, takes ~100 s: `-m slow`): LeNet's
# 5x5 layers, ResNet-20's stem and a 3x3/2, an 8x8 map, the 7x7/2 stem, a 1x1/2 shortcut, 512 channels on 7x7.
KINDS = [((2, 32, 32, 3), (5, 5, 3, 6), (1, 1), ((0, 0), (0, 0))),
         ((2, 14, 14, 6), (5, 5, 6, 16), (1, 1), ((0, 0), (0, 0))),
         ((2, 32, 32, 3), (3, 3, 3, 16), (1, 1), ((1, 1), (1, 1))),
         ((2, 32, 32, 16), (3, 3, 16, 32), (2, 2), ((1, 1), (1, 1))),
         ((2, 8, 8, 64), (3, 3, 64, 64), (1, 1), ((1, 1), (1, 1))),
         ((2, 224, 224, 3), (7, 7, 3, 64), (2, 2), ((3, 3), (3, 3))),
         ((2, 56, 56, 64), (1, 1, 64, 128), (2, 2), ((0, 0), (0, 0))),
         ((2, 7, 7, 512), (3, 3, 512, 512), (1, 1), ((1, 1), (1, 1)))]


def shape_id(shapes) -> str:
    (_, size, _, cin), (k, _, _, cout), (stride, _), _ = shapes
    return f"{size}x{cin}-k{k}s{stride}-{cout}"


@pytest.mark.parametrize("shapes", [pytest.param(s, marks=() if s in KINDS else pytest.mark.slow) for s in sorted(ZOO)],
                         ids=shape_id)
def test_every_zoo_convolution_matches_lax(shapes):
    """Output, input gradient and kernel gradient within 1e-5 (relative) of lax's."""
    x_shape, w_shape, strides, padding = shapes
    kx, kw, ky = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, x_shape)
    w = jax.random.normal(kw, w_shape) / np.sqrt(np.prod(w_shape[:3]))
    out = jax.eval_shape(lambda x, w: jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NUMBERS), x, w)
    cotangent = jax.random.normal(ky, out.shape)
    ours = value_and_grads("onednn", x, w, strides, padding, cotangent)
    lax = value_and_grads("xla", x, w, strides, padding, cotangent)
    for name, mine, theirs in zip(("output", "input gradient", "kernel gradient"), ours, lax):
        assert relative_error(mine, theirs) <= 1e-5, (name, ZOO[shapes][0])


def compiled_targets(fn, *args) -> list[str]:
    return TARGET.findall(jax.jit(fn).lower(*args).compile().as_text())


def test_gradients_nothing_reads_are_not_computed():
    """A frozen kernel gets no kernel-gradient call, the image no input-gradient call (XLA drops an
    unused FFI call as it drops an unused convolution)."""
    x, w1, w2 = jnp.ones((4, 8, 8, 3)), jnp.ones((3, 3, 3, 8)) / 27, jnp.ones((3, 3, 8, 8)) / 72

    def loss(x, w1, w2):
        with conv_settings(backend="onednn"):
            h = conv_general_dilated(x, w1, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NUMBERS)
            return jnp.sum(conv_general_dilated(h, w2, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NUMBERS) ** 2)

    both = compiled_targets(jax.grad(loss, argnums=(1, 2)), x, w1, w2)
    assert sorted(both) == sorted(["jaxcnn_conv_forward"] * 2 + ["jaxcnn_conv_backward_weights"] * 2
                                  + ["jaxcnn_conv_backward_data"])  # no gradient for the image
    head_only = compiled_targets(jax.grad(loss, argnums=2), x, w1, w2)
    assert sorted(head_only) == ["jaxcnn_conv_backward_weights", "jaxcnn_conv_forward", "jaxcnn_conv_forward"]


def lowered_text(platform: str, backend: str, batch=4) -> str:
    x, w = jax.ShapeDtypeStruct((batch, 8, 8, 4), jnp.float32), jax.ShapeDtypeStruct((3, 3, 4, 4), jnp.float32)

    def loss(x, w):
        return jnp.sum(jnp.sin(conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NUMBERS)))

    with conv_settings(backend=backend):
        traced = jax.jit(jax.grad(loss, argnums=(0, 1))).trace(x, w)
    return traced.lower(lowering_platforms=(platform,)).as_text()


def test_onednn_is_the_cpus_choice_only():
    """Lowered for the CPU the step calls oneDNN three times; for a GPU or TPU it keeps lax's three
    convolutions; the `xla` backend keeps them on the CPU too."""
    cpu = lowered_text("cpu", "onednn")
    assert len(TARGET.findall(cpu)) == 3 and "stablehlo.convolution" not in cpu
    for platform in ("cuda", "tpu"):
        text = lowered_text(platform, "onednn")
        assert not TARGET.findall(text) and text.count("stablehlo.convolution") == 3
    assert not TARGET.findall(lowered_text("cpu", "xla"))


def test_exported_models_hold_no_oneDNN_call(tmp_path):
    """`jaxcnn export` (fixed or symbolic batch) writes XLA's convolutions only, so the artifact runs
    where jaxcnn and its extension are absent."""
    import shutil

    import jaxcnn
    from jaxcnn.inference.export import export_model

    run = tmp_path / "run"  # a copy: loading a run may write beside it
    shutil.copytree(pathlib.Path(__file__).parent / "fixtures" / "run-lenet5-demo", run)
    trained = jaxcnn.load_run(run)
    for batch in (None, 2):
        export_model(trained, tmp_path / f"b{batch}", batch_size=batch, platforms=("cpu",))
        exported = jax.export.deserialize((tmp_path / f"b{batch}" / "model.jaxexport").read_bytes())
        assert "jaxcnn_conv" not in exported.mlir_module() and "stablehlo.convolution" in exported.mlir_module()


SHARDED = textwrap.dedent("""
    import re, jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from jaxcnn.models.cpu_conv import conv_general_dilated, conv_settings
    mesh = Mesh(jax.devices(), ("data",))
    kx, kw = jax.random.split(jax.random.key(0))
    x, w = jax.random.normal(kx, (16, 8, 8, 4)), jax.random.normal(kw, (3, 3, 4, 8)) / 6
    loss = lambda x, w: jnp.sum(jnp.sin(conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)),
                                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))))
    grads = {}
    for backend in ("onednn", "xla"):
        with conv_settings(backend=backend):
            step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
            xs = jax.device_put(x, NamedSharding(mesh, P("data")))
            ws = jax.device_put(w, NamedSharding(mesh, P()))
            text = step.lower(xs, ws).compile().as_text()
            grads[backend] = step(xs, ws)
            grads[backend + "-1"] = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, w)
        print(backend, sorted(set(re.findall(r"(all-gather|all-to-all|collective-permute|all-reduce)", text))),
              grads[backend][1][0].sharding.spec)
    error = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
                for a, b in zip(jax.tree.leaves(grads["onednn"]), jax.tree.leaves(grads["xla-1"])))
    print("error", error < 1e-5)
""")


def test_a_sharded_batch_is_convolved_where_it_lies():
    """Over 4 devices each convolves its own images: no all-gather, one all-reduce (the kernel's
    gradient), the input gradient stays sharded, and values equal 1 device's XLA convolution."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == ["onednn ['all-reduce'] P('data',)",
                                          "xla ['all-reduce'] P('data',)", "error True"]


def test_bfloat16_runs_on_onednn_only_where_the_cpu_has_it():
    """bfloat16 convolutions call oneDNN where oneDNN implements them here (AVX-512 BF16 / AMX),
    else XLA's; float32 always calls oneDNN. Values as lax's at bfloat16's precision."""
    from jaxcnn.onednn.library import extension

    supported = extension("onednn").bfloat16
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 16), jnp.bfloat16)
    w = (jax.random.normal(jax.random.key(1), (3, 3, 16, 16)) / 12).astype(jnp.bfloat16)

    def conv(x, w):
        with conv_settings(backend="onednn"):
            return conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NUMBERS)

    assert len(compiled_targets(conv, x, w)) == (1 if supported else 0)
    assert len(compiled_targets(conv, x.astype(jnp.float32), w.astype(jnp.float32))) == 1
    reference = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NUMBERS)
    assert relative_error(jax.jit(conv)(x, w).astype(jnp.float32), reference.astype(jnp.float32)) < 2e-2


FALLBACK_RUN = ["-m", "jaxcnn", "train", "--arch", "lenet5", "--data", "demo", "--epochs", "1",
                "--batch-size", "64"]


@pytest.mark.parametrize("case", ["no compiler", "JAXCNN_CPU_CONV=xla", "JAXCNN_CPU_CONV=onednn, no compiler"])
def test_without_the_extension_training_runs_on_xla_and_says_so(case, tmp_path):
    """Where the extension cannot be built (here: no compiler, empty cache) `auto` trains on XLA's
    convolution and says why in one line, also in train.log; `xla` is taken as asked; `onednn`
    refuses in one line (exit 2)."""
    env = dict(os.environ, JAXCNN_CACHE_DIR=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
    env.pop("JAXCNN_CPU_CONV", None)
    if "no compiler" in case:
        env["CXX"] = "/nonexistent/g++"
    if "=" in case:
        env["JAXCNN_CPU_CONV"] = case.split("=")[1].split(",")[0]
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, *FALLBACK_RUN, "--out", str(out)], capture_output=True, text=True,
                            env=env, timeout=600, cwd=tmp_path)
    said = [line for line in (result.stdout + result.stderr).splitlines() if "convolutions" in line.lower()]
    if case.startswith("JAXCNN_CPU_CONV=onednn"):
        assert result.returncode == 2, result.stderr[-2000:]
        assert said == ["error: JAXCNN_CPU_CONV=onednn: the oneDNN convolutions are unavailable: "
                        "no C++ compiler (/nonexistent/g++) on PATH"]
        return
    assert result.returncode == 0, result.stderr[-2000:]
    expected = ("xla (JAXCNN_CPU_CONV=xla)" if case == "JAXCNN_CPU_CONV=xla"
                else "xla (oneDNN unavailable: no C++ compiler (/nonexistent/g++) on PATH)")
    assert said == [f"CPU convolutions: {expected}"]
    assert f"CPU convolutions: {expected}" in (out / "train.log").read_text()
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.so"))


def test_vmap_and_per_example_gradients_equal_lax():
    """Under `jax.vmap`: a mapped batch of images (folded into one oneDNN call), mapped kernels,
    and per-example gradients give lax's values."""
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (3, 2, 8, 8, 4))
    w, kernels = jax.random.normal(keys[1], (3, 3, 4, 4)) / 6, jax.random.normal(keys[2], (3, 3, 3, 4, 4)) / 6

    def results(backend):
        def conv(x, w):
            return conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=NUMBERS)

        grads = jax.grad(lambda x, w: jnp.sum(jnp.sin(conv(x, w))), argnums=(0, 1))
        with conv_settings(backend=backend):
            return (jax.jit(jax.vmap(conv, (0, None)))(x, w), jax.jit(jax.vmap(conv))(x, kernels),
                    jax.jit(jax.vmap(grads, (0, None)))(x, w), jax.jit(jax.vmap(grads))(x, kernels))

    with conv_settings(backend="onednn"):
        folded = jax.jit(jax.vmap(lambda x: conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                                                 dimension_numbers=NUMBERS))).lower(x).as_text()
    assert TARGET.findall(folded) == ["jaxcnn_conv_forward"]
    for mine, theirs in zip(jax.tree.leaves(results("onednn")), jax.tree.leaves(results("xla"))):
        assert relative_error(mine, theirs) <= 1e-5
