"""GoogLeNet (Inception v1) as torchvision's: BatchNorm (eps 1e-3) after every conv.

As torchvision, the "5x5" branch uses a 3x3 conv, pools use ceil_mode, and the classifier has
dropout 0.2 before it (the paper uses 0.4; `dropout_rate` sets it). With `aux_logits=True` the
two auxiliary heads (after 4a and 4d) exist and, in training only, their float32 logits are
sown into the 'aux_logits' collection as 'aux1' / 'aux2'; the returned value is always the
main logits. Request them with `mutable=['batch_stats', 'aux_logits']`.

Init as torchvision: conv and Dense weights N(0, 0.01) (torchvision draws a normal truncated at
±2, i.e. ±200 standard deviations, so plain normal is the same distribution), Dense biases
torch's default U(±1/sqrt(fan_in)), BN scale 1 / bias 0.
"""

from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.models.layers import (ConvBNReLU, ModuleDef, Window, adaptive_avg_pool, check_input,
                                  global_avg_pool, max_pool, torch_conv, torch_default_bias_init,
                                  torch_norm)

_weight_init = nn.initializers.normal(0.01)
# conv1 7x7/2, then three 3x3/2 and one 2x2/2 ceil-mode max-pools -> needs >= 15x15.
_WINDOWS = (Window(7, 2, 3), Window(3, 2, 0, True), Window(3, 2, 0, True),
            Window(3, 2, 0, True), Window(2, 2, 0, True))


class Inception(nn.Module):
    """Four parallel branches concatenated on channels: 1x1 | 1x1-3x3 | 1x1-3x3 | pool-1x1."""

    ch1x1: int
    ch3x3red: int
    ch3x3: int
    ch5x5red: int
    ch5x5: int
    pool_proj: int
    basic: ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        basic = self.basic
        branch1 = basic(self.ch1x1, 1, name="branch1")(x)
        branch2 = basic(self.ch3x3red, 1, name="branch2_reduce")(x)
        branch2 = basic(self.ch3x3, 3, padding=1, name="branch2")(branch2)
        branch3 = basic(self.ch5x5red, 1, name="branch3_reduce")(x)
        branch3 = basic(self.ch5x5, 3, padding=1, name="branch3")(branch3)
        pooled = max_pool(x, 3, 1, padding=1, ceil_mode=True)
        branch4 = basic(self.pool_proj, 1, name="branch4")(pooled)
        return jnp.concatenate([branch1, branch2, branch3, branch4], axis=-1)


class InceptionAux(nn.Module):
    """Auxiliary head: adaptive avg-pool 4x4 -> 1x1 conv 128 -> fc 1024 -> dropout -> fc."""

    num_classes: int
    basic: ModuleDef
    dense: ModuleDef
    dropout_rate: float = 0.7

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = self.basic(128, 1, name="conv")(adaptive_avg_pool(x, (4, 4)))
        x = x.reshape(x.shape[0], -1)
        x = self.dense(1024, bias_init=torch_default_bias_init(x.shape[-1]), name="fc1")(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(x))
        bias_init = torch_default_bias_init(x.shape[-1])
        x = self.dense(self.num_classes, bias_init=bias_init, name="fc2")(x)
        return x.astype(jnp.float32)


class GoogLeNet(nn.Module):
    """Inception v1; returns the main logits, sows the auxiliary ones (see module docstring)."""

    num_classes: int
    aux_logits: bool = False
    dropout_rate: float = 0.2
    aux_dropout_rate: float = 0.7
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        check_input(self, x, _WINDOWS)
        basic = partial(ConvBNReLU, conv=torch_conv(self, kernel_init=_weight_init),
                        norm=torch_norm(self, train, epsilon=1e-3))
        dense = partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype,
                        kernel_init=_weight_init)
        inception = partial(Inception, basic=basic)
        aux_head = partial(InceptionAux, self.num_classes, basic=basic, dense=dense,
                           dropout_rate=self.aux_dropout_rate)
        # Aux heads run in training; at init too, so that their variables exist.
        with_aux = self.aux_logits and (train or self.is_initializing())

        x = basic(64, 7, stride=2, padding=3, name="conv1")(x)
        x = max_pool(x, 3, 2, ceil_mode=True)
        x = basic(64, 1, name="conv2")(x)
        x = basic(192, 3, padding=1, name="conv3")(x)
        x = max_pool(x, 3, 2, ceil_mode=True)
        x = inception(64, 96, 128, 16, 32, 32, name="inception3a")(x)
        x = inception(128, 128, 192, 32, 96, 64, name="inception3b")(x)
        x = max_pool(x, 3, 2, ceil_mode=True)
        x = inception(192, 96, 208, 16, 48, 64, name="inception4a")(x)
        if with_aux:
            self._sow_aux("aux1", aux_head(name="aux_head1")(x, train), train)
        x = inception(160, 112, 224, 24, 64, 64, name="inception4b")(x)
        x = inception(128, 128, 256, 24, 64, 64, name="inception4c")(x)
        x = inception(112, 144, 288, 32, 64, 64, name="inception4d")(x)
        if with_aux:
            self._sow_aux("aux2", aux_head(name="aux_head2")(x, train), train)
        x = inception(256, 160, 320, 32, 128, 128, name="inception4e")(x)
        x = max_pool(x, 2, 2, ceil_mode=True)
        x = inception(256, 160, 320, 32, 128, 128, name="inception5a")(x)
        x = inception(384, 192, 384, 48, 128, 128, name="inception5b")(x)

        x = nn.Dropout(self.dropout_rate, deterministic=not train)(global_avg_pool(x))
        x = dense(self.num_classes, bias_init=torch_default_bias_init(x.shape[-1]), name="fc")(x)
        return x.astype(jnp.float32)

    def _sow_aux(self, name: str, logits: jax.Array, train: bool) -> None:
        # Never at init: a sown value would land in the initial variables and be appended to.
        if train and not self.is_initializing():
            self.sow("aux_logits", name, logits)
