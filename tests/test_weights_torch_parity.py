"""Exactness against PyTorch through torchvision-format weights, for every model in list_models().

A randomly initialized torch twin with torchvision's module names (jaxcnn.weights.torch_models;
BatchNorm statistics and affine parameters randomized so eval mode is tested) -> its state_dict
saved as .pth and as .safetensors -> `load_torch_weights` -> the same logits in eval mode at
224 px (32 px for the CIFAR nets and LeNet) and at an odd size, and in train mode with the same
updated BatchNorm statistics; exported back with `save_torch_weights`, torch loads the file with
strict=True and gets back every tensor bit for bit.

Skipped unless torch is importable: CI installs the `parity` extra (torch's CPU build).
"""

from functools import partial

import jax
import numpy as np
import pytest

from jaxcnn.models import create_model, list_models
from jaxcnn.weights import load_torch_weights, save_torch_weights, torch_state_dict
from jaxcnn.weights.layout import default_input_shape

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402  (after the skip: needs torch)

from jaxcnn.weights.torch_models import torch_model  # noqa: E402

RTOL = 1e-4  # of the largest |logit|
NUM_CLASSES = 3
ODD_SIZE = {224: 77, 32: 35}  # odd; train-mode BatchNorm sees >= 8 values per channel
NO_DROPOUT = {"googlenet": {"dropout_rate": 0.0}}


def randomized_twin(arch, image_size, channels=3, **options):
    torch.manual_seed(0)
    model = torch_model(arch, NUM_CLASSES, image_size, channels, **options)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model.eval()


