"""jaxcnn.models.layers: torch's output-size rules, pooling, BatchNorm, padding and init."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.models import googlenet, lenet
from jaxcnn.models.cifar_resnet import zero_pad_shortcut
from jaxcnn.models.layers import (BatchNorm, Window, adaptive_avg_pool, kaiming_normal_fan_out,
                                  max_pool, minimum_input_size, symmetric, torch_conv,
                                  torch_default_bias_init, torch_default_kernel_init)

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("window,size,expected", [
    (Window(7, 2, 3), 224, 112),
    (Window(3, 2, 0, True), 112, 56),
    (Window(3, 2, 0, True), 8, 4),
    (Window(3, 2, 0, False), 8, 3),
    (Window(2, 2, 0, True), 7, 4),
    (Window(3, 2, 0, True), 2, 1),
    (Window(3, 2, 0, True), 1, 0),
    (Window(2, 2, 1, True), 5, 3),     # a 4th window would start inside the right padding
    (Window(5), 4, 0),
])
def test_window_output_size_follows_torch(window, size, expected):
    assert window.output_size(size) == expected


def test_minimum_input_sizes():
    assert minimum_input_size([Window(2, 2)] * 5) == 32
    assert minimum_input_size(lenet.WINDOWS) == 16
    assert minimum_input_size(googlenet._WINDOWS) == 15


def reference_max_pool(x, kernel, stride, padding, ceil_mode):
    """Loops over torch's windows, clipped to the input (padding never wins a max)."""
    h, w = x.shape[1:3]
    window = Window(kernel, stride, padding, ceil_mode)
    out = np.empty((x.shape[0], window.output_size(h), window.output_size(w), x.shape[3]))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            r0, c0 = i * stride - padding, j * stride - padding
            patch = x[:, max(r0, 0):r0 + kernel, max(c0, 0):c0 + kernel]
            out[:, i, j] = patch.max(axis=(1, 2))
    return out


@pytest.mark.parametrize("shape,kernel,stride,padding,ceil_mode", [
    ((2, 7, 8, 3), 3, 2, 0, True), ((1, 9, 6, 2), 3, 2, 1, False),
    ((1, 5, 5, 1), 2, 2, 0, True), ((1, 6, 7, 2), 3, 1, 1, True),
])
def test_max_pool_matches_torch_windows(shape, kernel, stride, padding, ceil_mode):
    x = RNG.normal(size=shape).astype(np.float32)
    np.testing.assert_array_equal(max_pool(jnp.asarray(x), kernel, stride, padding, ceil_mode),
                                  reference_max_pool(x, kernel, stride, padding, ceil_mode))


@pytest.mark.parametrize("size,out", [(5, 7), (7, 7), (10, 7), (13, 7), (14, 4), (9, 4), (1, 7)])
def test_adaptive_avg_pool_uses_torch_bins(size, out):
    x = RNG.normal(size=(2, size, size + 3, 4)).astype(np.float32)
    expected = np.empty((2, out, out, 4))
    for i in range(out):
        for j in range(out):
            rows = slice(math.floor(i * size / out), math.ceil((i + 1) * size / out))
            cols = slice(math.floor(j * (size + 3) / out), math.ceil((j + 1) * (size + 3) / out))
            expected[:, i, j] = x[:, rows, cols].mean(axis=(1, 2))
    np.testing.assert_allclose(adaptive_avg_pool(jnp.asarray(x), (out, out)), expected,
                               rtol=1e-6, atol=1e-6)


