"""A start that fails on the user's input claims nothing; a config means what it says; a bug is
not reported as a user error.

Each case here failed before the run was derived once and built before its folder was claimed:
a stub (`.lock`, `checkpoints/`, an empty `train.log`) blocked the corrected rerun, a quoted
"false" turned Nesterov on, and every ValueError (a bug's too) became one line and exit 2.
"""

import json

import pytest

from jaxcnn.cli import main
from jaxcnn.cli.errors import run_reporting_errors
from jaxcnn.config import ConfigError, load_file
from jaxcnn.errors import UserError
from jaxcnn.run_config import RunConfig

TINY = ["--data", "demo", "--epochs", "1", "--batch-size", "32", "--lr", "1e-3", "--no-progress"]


@pytest.mark.parametrize("case, flags, says", [
    ("weights that are not a weights file", ["--arch", "lenet5", "--pretrained", "{bad}"], "bad.safetensors"),
    ("an image size below the model's minimum", ["--arch", "vgg11", "--image-size", "16"], "at least 32x32"),
    ("a batch whose step does not fit in memory", ["--arch", "lenet5", "--image-size", "2048", "--batch-size", "512"],
     "--image-size"),
])
def test_a_start_that_fails_on_its_input_leaves_no_folder(tmp_path, capsys, case, flags, says):
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    out = tmp_path / "run"
    flags = [flag.format(bad=tmp_path / "bad.safetensors") for flag in flags]
    assert main(["train", *TINY, *flags, "--out", str(out)]) == 2, case
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1, err
    assert not out.exists()  # so the corrected command runs as it is


def test_missing_data_claims_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    (tmp_path / "empty").mkdir()
    assert main(["train", "--arch", "resnet20", "--data", "cifar10", "--data-dir", str(tmp_path / "empty"),
                 "--out", str(out)]) == 2
    assert "cifar" in capsys.readouterr().err.lower()
    assert not out.exists()


def test_a_failure_after_the_claim_removes_what_the_start_wrote(tmp_path, monkeypatch, capsys):
    """Anything that fails before the first checkpoint (here: the first epoch) leaves the folder
    as it found it: absent when the start created it."""
    import jaxcnn.experiment

    def failing_fit(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(jaxcnn.experiment, "fit", failing_fit)
    out = tmp_path / "run"
    assert main(["train", "--arch", "lenet5", *TINY, "--out", str(out)]) == 1
    assert not out.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    assert main(["train", "--arch", "lenet5", *TINY, "--out", str(existing)]) == 1
    assert existing.is_dir() and not any(existing.iterdir())


def test_a_quoted_boolean_is_refused_not_truthy(tmp_path):
    with pytest.raises(ConfigError, match=r"optim.nesterov: must be true or false, got 'false' \(str\)"):
        RunConfig.from_dict({"optim": {"name": "sgd", "nesterov": "false"}})
    with pytest.raises(ConfigError, match="seed: must be an integer"):
        RunConfig.from_dict({"seed": "1"})
    assert RunConfig.from_dict({"optim": {"learning_rate": 1}}).optim.learning_rate == 1.0  # an int is a number
    config = tmp_path / "c.yaml"
    config.write_text("model: {arch: lenet5}\ndata: {name: demo}\noptim: {name: sgd, nesterov: 'false'}\n")
    assert main(["train", "--config", str(config)]) == 2


def test_a_runs_config_starts_a_new_folder(tmp_path):
    recorded = tmp_path / "config.json"
    recorded.write_text(json.dumps({"config": {"model": {"arch": "lenet5"}, "out": "runs/demo"}, "environment": {}}))
    assert "out" not in load_file(recorded) and load_file(recorded)["model"] == {"arch": "lenet5"}


def test_a_user_error_is_one_line_and_a_bug_keeps_its_traceback(capsys):
    def user_mistake():
        raise UserError("data.dir X does not exist")

    def bug():
        raise ValueError("an internal invariant broke")

    assert run_reporting_errors(user_mistake, {"data.dir": "--data-dir"}) == 2
    assert capsys.readouterr().err == "error: --data-dir X does not exist\n"
    assert run_reporting_errors(bug, {}) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ValueError: an internal invariant broke" in err and "this is a bug" in err
