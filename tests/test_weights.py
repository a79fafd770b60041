"""jaxcnn.weights without torch: torchvision's key names, exact round trips through .safetensors,
head replacement with its report, and the errors (torch itself: test_weights_torch_parity.py)."""

import logging
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.models import create_model
from jaxcnn.weights import load_torch_weights, read_state_dict, save_torch_weights, torch_state_dict
from jaxcnn.weights.layout import model_layout


def random_state(arch, num_classes, input_shape=None, zeros=(), **options):
    """Random arrays in `arch`'s torch layout (zeros for keys starting with `zeros`: cheap)."""
    _, entries = model_layout(arch, num_classes, input_shape, tuple(sorted(options.items())))
    rng = np.random.default_rng(0)
    return {e.key: np.zeros(e.torch_shape, np.float32) if e.key.startswith(zeros) else
            rng.standard_normal(e.torch_shape, np.float32) for e in entries}


def parameter_count(arch, num_classes, **options):
    _, entries = model_layout(arch, num_classes, None, tuple(sorted(options.items())))
    return sum(int(np.prod(e.shape)) for e in entries if e.path[0] == "params")


def test_torchvision_key_names_and_parameter_counts():
    keys = set(random_state("resnet50", 2))
    assert {"conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight",
            "layer1.0.downsample.1.running_mean", "layer4.2.conv3.weight", "layer4.2.bn3.bias",
            "fc.weight", "fc.bias"} <= keys
    _, entries = model_layout("vgg16", 1000, None, (("head", "classic"),))
    assert {e.key for e in entries} >= {"features.0.weight", "features.1.running_var",
                                        "features.40.weight", "features.41.weight",
                                        "classifier.0.weight", "classifier.3.weight", "classifier.6.bias"}
    _, entries = model_layout("googlenet", 1000, None, (("aux_logits", True),))
    assert {e.key for e in entries} >= {"conv1.conv.weight", "conv3.bn.running_mean",
                                        "inception3a.branch2.0.conv.weight", "inception3a.branch2.1.bn.weight",
                                        "inception5b.branch4.1.conv.weight", "aux1.conv.conv.weight",
                                        "aux2.fc1.weight", "aux2.fc2.bias", "fc.weight"}
    # torchvision's counts (vgg16_bn, googlenet with aux heads, resnet50) and the seed's CIFAR ResNet-101.
    assert parameter_count("vgg16", 1000, head="classic") == 138_365_992
    assert parameter_count("googlenet", 1000, aux_logits=True) == 13_004_888
    assert parameter_count("resnet50", 1000) == 25_557_032
    assert parameter_count("resnet101", 8, stem="cifar") == 42_508_872


@pytest.mark.parametrize("arch,options,input_shape", [
    ("resnet18", {}, None), ("resnet20", {}, None), ("vgg11", {}, None),
    ("googlenet", {"aux_logits": True}, None), ("lenet5", {}, (35, 29, 1))])
def test_safetensors_round_trip_is_exact(arch, options, input_shape, tmp_path):
    state = random_state(arch, 5, input_shape, **options)
    variables, report = load_torch_weights(arch, state, input_shape=input_shape, **options)
    assert report.loaded == tuple(state) and report.newly_initialized == ()
    path = save_torch_weights(variables, arch, tmp_path / "w.safetensors", input_shape=input_shape,
                              **options)
    exported = read_state_dict(path)
    tracked = {key for key in exported if key.endswith(".num_batches_tracked")}
    assert {key.removesuffix(".num_batches_tracked") + ".running_mean" for key in tracked} \
        == {key for key in state if key.endswith(".running_mean")}
    assert all(exported[key].dtype == np.int64 and exported[key] == 0 for key in tracked)
    assert set(exported) - tracked == set(state)
    for key, value in state.items():
        np.testing.assert_array_equal(exported[key], value, err_msg=key)
    again, _ = load_torch_weights(arch, path, input_shape=input_shape, **options)
    jax.tree.map(np.testing.assert_array_equal, again, variables)


HEADS = [("resnet18", {}, ("fc.weight", "fc.bias")),
         ("resnet20", {}, ("fc.weight", "fc.bias")),
         ("vgg11", {}, ("classifier.3.weight", "classifier.3.bias")),
         ("googlenet", {"aux_logits": True},
          ("aux1.fc2.weight", "aux1.fc2.bias", "aux2.fc2.weight", "aux2.fc2.bias", "fc.weight", "fc.bias")),
         ("lenet5", {}, ("fc3.weight", "fc3.bias"))]


@pytest.mark.parametrize("arch,options,head", HEADS)
def test_1000_to_2_classes_replaces_exactly_the_head(arch, options, head):
    state = random_state(arch, 1000, **options)
    variables, report = load_torch_weights(arch, state, num_classes=2, rng=1, **options)
    assert sorted(report.newly_initialized) == sorted(head)
    assert report.missing == report.unexpected == ()
    assert set(report.loaded) == set(state) - set(head)
    exported = torch_state_dict(variables, arch, **options)
    for key in report.loaded:
        np.testing.assert_array_equal(exported[key], state[key], err_msg=key)
    for key in head:
        assert exported[key].shape[0] == 2 and not np.array_equal(exported[key][:2], state[key][:2])


