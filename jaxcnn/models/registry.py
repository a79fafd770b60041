"""Model names -> Flax modules, timm-style: `create_model(name, num_classes, **options)`."""

import dataclasses
import difflib
import functools

import flax.linen as nn

from jaxcnn.models import cifar_resnet, googlenet, lenet, resnet, vgg

MODELS = {
    "lenet5": lenet.LeNet5,
    "vgg11": vgg.VGG11,
    "vgg13": vgg.VGG13,
    "vgg16": vgg.VGG16,
    "vgg19": vgg.VGG19,
    "vgg16_catdog": vgg.VGG16_CATDOG,
    "googlenet": googlenet.GoogLeNet,
    "resnet18": resnet.ResNet18,
    "resnet34": resnet.ResNet34,
    "resnet50": resnet.ResNet50,
    "resnet101": resnet.ResNet101,
    "resnet152": resnet.ResNet152,
    "resnet20": cifar_resnet.ResNet20,
    "resnet32": cifar_resnet.ResNet32,
    "resnet44": cifar_resnet.ResNet44,
    "resnet56": cifar_resnet.ResNet56,
    "resnet110": cifar_resnet.ResNet110,
}


# The data each architecture is usually trained on, as its module docstring names it:
# (classes, square input size, channels). `jaxcnn summary` defaults to it.
IMAGENET, CIFAR10 = (1000, 224, 3), (10, 32, 3)
USUAL_DATA = {
    "lenet5": CIFAR10,  # PyTorch's CIFAR-10 tutorial
    "vgg11": IMAGENET, "vgg13": IMAGENET, "vgg16": IMAGENET, "vgg19": IMAGENET,  # torchvision's vgg*_bn
    "vgg16_catdog": (2, 224, 3),  # the cat-and-dog tutorial
    "googlenet": IMAGENET,
    "resnet18": IMAGENET, "resnet34": IMAGENET, "resnet50": IMAGENET, "resnet101": IMAGENET, "resnet152": IMAGENET,
    "resnet20": CIFAR10, "resnet32": CIFAR10, "resnet44": CIFAR10, "resnet56": CIFAR10, "resnet110": CIFAR10,
}


def usual_data(name: str) -> tuple[int, int, int]:
    """(classes, input size, channels) of the data model `name` is usually trained on."""
    _lookup(name)  # unknown names: the registry's error, with its suggestion
    return USUAL_DATA[name.lower()]


def list_models() -> list[str]:
    """Every name `create_model` accepts."""
    return list(MODELS)


def model_options(name: str) -> list[str]:
    """The keyword options of a model (its module fields, minus those fixed by the variant)."""
    factory = _lookup(name)
    cls, fixed = (factory.func, factory.keywords) if isinstance(factory, functools.partial) \
        else (factory, {})
    reserved = {"parent", "name", "num_classes", *fixed}
    return [f.name for f in dataclasses.fields(cls) if f.name not in reserved]


def create_model(name: str, num_classes: int, **options) -> nn.Module:
    """Build model `name` with a `num_classes`-way classifier.

    Options (all models): dtype (computation, e.g. jnp.bfloat16), param_dtype; per family
    e.g. head= for VGG, stem= for ResNet-18..152, aux_logits= for GoogLeNet. Unknown names or
    options raise ValueError listing the valid ones.
    """
    factory = _lookup(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}")
    valid = model_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {name}; valid options: {valid}")
    return factory(num_classes=num_classes, name=name.lower(), **options)


def _lookup(name: str):
    factory = MODELS.get(name.lower()) if isinstance(name, str) else None
    if factory is None:
        close = difflib.get_close_matches(str(name).lower(), MODELS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} Valid models: {', '.join(MODELS)}")
    return factory
