"""A dataset's training preset: the optimizer and learning rate that fit it where the user sets
none (flags, `--config` and `--recipe` all count as set), for the command line and the library."""

import logging

import pytest
import yaml

import jaxcnn.experiment
from jaxcnn.builder import RunConfig
from jaxcnn.cli.train import main
from jaxcnn.data.presets import training_preset
from jaxcnn.experiment import recorded_config


def printed(capsys, argv) -> tuple[dict, str]:
    assert main(argv + ["--print-config"]) == 0
    out = capsys.readouterr().out
    return yaml.safe_load(out), out


@pytest.mark.parametrize("name", ["demo", "mnist", "fashion_mnist", "cifar10", "cifar100"])
def test_small_image_datasets_train_with_adam_1e3_unless_told_otherwise(name):
    config = RunConfig.from_dict({"model": {"arch": "lenet5"}, "data": {"name": name}})
    assert (config.optim.name, config.optim.learning_rate) == ("adam", 1e-3)
    given = RunConfig.from_dict({"model": {"arch": "lenet5"}, "data": {"name": name},
                                 "optim": {"learning_rate": 3e-4}})
    assert (given.optim.name, given.optim.learning_rate) == ("adam", 3e-4)


def test_catdog_and_image_folders_keep_the_tutorials_adam_1e4(tmp_path):
    for name in ("catdog", str(tmp_path)):
        config = RunConfig.from_dict({"model": {"arch": "vgg16"}, "data": {"name": name}})
        assert (config.optim.name, config.optim.learning_rate) == ("adam", 1e-4)
        assert training_preset(config.to_dict()) == {}


def test_another_optimizer_does_not_take_the_presets_learning_rate():
    values = {"model": {"arch": "resnet20"}, "data": {"name": "cifar10"}, "optim": {"name": "sgd"}}
    assert training_preset(values) == {}
    assert RunConfig.from_dict(values).optim.learning_rate == 1e-4  # the default, not Adam's 1e-3
    assert training_preset({"data": {"name": "cifar10"}, "optim": {"name": "adam"}}) == {"optim.learning_rate": 1e-3}


def test_a_recorded_config_is_read_back_as_it_was():
    """A run's config.json holds every option: an old demo run at 1e-4 resumes at 1e-4."""
    old = RunConfig.from_dict({"model": {"arch": "lenet5"}, "data": {"name": "demo"},
                               "optim": {"learning_rate": 1e-4}})
    assert RunConfig.from_dict(recorded_config(old)).optim.learning_rate == 1e-4


def test_the_command_line_names_what_came_from_the_preset(capsys):
    values, out = printed(capsys, ["--arch", "lenet5", "--data", "demo"])
    assert values["optim"]["learning_rate"] == 1e-3 and values["optim"]["name"] == "adam"
    assert "# From the demo preset (not set by flags, --config or --recipe): --optimizer adam --lr 0.001\n" in out

    values, out = printed(capsys, ["--arch", "lenet5", "--data", "demo", "--lr", "5e-4"])
    assert values["optim"]["learning_rate"] == 5e-4 and "--optimizer adam" in out and "--lr 0.001" not in out


def test_config_files_and_recipes_count_as_set(tmp_path, capsys):
    path = tmp_path / "mine.yaml"
    path.write_text("model: {arch: lenet5}\ndata: {name: fashion_mnist}\noptim: {learning_rate: 0.02}\n")
    values, _ = printed(capsys, ["--config", str(path)])
    assert values["optim"]["learning_rate"] == 0.02

    values, out = printed(capsys, ["--recipe", "cifar-resnet"])  # He et al.'s SGD 0.1 on CIFAR-10
    assert (values["optim"]["name"], values["optim"]["learning_rate"]) == ("sgd", 0.1) and "preset" not in out
    values, _ = printed(capsys, ["--recipe", "cifar-resnet", "--data", "demo"])
    assert (values["optim"]["name"], values["optim"]["learning_rate"]) == ("sgd", 0.1)


def test_the_start_of_a_run_says_which_values_came_from_the_preset(monkeypatch, capsys, tmp_path):
    started = {}

    def run(config, **kwargs):  # stands in for the whole run: what it is given and would record
        started["recorded"] = recorded_config(config)
        logging.getLogger("jaxcnn").info("the run starts")

    monkeypatch.setattr(jaxcnn.experiment, "run", run)
    assert main(["--arch", "lenet5", "--data", "mnist", "--out", str(tmp_path / "run")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["From the mnist preset (not set by flags, --config or --recipe): --optimizer adam --lr 0.001",
                     "the run starts"]
    assert started["recorded"]["optim"]["learning_rate"] == 1e-3 and started["recorded"]["optim"]["name"] == "adam"
