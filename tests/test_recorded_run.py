"""A run folder written by an earlier jaxcnn (tests/fixtures/run-lenet5-demo: lenet5 on the demo
data, 2 epochs, an EMA and a backbone LR scale, figures removed) is loaded, evaluated, exported
and used as a config by this one. A change that cannot read the runs users already have fails here.
"""

import json
import pathlib
import shutil

import jax
import numpy as np
import pytest

import jaxcnn
from jaxcnn.cli import main

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "run-lenet5-demo"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> pathlib.Path:
    """A copy, so that the commands' outputs never land in the repository."""
    copy = tmp_path_factory.mktemp("recorded") / FIXTURE.name
    shutil.copytree(FIXTURE, copy)
    return copy


@pytest.fixture(scope="module")
def demo_test():
    from jaxcnn.data import load_data

    return load_data("demo", val_split=0.2, split_seed=42).test


def recorded(run) -> dict:
    return json.loads((run / "results.json").read_text())


def test_the_recorded_run_predicts_its_recorded_accuracies(run, demo_test):
    for checkpoint, ema, entry in (("best", False, "best"), ("last", True, "ema")):
        model = jaxcnn.load_run(run, checkpoint=checkpoint, ema=ema)
        accuracy = np.mean(model.predict(demo_test.paths).argmax(axis=1) == demo_test.labels)
        assert accuracy == recorded(run)[entry]["accuracy"], entry


def test_the_recorded_run_evaluates_and_exports(run, demo_test, tmp_path):
    assert main(["evaluate", str(run), "--out-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "eval-test-best.json").read_text())
    assert abs(report["loss"] - recorded(run)["best"]["loss"]) < 1e-5
    assert report["accuracy"] == recorded(run)["best"]["accuracy"]

    assert main(["export", str(run), "--output", str(tmp_path / "export")]) == 0
    exported = jax.export.deserialize((tmp_path / "export" / "model.jaxexport").read_bytes())
    model = jaxcnn.load_run(run)
    paths = demo_test.paths[::50]
    images = model.inputs.resize([model.inputs.load(p) for p in paths])
    np.testing.assert_allclose(np.asarray(exported.call(images)), model.predict(paths), atol=1e-5)


def test_its_config_starts_a_new_run_with_another_seed(run, tmp_path, monkeypatch):
    """README: `jaxcnn train --config runs/demo/config.json --seed 1` repeats a run with another seed."""
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in run.iterdir())
    assert main(["train", "--config", str(run / "config.json"), "--seed", "1", "--epochs", "1", "--no-progress"]) == 0
    (new,) = (tmp_path / "runs").iterdir()
    config = json.loads((new / "config.json").read_text())["config"]
    assert config["seed"] == 1 and pathlib.Path(config["out"]).name == new.name
    assert config["finetune"]["backbone_lr_scale"] == 0.5 and config["loop"]["ema_decay"] == 0.9
    assert sorted(p.name for p in run.iterdir()) == before
