"""Weights files that cannot be used are one line naming the file and exit 2 (issue 19): not a
.safetensors file or a truncated one, a .pth holding pickled objects or none at all, .pth without
torch, weights of another model. Every file here is written for real, broken the way they break."""

import pickle
import sys

import numpy as np
import pytest

from jaxcnn.errors import MissingDependencyError, UserError, WeightsFileError
from jaxcnn.weights import load_torch_weights, read_state_dict, save_torch_weights, write_state_dict
from jaxcnn.weights.layout import model_layout


def lenet5_state(channels: int = 1, num_classes: int = 10) -> dict:
    _, entries = model_layout("lenet5", num_classes, (28, 28, channels))
    rng = np.random.default_rng(0)
    return {e.key: rng.standard_normal(e.torch_shape, np.float32) for e in entries}


def assert_one_line(error: BaseException, *fragments: str) -> None:
    message = str(error)
    assert isinstance(error, UserError) and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def safetensors_variants(tmp_path) -> dict:
    good = tmp_path / "good.safetensors"
    write_state_dict(lenet5_state(), good)
    data = good.read_bytes()
    variants = {"truncated": data[: len(data) // 2], "header only": data[:8], "empty": b"",
                "a zip file": b"PK\x03\x04" + b"\x00" * 200, "text": b"these are not weights\n" * 20}
    paths = {}
    for name, content in variants.items():
        paths[name] = tmp_path / f"{name.replace(' ', '-')}.safetensors"
        paths[name].write_bytes(content)
    return paths


def test_a_safetensors_file_that_is_not_one_or_is_truncated(tmp_path):
    """Old code: `SafetensorError: Error while deserializing header` (a bug's traceback, exit 1)."""
    for name, path in safetensors_variants(tmp_path).items():
        with pytest.raises(WeightsFileError) as error:
            read_state_dict(path)
        assert_one_line(error.value, str(path), "not a readable .safetensors file", "truncated")


def torch_files(tmp_path) -> dict:
    import argparse

    torch = pytest.importorskip("torch")
    good = tmp_path / "good.pth"
    write_state_dict(lenet5_state(), good)
    data = good.read_bytes()
    files = {"truncated": data[: len(data) // 2], "empty": b"", "text": b"not a torch file\n" * 20,
             "a pickle": pickle.dumps({"conv1.weight": [1.0, 2.0]})}
    paths = {name: tmp_path / f"{name.replace(' ', '-')}.pth" for name in files}
    for name, content in files.items():
        paths[name].write_bytes(content)
    paths["a whole model"] = tmp_path / "model.pth"
    torch.save({"model": torch.nn.Linear(2, 2)}, paths["a whole model"])
    paths["a checkpoint with its arguments"] = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": {"fc.weight": torch.ones(2, 2)}, "args": argparse.Namespace(lr=0.1)},
               paths["a checkpoint with its arguments"])
    return paths


def test_a_pth_file_that_is_no_torch_file_or_holds_pickled_objects(tmp_path):
    """Old code: RuntimeError / KeyError / EOFError / `UnpicklingError: Weights only load failed`."""
    paths = torch_files(tmp_path)
    for name in ("truncated", "empty", "text", "a pickle"):
        with pytest.raises(WeightsFileError) as error:
            read_state_dict(paths[name])
        assert_one_line(error.value, str(paths[name]), "not a readable PyTorch file")
    for name in ("a whole model", "a checkpoint with its arguments"):
        with pytest.raises(WeightsFileError) as error:
            read_state_dict(paths[name])
        assert_one_line(error.value, str(paths[name]), "is refused", "pickled Python objects", "arbitrary code",
                        "Linear..." if name == "a whole model" else "argparse.Namespace...",
                        "Only if you trust its source", "weights_only=False", "state_dict", ".safetensors")


def test_pth_files_without_torch_name_the_install_and_safetensors(tmp_path, monkeypatch):
    (tmp_path / "w.pth").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError, as without torch
    from jaxcnn.weights.io import checked_output

    state = lenet5_state()
    attempts = [lambda: read_state_dict(tmp_path / "w.pth"), lambda: write_state_dict(state, tmp_path / "o.pt"),
                lambda: checked_output(tmp_path / "o.pth")]
    for attempt in attempts:
        with pytest.raises(MissingDependencyError) as error:
            attempt()
        assert_one_line(error.value, "need PyTorch", "pip install torch", "jaxcnn[parity]", ".safetensors file, "
                        "which needs no torch")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pth"]
    write_state_dict(state, tmp_path / "o.safetensors")  # needs no torch
    assert set(read_state_dict(tmp_path / "o.safetensors")) == set(state)


def test_weights_of_another_model_or_shape_are_one_line(tmp_path):
    """Old code: a ValueError (a bug's traceback, exit 1) over several lines."""
    rgb = tmp_path / "lenet5-rgb.safetensors"
    write_state_dict(lenet5_state(channels=3), rgb)
    with pytest.raises(WeightsFileError) as error:
        load_torch_weights("lenet5", rgb, num_classes=10, input_shape=(28, 28, 1))
    assert_one_line(error.value, str(rgb), "does not fit lenet5 outside the head",
                    "conv1.weight: file (6, 3, 5, 5), model (6, 1, 5, 5)")
    _, entries = model_layout("resnet20", 10, None)
    resnet = tmp_path / "resnet20.safetensors"
    write_state_dict({e.key: np.zeros(e.torch_shape, np.float32) for e in entries}, resnet)
    with pytest.raises(WeightsFileError) as error:
        load_torch_weights("lenet5", resnet, num_classes=10, input_shape=(28, 28, 1))
    assert_one_line(error.value, str(resnet), "does not fit lenet5", "another model?",
                    "conv1.weight: file (16, 3, 3, 3), model (6, 1, 5, 5)")
    state = lenet5_state()
    del state["fc3.weight"]
    with pytest.raises(WeightsFileError) as error:
        load_torch_weights("lenet5", state, input_shape=(28, 28, 1))
    assert_one_line(error.value, "cannot tell lenet5's number of classes from the state_dict")


def test_an_output_weights_file_is_checked_before_any_work(tmp_path):
    from jaxcnn.weights.io import checked_output

    for path, reason in ((tmp_path / "w.npz", "use one of .pth, .pt, .safetensors"),
                         (tmp_path / "missing" / "w.safetensors", "missing does not exist")):
        with pytest.raises(UserError) as error:
            checked_output(path)
        assert_one_line(error.value, str(path), reason)
    variables, _ = load_torch_weights("lenet5", lenet5_state(), input_shape=(28, 28, 1))
    with pytest.raises(WeightsFileError):
        save_torch_weights(variables, "lenet5", tmp_path / "w.npz", input_shape=(28, 28, 1))


@pytest.mark.slow
def test_pretrained_weights_that_cannot_be_used_stop_jaxcnn_train_before_training(tmp_path, monkeypatch, capsys):
    """`jaxcnn train --pretrained FILE`: exit 2 and one line on stderr, no epoch trained."""
    from jaxcnn.cli import main

    bad = safetensors_variants(tmp_path)["truncated"]
    rgb = tmp_path / "lenet5-rgb.safetensors"
    write_state_dict(lenet5_state(channels=3), rgb)
    pickled = torch_files(tmp_path)["a whole model"]
    cases = {bad: "not a readable .safetensors file", rgb: "does not fit lenet5",
             pickled: "holds pickled Python objects", tmp_path / "good.pth": "need PyTorch: `pip install torch`"}
    for index, (weights, message) in enumerate(cases.items()):
        if weights.name == "good.pth":  # a valid file, but torch is not installed
            monkeypatch.setitem(sys.modules, "torch", None)
        run = tmp_path / f"run{index}"
        argv = ["train", "--arch", "lenet5", "--data", "demo", "--epochs", "1", "--batch-size", "32",
                "--pretrained", str(weights), "--out", str(run), "--no-progress"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
        assert not (run / "metrics.csv").exists()
