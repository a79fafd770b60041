"""Numerical parity with PyTorch: torch weights loaded into the Flax models give the same logits
and the same BatchNorm running statistics, in train and eval mode.

Optional: skipped unless torch is importable (it is never a jaxcnn dependency), e.g.
`pip install --target /tmp/torch_ref torch==2.13.0` then `PYTHONPATH=/tmp/torch_ref pytest ...`.
The torch references follow torchvision's and the tutorials' definitions (torchvision itself
does not import beside torch 2.13 here). Weights are matched layer by layer in call order.
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
F = torch.nn.functional

FLAX_KINDS = ("Conv", "Dense", "BatchNorm")
TORCH_KINDS = (tnn.Conv2d, tnn.Linear, tnn.BatchNorm1d, tnn.BatchNorm2d)


# ----------------------------------------------------------------- torch references
def conv_bn(cin, cout, kernel, stride=1, padding=0, eps=1e-5):
    return [tnn.Conv2d(cin, cout, kernel, stride, padding, bias=False),
            tnn.BatchNorm2d(cout, eps=eps), tnn.ReLU()]


class TorchLeNet(tnn.Module):     # PyTorch's CIFAR-10 tutorial `Net`
    def __init__(self, channels, flat, classes):
        super().__init__()
        self.conv1, self.conv2 = tnn.Conv2d(channels, 6, 5), tnn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = tnn.Linear(flat, 120), tnn.Linear(120, 84), tnn.Linear(84, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2).flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def torch_vgg(stages, classes, head, channels=3):    # torchvision make_layers(batch_norm=True)
    layers, cin = [], channels
    for widths in stages:
        for width in widths:
            layers += [tnn.Conv2d(cin, width, 3, padding=1), tnn.BatchNorm2d(width), tnn.ReLU()]
            cin = width
        layers.append(tnn.MaxPool2d(2, 2))
    if head == "gap":
        layers += [tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(cin, 64),
                   tnn.BatchNorm1d(64), tnn.ReLU(), tnn.Linear(64, classes)]
    else:
        layers += [tnn.AdaptiveAvgPool2d(7), tnn.Flatten(), tnn.Linear(cin * 49, 4096), tnn.ReLU(),
                   tnn.Dropout(0.0), tnn.Linear(4096, 4096), tnn.ReLU(), tnn.Dropout(0.0),
                   tnn.Linear(4096, classes)]
    return tnn.Sequential(*layers)


class TorchBlock(tnn.Module):    # torchvision BasicBlock / Bottleneck, or the tutorial's option A
    def __init__(self, cin, width, stride, bottleneck, option_a):
        super().__init__()
        self.out = width * (4 if bottleneck else 1)
        if bottleneck:
            self.body = tnn.Sequential(*conv_bn(cin, width, 1), *conv_bn(width, width, 3, stride, 1),
                                       tnn.Conv2d(width, self.out, 1, bias=False), tnn.BatchNorm2d(self.out))
        else:
            self.body = tnn.Sequential(*conv_bn(cin, width, 3, stride, 1),
                                       tnn.Conv2d(width, width, 3, 1, 1, bias=False), tnn.BatchNorm2d(width))
        self.short, self.option_a, self.stride = None, option_a, stride
        if (stride != 1 or cin != self.out) and not option_a:
            self.short = tnn.Sequential(tnn.Conv2d(cin, self.out, 1, stride, bias=False),
                                        tnn.BatchNorm2d(self.out))

    def forward(self, x):
        y = self.body(x)
        if self.short is not None:
            x = self.short(x)
        elif self.option_a and (self.stride != 1 or x.shape[1] != self.out):   # IdentityPadding
            x = F.max_pool2d(F.pad(x, (0, 0, 0, 0, 0, self.out - x.shape[1])), 1, self.stride)
        return F.relu(y + x)


def torch_resnet(stage_sizes, widths, bottleneck, stem, classes, option_a=False):
    if stem == "imagenet":
        layers = [*conv_bn(3, widths[0], 7, 2, 3), tnn.MaxPool2d(3, 2, 1)]
    else:
        layers = conv_bn(3, widths[0], 3, 1, 1)
    cin = widths[0]
    for i, (blocks, width) in enumerate(zip(stage_sizes, widths)):
        for j in range(blocks):
            block = TorchBlock(cin, width, 2 if i > 0 and j == 0 else 1, bottleneck, option_a)
            layers.append(block)
            cin = block.out
    layers += [tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(cin, classes)]
    return tnn.Sequential(*layers)


class TorchInception(tnn.Module):   # torchvision Inception (its "5x5" branch is a 3x3 conv)
    def __init__(self, cin, c1, c3r, c3, c5r, c5, pool):
        super().__init__()
        eps = 1e-3
        self.b1 = tnn.Sequential(*conv_bn(cin, c1, 1, eps=eps))
        self.b2 = tnn.Sequential(*conv_bn(cin, c3r, 1, eps=eps), *conv_bn(c3r, c3, 3, 1, 1, eps=eps))
        self.b3 = tnn.Sequential(*conv_bn(cin, c5r, 1, eps=eps), *conv_bn(c5r, c5, 3, 1, 1, eps=eps))
        self.b4 = tnn.Sequential(tnn.MaxPool2d(3, 1, 1, ceil_mode=True), *conv_bn(cin, pool, 1, eps=eps))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class TorchGoogLeNet(tnn.Module):   # torchvision GoogLeNet, aux heads on, dropout 0
    def __init__(self, classes):
        super().__init__()
        eps, cfg = 1e-3, [(192, 64, 96, 128, 16, 32, 32), (256, 128, 128, 192, 32, 96, 64), "M",
                          (480, 192, 96, 208, 16, 48, 64), 512, (512, 160, 112, 224, 24, 64, 64),
                          (512, 128, 128, 256, 24, 64, 64), (512, 112, 144, 288, 32, 64, 64), 528,
                          (528, 256, 160, 320, 32, 128, 128), "M2", (832, 256, 160, 320, 32, 128, 128),
                          (832, 384, 192, 384, 48, 128, 128)]
        self.stem = tnn.Sequential(*conv_bn(3, 64, 7, 2, 3, eps), tnn.MaxPool2d(3, 2, ceil_mode=True),
                                   *conv_bn(64, 64, 1, eps=eps), *conv_bn(64, 192, 3, 1, 1, eps),
                                   tnn.MaxPool2d(3, 2, ceil_mode=True))
        self.body = tnn.ModuleList()
        for item in cfg:
            if item == "M":
                self.body.append(tnn.MaxPool2d(3, 2, ceil_mode=True))
            elif item == "M2":
                self.body.append(tnn.MaxPool2d(2, 2, ceil_mode=True))
            elif isinstance(item, int):   # an auxiliary head on `item` channels
                self.body.append(tnn.Sequential(
                    tnn.AdaptiveAvgPool2d(4), *conv_bn(item, 128, 1, eps=eps), tnn.Flatten(),
                    tnn.Linear(2048, 1024), tnn.ReLU(), tnn.Linear(1024, classes)))
            else:
                self.body.append(TorchInception(*item))
        self.fc = tnn.Linear(1024, classes)

    def forward(self, x):
        x, aux = self.stem(x), []
        for module in self.body:
            if isinstance(module, tnn.Sequential):
                aux.append(module(x))
            else:
                x = module(x)
        return self.fc(x.mean((2, 3))), aux


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
