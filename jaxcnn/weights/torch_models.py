"""jaxcnn's architectures in PyTorch with torchvision's module names (needs torch).

The twins of `create_model(name, ...)`: their `state_dict()` has exactly the keys and shapes
`jaxcnn.weights` reads and writes, so they load what `save_torch_weights` exports (for VGG,
ResNet-18..152 and GoogLeNet, torchvision's own classes load it too). Written by hand because
torchvision 0.28 does not import beside the CPU build of torch 2.13; the forward passes follow
torchvision's (and, for LeNet-5 and the CIFAR ResNets, PyTorch's CIFAR-10 tutorial and He et
al.'s option-A shortcut). Used by the parity tests and benchmarks/compare_torch.py.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class LeNet5(nn.Module):
    """PyTorch's CIFAR-10 tutorial `Net`; `flat` is fc1's input size (16 * H' * W')."""

    def __init__(self, num_classes: int, channels: int = 3, flat: int = 16 * 5 * 5):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(channels, 6, 5), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(flat, 120), nn.Linear(120, 84), nn.Linear(84, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2).flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class VGG(nn.Module):
    """torchvision's VGG over make_layers(batch_norm=True); head "classic" (torchvision's) or
    "gap" (global average pool -> Linear(C, hidden) -> BatchNorm1d -> ReLU -> Linear)."""

    def __init__(self, stages, num_classes, head="gap", channels=3, hidden=64, dropout=0.5):
        super().__init__()
        layers, cin = [], channels
        for widths in stages:
            for width in widths:
                layers += [nn.Conv2d(cin, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(True)]
                cin = width
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        if head == "classic":
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(cin * 49, 4096), nn.ReLU(True), nn.Dropout(dropout),
                nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(dropout), nn.Linear(4096, num_classes))
        else:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Linear(cin, hidden), nn.BatchNorm1d(hidden), nn.ReLU(True),
                                            nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class _Block(nn.Module):
    def forward(self, x):
        """torchvision's block forward; without `downsample`, a changed shape takes option A
        (x[:, :, ::s, ::s] with zero channels appended, parameter-free)."""
        y = self.residual(x)
        if self.downsample is not None:
            x = self.downsample(x)
        elif x.shape != y.shape:
            x = F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, 0, y.shape[1] - x.shape[1]))
        return F.relu(y + x)


class BasicBlock(_Block):
    expansion = 1

    def __init__(self, cin, width, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample, self.stride = downsample, stride

    def residual(self, x):
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))


class Bottleneck(_Block):
    expansion = 4

    def __init__(self, cin, width, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.downsample, self.stride = downsample, stride

    def residual(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return self.bn3(self.conv3(F.relu(self.bn2(self.conv2(x)))))




class ResNet(nn.Module):
    """torchvision's ResNet; stem "cifar" is one 3x3/1 conv without max-pool, and
    `projection=False` gives He et al.'s CIFAR ResNets (option-A shortcuts)."""

    def __init__(self, block, stage_sizes, num_classes, widths=(64, 128, 256, 512), stem="imagenet",
                 projection=True, channels=3):
        super().__init__()
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(channels, widths[0], 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(widths[0])
        cin = widths[0]
        for i, (blocks, width) in enumerate(zip(stage_sizes, widths)):
            layers = []
            for j in range(blocks):
                stride = 2 if i > 0 and j == 0 else 1
                out = width * block.expansion
                downsample = None
                if projection and (stride != 1 or cin != out):
                    downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))
                layers.append(block(cin, width, stride, downsample))
                cin = out
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
        self.num_stages = len(stage_sizes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    def __init__(self, cin, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
        super().__init__()
        self.branch1 = BasicConv2d(cin, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, ch3x3red, kernel_size=1),
                                     BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(cin, ch5x5red, kernel_size=1),
                                     BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True),
                                     BasicConv2d(cin, pool_proj, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    def __init__(self, cin, num_classes, dropout=0.7):
        super().__init__()
        self.conv = BasicConv2d(cin, 128, kernel_size=1)
        self.fc1, self.fc2 = nn.Linear(2048, 1024), nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        x = torch.flatten(self.conv(F.adaptive_avg_pool2d(x, (4, 4))), 1)
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


_INCEPTIONS = {"3a": (192, 64, 96, 128, 16, 32, 32), "3b": (256, 128, 128, 192, 32, 96, 64),
               "4a": (480, 192, 96, 208, 16, 48, 64), "4b": (512, 160, 112, 224, 24, 64, 64),
               "4c": (512, 128, 128, 256, 24, 64, 64), "4d": (512, 112, 144, 288, 32, 64, 64),
               "4e": (528, 256, 160, 320, 32, 128, 128), "5a": (832, 256, 160, 320, 32, 128, 128),
               "5b": (832, 384, 192, 384, 48, 128, 128)}


class GoogLeNet(nn.Module):
    """torchvision's GoogLeNet (transform_input=False); in training with aux heads it returns
    (logits, aux2, aux1) as torchvision's GoogLeNetOutputs, else the logits."""

    def __init__(self, num_classes, aux_logits=False, dropout=0.2, aux_dropout=0.7, channels=3):
        super().__init__()
        self.conv1 = BasicConv2d(channels, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        for name, widths in _INCEPTIONS.items():
            self.add_module(f"inception{name}", Inception(*widths))
        self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.maxpool4 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.aux_logits = aux_logits
        if aux_logits:
            self.aux1 = InceptionAux(512, num_classes, aux_dropout)
            self.aux2 = InceptionAux(528, num_classes, aux_dropout)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x):
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux = self.aux_logits and self.training
        aux1 = self.aux1(x) if aux else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if aux else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        logits = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        return (logits, aux2, aux1) if aux else logits


def torch_model(name: str, num_classes: int, image_size: int | tuple[int, int] = 224, channels: int = 3,
                **options) -> nn.Module:
    """The PyTorch twin of `jaxcnn.create_model(name, num_classes, **options)` (dropout included);
    `image_size` matters for lenet5 only (its fc1 takes the flattened feature map)."""
    from jaxcnn.models import create_model
    from jaxcnn.weights.layout import family_of, layout

    model = create_model(name, num_classes, **options)
    kind = type(model).__name__
    if kind == "LeNet5":
        height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
        fc1 = next(e for e in layout(model, (height, width, channels)) if e.key == "fc1.weight")
        return LeNet5(num_classes, channels, fc1.torch_shape[1])
    if kind == "VGG":
        return VGG(model.stages, num_classes, model.head, channels, model.hidden_features, model.dropout_rate)
    if kind == "GoogLeNet":
        return GoogLeNet(num_classes, model.aux_logits, model.dropout_rate, model.aux_dropout_rate, channels)
    family_of(model)  # raises for a model without a torch layout
    block = Bottleneck if model.block_cls.__name__ == "Bottleneck" else BasicBlock
    return ResNet(block, model.stage_sizes, num_classes, model.stage_widths, model.stem,
                  projection=model.shortcut.__name__ == "projection_shortcut", channels=channels)
