"""jaxcnn.report.summary and scripts/summary.py: per-layer table and totals, traced only."""

import importlib.util
import pathlib

import pytest

from jaxcnn.models import create_model
from jaxcnn.report import format_summary, summarize

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "summary.py"


def test_lenet_rows_totals_and_activation_estimate():
    summary = summarize(create_model("lenet5", 10), (32, 32, 3), batch_size=4)
    assert [(r.name, r.kind, r.output_shape, r.params) for r in summary.rows] == [
        ("conv1", "Conv", (4, 28, 28, 6), 456),
        ("conv2", "Conv", (4, 10, 10, 16), 2_416),
        ("fc1", "Dense", (4, 120), 48_120),
        ("fc2", "Dense", (4, 84), 10_164),
        ("fc", "Dense", (4, 10), 850),
    ]
    assert summary.total_params == summary.trainable_params == 62_006
    assert summary.non_trainable == 0
    # 2 (fwd+bwd) x 4 images x (28*28*6 + 10*10*16 + 120 + 84 + 10) floats x 4 bytes
    assert summary.activation_bytes == 2 * 4 * 6_518 * 4


def test_depth_groups_rows_and_keeps_every_parameter():
    summary = summarize(create_model("resnet50", 1000), (224, 224, 3), depth=1)
    names = [r.name for r in summary.rows]
    assert names[:3] == ["stem_conv", "stem_norm", "stage1_block1"] and names[-1] == "fc"
    assert summary.rows[-2].output_shape == (1, 7, 7, 2048)
    assert sum(r.params for r in summary.rows) == summary.total_params == 25_557_032
    assert summary.non_trainable == 2 * 26_560      # running mean + var of every BN channel


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("summary_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_prints_table_and_totals(script, capsys):
    assert script.main(["--arch", "vgg16_catdog", "--num-classes", "2", "--input-size", "224"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 16,526,466" in out and "stage1_conv1/conv (Conv)" in out

    args = ["--arch", "vgg11", "--num-classes", "1000", "--input-size", "64", "96",
            "--channels", "1", "--option", "head=classic", "--depth", "1"]
    assert script.main(args) == 0
    out = capsys.readouterr().out
    assert "Total params: 132,867,688" in out      # 132,868,840 minus 2 * 9 * 64 input weights
    assert "(1, 64, 96, 1)" in out

    assert script.main(["--arch", "vgg", "--num-classes", "2", "--input-size", "224"]) == 2
    assert "unknown model 'vgg'" in capsys.readouterr().err
    assert script.main(["--arch", "vgg11", "--num-classes", "2", "--input-size", "16"]) == 2
    assert "at least 32x32" in capsys.readouterr().err


def test_format_summary_title():
    text = format_summary(summarize(create_model("resnet20", 10), (32, 32, 3)), "resnet20")
    assert text.splitlines()[1] == "resnet20"
    assert "Total params: 269,722" in text


@pytest.mark.parametrize("bad", [["--input-size", "1", "2", "3"], ["--option", "head"]])
def test_script_rejects_bad_arguments(script, bad):
    with pytest.raises(SystemExit):
        script.main(["--arch", "vgg11", "--num-classes", "2", "--input-size", "32", *bad])


def test_classes_and_input_size_default_to_the_architectures_usual_data(script, capsys):
    assert script.main(["--arch", "lenet5"]) == 0  # PyTorch's CIFAR-10 tutorial: 10 classes, 32x32x3
    out = capsys.readouterr().out
    assert "lenet5 (10 classes)" in out and "Total params: 62,006" in out and "(1, 32, 32, 3)" in out
    assert script.main(["--arch", "resnet50", "--depth", "1"]) == 0  # ImageNet
    out = capsys.readouterr().out
    assert "Total params: 25,557,032" in out and "(1, 224, 224, 3)" in out
    assert script.main(["--arch", "resnet20"]) == 0 and "Total params: 269,722" in capsys.readouterr().out
    assert script.main(["--arch", "vgg16_catdog"]) == 0 and "Total params: 16,526,466" in capsys.readouterr().out
    assert script.main(["--arch", "lenet5", "--input-size", "28", "--channels", "1"]) == 0  # the demo's images
    assert "Total params: 44,426" in capsys.readouterr().out


def test_every_model_has_usual_data():
    from jaxcnn.models import list_models
    from jaxcnn.models.registry import USUAL_DATA

    assert sorted(USUAL_DATA) == sorted(list_models())