def test_new_head_is_the_models_own_init():
    variables, _ = load_torch_weights("resnet20", random_state("resnet20", 1000), num_classes=2, rng=7)
    model = create_model("resnet20", 2)
    init = jax.jit(lambda key: model.init({"params": key}, jnp.zeros((1, 32, 32, 3)), train=False)["params"]["fc"])
    jax.tree.map(np.testing.assert_array_equal, variables["params"]["fc"], init(jax.random.key(7)))


def test_torchvision_vgg16_bn_classic_head_into_the_gap_head():
    state = random_state("vgg16", 1000, zeros=("classifier",), head="classic")
    with pytest.raises(ValueError, match=r"cannot tell vgg16's number of classes.*num_classes="):
        load_torch_weights("vgg16", state)
    variables, report = load_torch_weights("vgg16", state, num_classes=2)  # strict: the head may differ
    norm = ("classifier.1.weight", "classifier.1.bias", "classifier.1.running_mean", "classifier.1.running_var")
    assert set(report.newly_initialized) == {"classifier.0.weight", "classifier.0.bias",
                                             "classifier.3.weight", "classifier.3.bias", *norm}
    assert set(report.missing) == set(norm)
    assert set(report.unexpected) == {"classifier.6.weight", "classifier.6.bias"}
    assert all(key.startswith("features.") for key in report.loaded) and len(report.loaded) == 13 * 6
    kernel = variables["params"]["stage5_conv3"]["conv"]["kernel"]
    np.testing.assert_array_equal(kernel, state["features.40.weight"].transpose(2, 3, 1, 0))
    table = report.format_table()
    assert "78 loaded, 8 newly initialized, 4 missing, 2 unexpected" in table
    assert "classifier.0.weight" in table and "file (4096, 25088)  model (64, 512)" in table
    assert "unexpected" in table and "file (1000, 4096)  model -" in table


def test_number_of_classes_comes_from_the_file():
    variables, report = load_torch_weights("resnet20", random_state("resnet20", 10))
    assert report.num_classes == 10 and variables["params"]["fc"]["kernel"].shape == (64, 10)


def test_shape_mismatch_outside_the_head_names_key_and_shapes():
    state = random_state("resnet20", 10)
    state["layer1.0.conv1.weight"] = np.zeros((16, 16, 5, 5), np.float32)
    with pytest.raises(ValueError, match=r"layer1\.0\.conv1\.weight: file \(16, 16, 5, 5\), "
                                         r"model \(16, 16, 3, 3\)"):
        load_torch_weights("resnet20", state)


def test_input_channels_follow_input_shape():
    state = random_state("resnet18", 4, input_shape=(64, 64, 1))
    with pytest.raises(ValueError, match=r"(?s)input_shape=\(224, 224, 3\).*conv1\.weight: file \(64, 1, 7, 7\)"):
        load_torch_weights("resnet18", state)
    variables, _ = load_torch_weights("resnet18", state, input_shape=(64, 64, 1))
    assert variables["params"]["stem_conv"]["kernel"].shape == (7, 7, 1, 64)


def test_strict_refuses_missing_and_unexpected_keys_outside_the_head(caplog):
    state = random_state("resnet20", 10)
    del state["layer1.0.bn1.running_var"]
    state["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"missing layer1\.0\.bn1\.running_var \(1\); unexpected extra\.weight"):
        load_torch_weights("resnet20", state)
    with caplog.at_level(logging.WARNING, logger="jaxcnn.weights.convert"):
        variables, report = load_torch_weights("resnet20", state, strict=False)
    assert "missing layer1.0.bn1.running_var" in caplog.text and "unexpected extra.weight" in caplog.text
    assert report.missing == report.newly_initialized == ("layer1.0.bn1.running_var",)
    assert report.unexpected == ("extra.weight",)
    np.testing.assert_array_equal(variables["batch_stats"]["stage1_block1"]["BatchNorm_0"]["var"],
                                  np.ones(16))  # the model's init


def test_unexpected_head_keys_are_reported_not_refused():
    """torchvision's ImageNet googlenet file holds aux1 / aux2; jaxcnn's default has no aux heads."""
    state = random_state("googlenet", 10, aux_logits=True)
    _, report = load_torch_weights("googlenet", state)
    assert report.unexpected and all(key.startswith(("aux1.", "aux2.")) for key in report.unexpected)
    assert report.newly_initialized == report.missing == ()


def test_file_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"use one of \.pth, \.pt, \.safetensors"):
        load_torch_weights("resnet20", tmp_path / "w.npz")
    with pytest.raises(FileNotFoundError, match="no weights file"):
        load_torch_weights("resnet20", tmp_path / "absent.safetensors")
    (tmp_path / "w.pth").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ImportError, match=r"\.pth files need PyTorch: `pip install torch`"):
        load_torch_weights("resnet20", tmp_path / "w.pth")
    variables, _ = load_torch_weights("resnet20", random_state("resnet20", 10))
    with pytest.raises(ImportError, match="pip install torch"):
        save_torch_weights(variables, "resnet20", tmp_path / "out.pt")


def test_export_refuses_variables_of_another_model():
    variables, _ = load_torch_weights("resnet20", random_state("resnet20", 10))
    with pytest.raises(ValueError, match=r"variables do not fit resnet32 .*/stage1_block4/"):
        torch_state_dict(variables, "resnet32")
    aux, _ = load_torch_weights("googlenet", random_state("googlenet", 10, aux_logits=True), aux_logits=True)
    with pytest.raises(ValueError, match=r"aux_logits.*params/aux_head1"):
        torch_state_dict(aux, "googlenet")