def test_batchnorm_training_and_running_statistics_as_torch():
    x = RNG.normal(2.0, 3.0, size=(4, 3, 5, 6)).astype(np.float32)
    norm = BatchNorm(use_running_average=False)
    variables = norm.init(jax.random.key(0), x)
    y, updated = norm.apply(variables, x, mutable=["batch_stats"])
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)
    n = 4 * 3 * 5   # torch keeps the unbiased variance: 0.9 * 1 + 0.1 * var * n / (n - 1)
    stats = updated["batch_stats"]
    np.testing.assert_allclose(stats["mean"], 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * var * n / (n - 1), rtol=1e-5)

    eval_norm = BatchNorm(use_running_average=True)
    y = eval_norm.apply({"params": variables["params"], **updated}, x)
    expected = (x - stats["mean"]) / np.sqrt(stats["var"] + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_batchnorm_needs_two_values_per_channel_in_training():
    x = jnp.ones((1, 1, 1, 8))
    norm = BatchNorm(use_running_average=False)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        norm.init(jax.random.key(0), x)


def test_stride_two_padding_is_symmetric_like_torch():
    # 4x4 ones, 3x3 ones kernel, stride 2, padding 1 on every side: windows centred on rows and
    # columns 0 and 2 see 2 and 3 input rows -> [[4, 6], [6, 9]]. Flax 'SAME' gives [[9, 6], [6, 4]].
    class Conv(nn.Module):
        dtype = jnp.float32
        param_dtype = jnp.float32

        @nn.compact
        def __call__(self, x):
            conv = torch_conv(self, kernel_init=nn.initializers.ones)
            return conv(1, (3, 3), (2, 2), padding=symmetric(1))(x)

    y, _ = Conv().init_with_output(jax.random.key(0), jnp.ones((1, 4, 4, 1)))
    np.testing.assert_array_equal(y[0, :, :, 0], [[4, 6], [6, 9]])


def test_init_distributions():
    kernel = kaiming_normal_fan_out(jax.random.key(0), (3, 3, 64, 256))
    assert float(kernel.std()) == pytest.approx(math.sqrt(2 / (3 * 3 * 256)), rel=0.02)
    bound = 1 / math.sqrt(3 * 3 * 64)
    kernel = torch_default_kernel_init(jax.random.key(1), (3, 3, 64, 32))
    bias = torch_default_bias_init(3 * 3 * 64)(jax.random.key(2), (4096,))
    for values in (kernel, bias):
        assert float(jnp.abs(values).max()) == pytest.approx(bound, rel=0.01)
        assert float(jnp.abs(values).max()) <= bound


def test_zero_pad_shortcut_subsamples_and_appends_zero_channels():
    x = jnp.arange(2 * 5 * 5 * 3, dtype=jnp.float32).reshape(2, 5, 5, 3)
    y = zero_pad_shortcut(x, 8, 2, conv=None, norm=None)
    assert y.shape == (2, 3, 3, 8)
    np.testing.assert_array_equal(y[..., :3], x[:, ::2, ::2])
    assert not jnp.any(y[..., 3:])



@pytest.mark.parametrize("size, stride", [(1, 1), (1, 2), (2, 1), (2, 2), (3, 2)])
def test_small_map_convolution_equals_xla_convolution(size, stride):
    """The matmul path for maps smaller than the kernel computes exactly lax's convolution."""
    from jaxcnn.models.cpu_conv import conv_general_dilated

    key_x, key_w = jax.random.split(jax.random.key(0))
    x = jax.random.normal(key_x, (2, size, size, 5))
    w = jax.random.normal(key_w, (3, 3, 5, 7))
    args = ((stride, stride), ((1, 1), (1, 1)))
    numbers = ("NHWC", "HWIO", "NHWC")

    def reference(x, w):
        return jax.lax.conv_general_dilated(x, w, *args, dimension_numbers=numbers)

    def ours(x, w):
        return conv_general_dilated(x, w, *args, dimension_numbers=numbers)

    np.testing.assert_allclose(ours(x, w), reference(x, w), rtol=1e-5, atol=1e-5)
    grads = [jax.grad(lambda x, w, f=f: jnp.sum(f(x, w) ** 2), argnums=(0, 1))(x, w) for f in (ours, reference)]
    for mine, theirs in zip(*grads):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-4)
