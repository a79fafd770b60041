"""The XLA:CPU rewrites of `cpu_conv.conv_general_dilated` (the `xla` backend, which runs where
jaxcnn's oneDNN extension does not): both paths of each, forced, give lax's convolution (values
and gradients), and each is chosen per platform when the step is lowered."""

import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.models import cpu_conv
from jaxcnn.models.cpu_conv import conv_general_dilated, conv_settings, cpu_batch_chunk

NUMBERS = ("NHWC", "HWIO", "NHWC")


@pytest.fixture(autouse=True)
def xla_backend():
    """Every test here traces XLA's convolution (tests/test_onednn_conv.py covers oneDNN's)."""
    with conv_settings(backend="xla"):
        yield


def operands(batch, size, cin, cout, kernel=3, seed=0):
    key_x, key_w = jax.random.split(jax.random.key(seed))
    return (jax.random.normal(key_x, (batch, size, size, cin)),
            jax.random.normal(key_w, (kernel, kernel, cin, cout)) / (kernel * np.sqrt(cin)))


def value_and_grads(x, w, strides, padding, **settings):
    """Output and (d/dx, d/dw) of a loss through the rewritten conv, traced under `settings`."""
    def conv(x, w):
        return conv_general_dilated(x, w, strides, padding, dimension_numbers=NUMBERS)

    def loss(x, w):
        return jnp.sum(jnp.sin(conv(x, w)))

    with conv_settings(**settings):  # settings are read at trace time: trace inside the block
        return jax.jit(conv)(x, w), jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w)


def assert_same(a, b, tol=1e-5):
    for mine, theirs in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(mine, theirs, rtol=tol, atol=tol)


@pytest.mark.parametrize("batch, chunk, stride, padding", [
    (10, 4, 1, 1),  # at most 4 images that divide 10: 5 slices of 2
    (12, 3, 2, 1),
    (8, 1, 2, 0),
])
def test_batch_slices_equal_one_call(batch, chunk, stride, padding):
    """The forward pass is one call; the kernel's gradient sums the slices' (within 1e-5)."""
    x, w = operands(batch, 9, 4, 6)
    args = ((stride, stride), ((padding, padding), (padding, padding)))
    sliced = value_and_grads(x, w, *args, batch_chunk=chunk)
    whole = value_and_grads(x, w, *args, batch_chunk=0)
    assert_same(sliced, whole)
    reference = jax.lax.conv_general_dilated(x, w, *args, dimension_numbers=NUMBERS)
    np.testing.assert_allclose(sliced[0], reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_string_padding_is_sliced_like_explicit_padding(padding):
    """flax passes "VALID"/"SAME" through (LeNet-5's convs): sliced, they equal lax's one call."""
    x, w = operands(8, 7, 3, 4, kernel=5)
    assert_same(value_and_grads(x, w, (1, 1), padding, batch_chunk=3),
                value_and_grads(x, w, (1, 1), padding, batch_chunk=0))


def test_forward_mode_and_partial_gradients_through_the_slices():
    """The custom JVP keeps jax.jvp working and computes no convolution for a zero tangent: the
    gradient in the input alone is the forward + input-gradient convolutions, in the kernel alone
    the forward + one kernel gradient per slice."""
    x, w = operands(12, 6, 3, 5)

    def conv(x, w):
        return conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NUMBERS)

    def loss(x, w):
        return jnp.sum(jnp.sin(conv(x, w)))

    def reference(x, w):
        return jnp.sum(jnp.sin(jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                                           dimension_numbers=NUMBERS)))

    with conv_settings(batch_chunk=4):
        tangent = jax.jvp(loss, (x, w), (x, w))[1]
        counts = {argnums: convolutions(jax.jit(jax.grad(loss, argnums)).trace(x, w)
                                        .lower(lowering_platforms=("cpu",)).as_text())
                  for argnums in (0, 1, (0, 1))}
    np.testing.assert_allclose(tangent, jax.jvp(reference, (x, w), (x, w))[1], rtol=1e-5)
    assert counts == {0: 2, 1: 1 + 3, (0, 1): 2 + 3}


@pytest.mark.parametrize("size, stride", [(1, 1), (2, 1), (2, 2), (3, 2)])
def test_small_map_matmul_equals_convolution(size, stride):
    """Both paths of maps smaller than the kernel (forced on and off) agree within 1e-5."""
    x, w = operands(3, size, 5, 7)
    args = ((stride, stride), ((1, 1), (1, 1)))
    assert_same(value_and_grads(x, w, *args, small_map=True, batch_chunk=0),
                value_and_grads(x, w, *args, small_map=False, batch_chunk=0))


