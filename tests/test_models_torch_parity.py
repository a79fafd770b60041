"""Numerical parity with PyTorch: torch weights loaded into the Flax models give the same logits
and the same BatchNorm running statistics, in train and eval mode.

Optional: skipped unless torch is importable (it is never a jaxcnn dependency), e.g.
`pip install --target /tmp/torch_ref torch==2.13.0` then `PYTHONPATH=/tmp/torch_ref pytest ...`.
The torch references (benchmarks/torch_models.py) follow torchvision's and the tutorials'
definitions. Weights are matched layer by layer in call order.
"""

from functools import partial

import jax
import numpy as np
import pytest

from jaxcnn.models import create_model
from jaxcnn.models.resnet import BasicBlock, Bottleneck, ResNet
from jaxcnn.models.vgg import VGG
from jaxcnn.report import summarize

torch = pytest.importorskip("torch")
tnn = torch.nn

FLAX_KINDS = ("Conv", "Dense", "BatchNorm")
TORCH_KINDS = (tnn.Conv2d, tnn.Linear, tnn.BatchNorm1d, tnn.BatchNorm2d)


# The torch references (torchvision's and the tutorials' definitions) live beside the benchmark
# that times them against jaxcnn.
from benchmarks.torch_models import TorchGoogLeNet, TorchLeNet, torch_resnet, torch_vgg  # noqa: E402


# ----------------------------------------------------------------- weight transfer
def torch_layers_in_call_order(model, x):
    order, hooks = [], []
    for module in model.modules():
        if isinstance(module, TORCH_KINDS):
            hooks.append(module.register_forward_hook(lambda m, i, o: order.append(m)))
    model.eval()
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return order


def load_torch_weights(flax_model, torch_model, x, flatten_from=()):
    """Flax variables holding the torch model's weights; `flatten_from` maps the name of each
    Dense fed by a flatten to its (H, W, C) input, since torch flattens C, H, W."""
    rows = [r for r in summarize(flax_model, x.shape[1:]).rows if r.kind in FLAX_KINDS]
    layers = torch_layers_in_call_order(torch_model, torch.from_numpy(x.transpose(0, 3, 1, 2)))
    assert len(rows) == len(layers)
    variables = {"params": {}, "batch_stats": {}}

    def put(collection, path, **leaves):
        node = variables[collection]
        for key in path:
            node = node.setdefault(key, {})
        node.update({k: v.detach().numpy().copy() for k, v in leaves.items()})   # no aliasing

    for row, layer in zip(rows, layers):
        path = row.name.split("/")
        if row.kind == "Conv":
            assert isinstance(layer, tnn.Conv2d)
            bias = {} if layer.bias is None else {"bias": layer.bias}
            put("params", path, kernel=layer.weight.permute(2, 3, 1, 0), **bias)
        elif row.kind == "Dense":
            assert isinstance(layer, tnn.Linear)
            weight = layer.weight
            if row.name in dict(flatten_from):
                h, w, c = dict(flatten_from)[row.name]
                weight = weight.reshape(-1, c, h, w).permute(0, 2, 3, 1).reshape(weight.shape[0], -1)
            put("params", path, kernel=weight.T, bias=layer.bias)
        else:
            assert isinstance(layer, (tnn.BatchNorm1d, tnn.BatchNorm2d))
            with torch.no_grad():    # non-trivial running statistics, to test eval mode
                layer.running_mean.uniform_(-0.5, 0.5)
                layer.running_var.uniform_(0.5, 2.0)
                layer.weight.uniform_(0.5, 1.5)
                layer.bias.uniform_(-0.5, 0.5)
            put("params", path, scale=layer.weight, bias=layer.bias)
            put("batch_stats", path, mean=layer.running_mean, var=layer.running_var)
    return variables


def assert_parity(flax_model, torch_model, input_shape, flatten_from=(), aux=False):
    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(4, *input_shape)).astype(np.float32)
    variables = load_torch_weights(flax_model, torch_model, x, flatten_from)
    x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2))
    close = partial(np.testing.assert_allclose, rtol=2e-4, atol=2e-4)

    torch_model.eval()
    with torch.no_grad():
        expected = torch_model(x_torch)
    logits = jax.jit(partial(flax_model.apply, train=False))(variables, x)
    close(logits, (expected[0] if aux else expected).numpy())

    torch_model.train()
    with torch.no_grad():
        expected = torch_model(x_torch)
    apply = partial(flax_model.apply, train=True, mutable=["batch_stats", "aux_logits"],
                    rngs={"dropout": jax.random.key(0)})
    logits, state = jax.jit(apply)(variables, x)
    if aux:
        expected, expected_aux = expected
        for name, value in zip(("aux1", "aux2"), expected_aux):
            close(state["aux_logits"][name][0], value.numpy())
    close(logits, expected.numpy())
    rows = [r for r in summarize(flax_model, input_shape).rows if r.kind == "BatchNorm"]
    norms = [m for m in torch_layers_in_call_order(torch_model, x_torch[:1] * 0)
             if isinstance(m, (tnn.BatchNorm1d, tnn.BatchNorm2d))]
    for row, norm in zip(rows, norms, strict=True):
        stats = state["batch_stats"]
        for key in row.name.split("/"):
            stats = stats[key]
        close(stats["mean"], norm.running_mean.numpy())
        close(stats["var"], norm.running_var.numpy())


# ----------------------------------------------------------------- the checks
@pytest.mark.parametrize("input_shape", [(32, 32, 3), (28, 28, 1)])
def test_lenet_parity(input_shape):
    side = ((input_shape[0] - 4) // 2 - 4) // 2
    assert_parity(create_model("lenet5", 10), TorchLeNet(input_shape[2], 16 * side * side, 10),
                  input_shape, flatten_from={"fc1": (side, side, 16)})


def test_resnet20_parity():
    torch_model = torch_resnet((3, 3, 3), (16, 32, 64), False, "cifar", 10, option_a=True)
    assert_parity(create_model("resnet20", 10), torch_model, (32, 32, 3))


@pytest.mark.parametrize("block_cls,size", [(BasicBlock, (45, 45, 3)), (Bottleneck, (64, 48, 3))])
def test_imagenet_resnet_parity(block_cls, size):
    model = ResNet(stage_sizes=(1, 1, 1, 1), block_cls=block_cls, num_classes=6)
    torch_model = torch_resnet((1, 1, 1, 1), (64, 128, 256, 512), block_cls is Bottleneck,
                               "imagenet", 6)
    assert_parity(model, torch_model, size)


def test_vgg11_gap_head_parity():
    assert_parity(create_model("vgg11", 3), torch_vgg(create_model("vgg11", 3).stages, 3, "gap"),
                  (48, 64, 3))


def test_vgg_classic_head_adaptive_pool_parity():
    stages = ((8,), (16,))     # 5x7 feature map -> overlapping 7x7 adaptive bins
    model = VGG(stages=stages, num_classes=5, head="classic", dropout_rate=0.0)
    assert_parity(model, torch_vgg(stages, 5, "classic"), (20, 28, 3),
                  flatten_from={"fc1": (7, 7, 16)})


@pytest.mark.slow
def test_googlenet_parity_with_aux_heads():
    model = create_model("googlenet", 5, aux_logits=True, dropout_rate=0.0, aux_dropout_rate=0.0)
    flatten = {"aux_head1/fc1": (4, 4, 128), "aux_head2/fc1": (4, 4, 128)}
    assert_parity(model, TorchGoogLeNet(5), (72, 80, 3), flatten_from=flatten, aux=True)