def assert_close(name, actual, expected, quiet=False):
    """max |actual - expected| <= RTOL * max |expected|; prints the measured difference."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, name
    diff, scale = float(np.abs(actual - expected).max()), float(np.abs(expected).max())
    if not quiet:
        print(f"{name}: max |diff| {diff:.3g} (largest |value| {scale:.3g}, relative {diff / scale:.2g})")
    assert diff <= RTOL * scale, f"{name}: max |diff| {diff} > {RTOL} * {scale}"


def torch_forward(model, x, train=False):
    model.train(train)
    with torch.no_grad():
        return model(torch.from_numpy(x.transpose(0, 3, 1, 2)))


def write_both(state, directory):
    """The state_dict as a .pth and as a .safetensors file (both as torch users write them)."""
    torch.save(state, directory / "weights.pth")
    save_file({key: value.contiguous() for key, value in state.items()}, directory / "weights.safetensors")
    return directory / "weights.pth", directory / "weights.safetensors"


def load_both(arch, state, directory, **kwargs):
    """Variables loaded from the .pth and the .safetensors file; they must be identical."""
    pth, safetensors = write_both(state, directory)
    variables, report = load_torch_weights(arch, pth, **kwargs)  # the file's number of classes
    from_safetensors, _ = load_torch_weights(arch, safetensors, num_classes=NUM_CLASSES, **kwargs)
    assert report.newly_initialized == report.missing == report.unexpected == ()
    assert report.num_classes == NUM_CLASSES
    jax.tree.map(np.testing.assert_array_equal, variables, from_safetensors)
    return variables


def check_train_mode(name, arch, model, variables, twin, x, **options):
    """Train-mode logits (and GoogLeNet's aux logits) and the updated BatchNorm statistics."""
    expected = torch_forward(twin, x, train=True)
    apply = partial(model.apply, train=True, mutable=["batch_stats", "aux_logits"])
    logits, updated = jax.jit(apply)(variables, x)
    if isinstance(expected, tuple):  # (logits, aux2, aux1) as torchvision's GoogLeNetOutputs
        expected, aux2, aux1 = expected
        assert_close(f"{name} train aux1", updated["aux_logits"]["aux1"][0], aux1)
        assert_close(f"{name} train aux2", updated["aux_logits"]["aux2"][0], aux2)
    assert_close(f"{name} train logits", logits, expected)
    if "batch_stats" in variables:
        stats = torch_state_dict({"params": variables["params"], "batch_stats": updated["batch_stats"]},
                                 arch, input_shape=x.shape[1:], **options)
        twin_state = twin.state_dict()
        for key in (k for k in stats if k.endswith(("running_mean", "running_var"))):
            assert_close(f"{name} {key}", stats[key], twin_state[key], quiet=True)


def check_export(arch, variables, twin, state, x, expected, directory, input_shape, **options):
    """Exported back (.pth; .safetensors is as exact, tests/test_weights.py), torch loads the
    file with strict=True and has the original tensors and logits, bit for bit."""
    path = save_torch_weights(variables, arch, directory / "export.pth", input_shape=input_shape,
                              **options)
    exported = torch.load(path, weights_only=True)
    twin.load_state_dict(exported, strict=True)
    for key, value in state.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(exported[key], value), key
    np.testing.assert_array_equal(torch_forward(twin, x).numpy(), expected.numpy())


def run_parity(arch, directory, sizes, channels=3, train=False, **options):
    """Load at sizes[0]; eval at every size (batch 1 at 224 px, else 2); export, and train mode
    when asked, at the last size."""
    twin = randomized_twin(arch, sizes[0], channels, **options)
    state = {key: value.clone() for key, value in twin.state_dict().items()}
    variables = load_both(arch, state, directory, input_shape=(*sizes[0], channels), **options)
    model = create_model(arch, NUM_CLASSES, **options)
    rng = np.random.default_rng(0)
    for height, width in sizes:
        x = rng.normal(size=(1 if height >= 224 else 2, height, width, channels)).astype(np.float32)
        expected = torch_forward(twin, x)
        logits = jax.jit(partial(model.apply, train=False))(variables, x)
        assert_close(f"{arch} {options} eval {height}x{width}x{channels}", logits, expected)
    check_export(arch, variables, twin, state, x, expected, directory, x.shape[1:], **options)
    if train:
        check_train_mode(f"{arch} {options} {height}x{width}", arch, model, variables, twin, x, **options)


CONV_NETS = [arch for arch in list_models() if arch != "lenet5"]
# Train mode once per kind of block: the deeper variants repeat the same blocks, cost a compile
# each, and, with batch statistics at random init, amplify float32 rounding with depth
# (ResNet-152 in train mode differs from torch by ~1e-3 of its logits, ResNet-50 by ~3e-5).
TRAIN_MODE = ("vgg11", "resnet18", "resnet50", "resnet20")


def test_every_model_is_covered():
    assert sorted([*CONV_NETS, "lenet5"]) == sorted(list_models())


@pytest.mark.parametrize("arch", CONV_NETS)
def test_parity(arch, tmp_path):
    options = NO_DROPOUT.get(arch, {})
    size = default_input_shape(create_model(arch, NUM_CLASSES))[0]
    run_parity(arch, tmp_path, [(size, size), (ODD_SIZE[size], ODD_SIZE[size])],
               train=arch in TRAIN_MODE, **options)


@pytest.mark.parametrize("shape", [(32, 32, 3), (35, 29, 3), (28, 28, 1)])
def test_lenet_parity(shape, tmp_path):
    """fc1 takes the flattened map, whose size (and torch's C, H, W order) follows the input."""
    run_parity("lenet5", tmp_path, [shape[:2]], channels=shape[2], train=True)


def test_googlenet_aux_heads_parity(tmp_path):
    options = dict(aux_logits=True, dropout_rate=0.0, aux_dropout_rate=0.0)
    run_parity("googlenet", tmp_path, [(77, 77)], train=True, **options)


def test_vgg_classic_head_parity(tmp_path):
    """torchvision's vgg*_bn head: classifier.0's inputs reordered (C, H, W) <-> (H, W, C); at
    45 px the 1x1 map is spread over the 7x7 adaptive-pool bins."""
    run_parity("vgg11", tmp_path, [(45, 45)], head="classic", dropout_rate=0.0)