def lowered(shape, kernel, platform, **settings):
    """StableHLO of the conv's forward + backward lowered for `platform` (no such device needed)."""
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    w = jax.ShapeDtypeStruct(kernel, jnp.float32)

    def loss(x, w):
        return jnp.sum(jnp.sin(conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NUMBERS)))

    with conv_settings(**settings):
        traced = jax.jit(jax.grad(loss, argnums=(0, 1))).trace(x, w)
    return traced.lower(lowering_platforms=(platform,)).as_text()


def convolutions(text: str) -> int:
    return len(re.findall(r"stablehlo\.convolution", text))


def test_rewrites_apply_on_cpu_only():
    """On CPU the kernel gradient is sliced (forward + input gradient + 3 slices) and a 2x2 map
    becomes a matmul; lowered for a GPU or TPU the same traced step keeps lax's single convolution."""
    big, small = (12, 8, 8, 4), (4, 2, 2, 8)
    assert convolutions(lowered(big, (3, 3, 4, 4), "cpu", batch_chunk=4)) == 5
    assert convolutions(lowered(small, (3, 3, 8, 8), "cpu", batch_chunk=0)) == 0
    for platform in ("cuda", "tpu"):
        assert convolutions(lowered(big, (3, 3, 4, 4), platform, batch_chunk=4)) == 3
        assert convolutions(lowered(small, (3, 3, 8, 8), platform, batch_chunk=0)) == 3
    assert convolutions(lowered(big, (3, 3, 4, 4), "cpu", batch_chunk=0)) == 3
    assert convolutions(lowered(small, (3, 3, 8, 8), "cpu", small_map=False, batch_chunk=0)) == 3


def test_auto_rule_follows_the_measured_grid():
    """Slices of 8 images; larger where the kernel is large against a slice's activations; one call
    for a batch of fewer than two slices or a kernel that outweighs the batch's activations."""
    assert cpu_batch_chunk((128, 32, 32, 16), (32, 32, 16), (3, 3, 16, 16)) == 8
    assert cpu_batch_chunk((128, 16, 16, 128), (16, 16, 128), (3, 3, 128, 128)) == 8
    assert cpu_batch_chunk((128, 8, 8, 256), (8, 8, 256), (3, 3, 256, 256)) == 16
    assert cpu_batch_chunk((128, 4, 4, 512), (4, 4, 512), (3, 3, 512, 512)) is None
    assert cpu_batch_chunk((8, 8, 8, 64), (8, 8, 64), (3, 3, 64, 64)) is None


@pytest.mark.parametrize("name, value", [("JAXCNN_CONV_BATCH_CHUNK", "sixteen"),
                                         ("JAXCNN_CONV_SMALL_MAP", "maybe"), ("JAXCNN_CPU_CONV", "mkl")])
def test_bad_environment_values_name_the_variable_and_choices(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=rf"{name}='{value}': expected (one of )?'?auto"):
        cpu_conv._env_settings()


def test_environment_values_are_read(monkeypatch):
    monkeypatch.setenv("JAXCNN_CONV_BATCH_CHUNK", "16")
    monkeypatch.setenv("JAXCNN_CONV_SMALL_MAP", "off")
    monkeypatch.setenv("JAXCNN_CPU_CONV", "xla")
    assert cpu_conv._env_settings() == cpu_conv.ConvSettings(batch_chunk=16, small_map=False, backend="xla")
    monkeypatch.setenv("JAXCNN_CONV_BATCH_CHUNK", "0")
    assert cpu_conv._env_settings().batch_chunk == 0


SHARDED = textwrap.dedent("""
    import re, jax, jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from jaxcnn.models.cpu_conv import conv_general_dilated, conv_settings
    mesh = Mesh(jax.devices(), ("data",))
    x = jax.device_put(jnp.ones((16, 8, 8, 4)), NamedSharding(mesh, P("data")))
    w = jax.device_put(jnp.ones((3, 3, 4, 4)), NamedSharding(mesh, P()))
    loss = lambda x, w: jnp.sum(jnp.sin(conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))))
    for chunk in (0, 4):
        with conv_settings(batch_chunk=chunk):
            text = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).compile().as_text()
        print(chunk, len(re.findall(r" convolution\\(", text)),
              sorted(set(re.findall(r"(all-gather|all-to-all|collective-permute|all-reduce)", text))))
""")


def test_slices_of_a_sharded_batch_move_no_images_between_devices():
    """Interleaved slices keep a batch sharded over 2 devices local: the only collective, with or
    without slices, is the all-reduce of the kernel's gradient (4 slices: 2 + 4 convolutions)."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               JAXCNN_CPU_CONV="xla")
    result = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[:2] == ["0 3 ['all-reduce']", "4 6 ['all-reduce']"]
