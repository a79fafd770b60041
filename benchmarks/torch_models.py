"""jaxcnn's architectures written in PyTorch, after torchvision's and the tutorials' definitions.

Used by tests/test_models_torch_parity.py (weights copied layer by layer into the Flax models
give the same outputs) and benchmarks/compare_torch.py (the same training step timed in both).
torch is optional and never a jaxcnn dependency; torchvision does not import beside torch 2.13
here, hence these definitions. Layers are created in the order the Flax models call theirs.
"""

from __future__ import annotations

import torch
from torch import nn as tnn
from torch.nn import functional as F


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


def torch_vgg(stages, classes, head, channels=3, dropout=0.0):    # torchvision make_layers(batch_norm=True)
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
                   tnn.Dropout(dropout), tnn.Linear(4096, 4096), tnn.ReLU(), tnn.Dropout(dropout),
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


class TorchGoogLeNet(tnn.Module):   # torchvision GoogLeNet; aux heads on and dropout 0 by default (parity)
    def __init__(self, classes, aux_logits=True, dropout=0.0, aux_dropout=0.0):
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
                if aux_logits:
                    self.body.append(tnn.Sequential(
                        tnn.AdaptiveAvgPool2d(4), *conv_bn(item, 128, 1, eps=eps), tnn.Flatten(),
                        tnn.Linear(2048, 1024), tnn.ReLU(), tnn.Dropout(aux_dropout), tnn.Linear(1024, classes)))
            else:
                self.body.append(TorchInception(*item))
        self.dropout = tnn.Dropout(dropout)
        self.fc = tnn.Linear(1024, classes)

    def forward(self, x):
        x, aux = self.stem(x), []
        for module in self.body:
            if isinstance(module, tnn.Sequential):
                aux.append(module(x))
            else:
                x = module(x)
        logits = self.fc(self.dropout(x.mean((2, 3))))
        return (logits, aux) if aux else logits


def torch_model(name: str, num_classes: int, image_size: int, channels: int = 3) -> tnn.Module:
    """The PyTorch twin of `jaxcnn.create_model(name, num_classes)` with its default options (dropout included)."""
    from jaxcnn.models import create_model

    model = create_model(name, num_classes)
    kind = type(model).__name__
    if kind == "LeNet5":
        side = ((image_size - 4) // 2 - 4) // 2
        return TorchLeNet(channels, 16 * side * side, num_classes)
    if kind == "VGG":
        return torch_vgg(model.stages, num_classes, model.head, channels, dropout=model.dropout_rate)
    if kind == "GoogLeNet":
        return TorchGoogLeNet(num_classes, model.aux_logits, model.dropout_rate, model.aux_dropout_rate)
    if kind == "ResNet":
        bottleneck = model.block_cls.__name__ == "Bottleneck"
        return torch_resnet(model.stage_sizes, model.stage_widths, bottleneck, model.stem, num_classes,
                            option_a=model.shortcut.__name__ == "zero_pad_shortcut")
    raise ValueError(f"no PyTorch definition of {name!r} ({kind})")
