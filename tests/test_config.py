"""One config: sections that validate themselves, files with flag overrides, `--print-config`,
what `--resume` accepts, `--val-split 0`, and the `jaxcnn` command."""

import csv
import json
import subprocess
import sys

import pytest
import yaml

import jaxcnn
from jaxcnn.run_config import RunConfig, default_values
from jaxcnn.cli import main as jaxcnn_main
from jaxcnn.cli.options import flag_names
from jaxcnn.cli.train import main
from jaxcnn.config import ConfigError, load_file, to_dict
from jaxcnn.report.run_log import write_json

BASE = ["--arch", "lenet5", "--data", "demo"]
DEMO = BASE + ["--batch-size", "32", "--lr", "1e-3", "--no-progress", "--early-stop-patience", "0"]


def printed_config(capsys, argv) -> dict:
    assert main(argv + ["--print-config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_help_lists_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit.value.code == 0 and "--plateau-patience" in out and "[default: 0.0001]" in out
    assert "rrc[:MIN_AREA_%]" in out


def test_every_option_has_one_flag_and_help():
    names = flag_names(RunConfig)
    assert len(set(names.values())) == len(names)  # no two options share a flag
    for flag in ("--arch", "--model-opt", "--data", "--data-dir", "--lr", "--batch-size", "--optimizer",
                 "--plateau-patience", "--epochs", "--best-metric", "--seed", "--out"):
        assert flag in names.values()
    assert names["optim.learning_rate"] == "--lr" and names["optim.plateau.metric"] == "--plateau-metric"


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_defaults_round_trip_through_a_file(tmp_path, capsys, suffix):
    config = RunConfig.from_dict({"model": {"arch": "resnet20", "options": {}}, "data": {"name": "demo"},
                                  "optim": {"milestones": [3, 5], "schedule": "step"}})
    path = tmp_path / f"config{suffix}"
    if suffix == ".json":  # the run folder's layout: {"config": ..., "environment": ...}
        write_json(path, {"config": config.to_dict(), "environment": {"jax": "x"}})
    else:
        path.write_text(yaml.safe_dump(config.to_dict()))
    assert RunConfig.from_dict(load_file(path)) == config
    assert printed_config(capsys, ["--config", str(path)]) == config.to_dict()


def test_flags_override_the_file_and_print_config_is_a_valid_config(tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text("model: {arch: resnet20, options: {}}\ndata: {name: demo, batch_size: 128}\n"
                    "optim: {name: sgd, learning_rate: 0.1, momentum: 0.9}\nseed: 3\n")
    values = printed_config(capsys, ["--config", str(path), "--lr", "0.05", "--seed", "1"])
    assert values["optim"]["learning_rate"] == 0.05 and values["optim"]["name"] == "sgd"
    assert values["seed"] == 1 and values["data"]["batch_size"] == 128

    printed = tmp_path / "printed.yaml"
    assert main(["--config", str(path), "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "#   optim.learning_rate: 0.1 (default 0.0001)" in out  # what differs, as YAML comments
    printed.write_text(out)
    assert printed_config(capsys, ["--config", str(printed)]) == yaml.safe_load(out)


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--epochs", "0"], "--epochs"),
        (["--epochs", "-1"], "--epochs"),
        (["--image-size", "0"], "--image-size"),
        (["--lr", "nan"], "--lr"),
        (["--lr", "inf"], "--lr"),
        (["--lr", "-1"], "--lr"),
        (["--batch-size", "0"], "--batch-size"),
        (["--val-split", "1.5"], "--val-split"),
        (["--arch", "vgg61"], "--arch"),
        (["--optimizer", "rmsprop"], "--optimizer"),
        (["--schedule", "linear"], "--schedule"),
        (["--best-metric", "val_acc"], "--best-metric"),
        (["--plateau-metric", "loss"], "--plateau-metric"),
        (["--model-opt", "stm=cifar"], "--model-opt"),
        (["--data", "fashion-mnist"], "--data"),
        (["--warmup-epochs", "60"], "--warmup-epochs"),
        (["--batch-size", "big"], "--batch-size"),
        (["--workers", "-2"], "--workers"),
        (["--seed", "-1"], "--seed"),
    ],
)
def test_an_invalid_value_is_one_line_naming_the_flag(tmp_path, capsys, argv, flag):
    out = tmp_path / "run"
    assert main(BASE + ["--out", str(out)] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {flag}: ") and "\n" not in err
    assert not out.exists()


def test_a_recipe_is_a_config_file_that_flags_override(capsys):
    values = printed_config(capsys, ["--recipe", "cifar-resnet", "--arch", "resnet56", "--epochs", "3"])
    assert values["model"]["arch"] == "resnet56" and values["loop"]["epochs"] == 3
    assert values["optim"] == {**default_values()["optim"], "name": "sgd", "learning_rate": 0.1,
                               "weight_decay": 0.0001, "schedule": "step", "milestones": [100, 150]}
    assert values["data"]["batch_size"] == 128 and values["data"]["name"] == "cifar10"
    assert main(["--recipe", "cifar-resnt", "--print-config"]) == 2
    assert "error: --recipe: unknown recipe 'cifar-resnt'. Did you mean 'cifar-resnet'?" in capsys.readouterr().err


def test_unknown_names_suggest_the_closest_valid_one(capsys):
    assert main(BASE + ["--optimizer", "adm"]) == 2
    assert "Did you mean 'adam'?" in capsys.readouterr().err
    assert main(["--arch", "resnet20", "--data", "fashion-mnist"]) == 2
    assert "Did you mean 'fashion_mnist'?" in capsys.readouterr().err


def test_a_config_file_key_that_is_not_an_option_is_named(tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"model": {"arch": "lenet5"}, "optim": {"lr": 0.1}}))
    assert main(["--config", str(path), "--data", "demo"]) == 2
    assert "optim.lr: unknown option. Did you mean 'learning_rate'?" in capsys.readouterr().err


def test_required_options_and_library_errors_name_the_option():
    with pytest.raises(ConfigError, match="model.arch: is required"):
        RunConfig().require_complete()
    with pytest.raises(ConfigError, match=r"^optim\.plateau\.factor: must be in \(0\.0, 1\.0\)"):
        RunConfig.from_dict({"optim": {"plateau": {"factor": 1.5}}})
    assert default_values()["loop"]["epochs"] == 55 and to_dict(RunConfig())["model"]["arch"] is None


@pytest.mark.parametrize("make", ["missing", "not_a_run", "corrupt"])
def test_resume_of_something_that_is_not_a_run_is_one_line(tmp_path, capsys, make):
    run = tmp_path / "run"
    if make != "missing":
        run.mkdir()
    if make == "corrupt":
        (run / "config.json").write_text('{"config": {"model": ')
    assert main(["--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a jaxcnn run folder" in err and "\n" not in err


def test_resume_extends_a_finished_run_and_refuses_other_changes(tmp_path, capsys):
    extended, straight = tmp_path / "extended", tmp_path / "straight"
    assert main(DEMO + ["--epochs", "2", "--out", str(extended)]) == 0
    capsys.readouterr()

    assert main(["--resume", str(extended), "--arch", "vgg16", "--lr", "0.5", "--batch-size", "8",
                 "--out", str(tmp_path / "elsewhere"), "--epochs", "4"]) == 2
    err = capsys.readouterr().err
    for conflict in ("--arch (recorded: lenet5)", "--lr (recorded: 0.001)", "--batch-size (recorded: 32)",
                     f"--out (recorded: {extended})"):
        assert conflict in err
    assert "--epochs" not in err.split("change it:")[1].split(".")[0]  # --epochs may change

    # A new run from the finished one's config.json: same options, another seed, a new folder.
    again = printed_config(capsys, ["--config", str(extended / "config.json"), "--seed", "1"])
    recorded = json.loads((extended / "config.json").read_text())["config"]
    assert again == {**recorded, "seed": 1, "out": None}

    assert main(["--resume", str(extended), "--epochs", "4", "--lr", "1e-3", "--prefetch", "3", "--no-progress"]) == 0
    assert main(DEMO + ["--epochs", "4", "--out", str(straight)]) == 0
    rows = [list(csv.DictReader(open(run / "metrics.csv"))) for run in (extended, straight)]
    keys = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"]
    assert len(rows[0]) == len(rows[1]) == 4
    for got, want in zip(*rows):
        assert [float(got[k]) for k in keys] == pytest.approx([float(want[k]) for k in keys], rel=1e-6, abs=1e-7)
    assert json.loads((extended / "config.json").read_text())["config"]["loop"]["epochs"] == 4


def test_val_split_zero_trains_on_everything_and_watches_the_training_loss(tmp_path):
    run = tmp_path / "run"
    assert main(DEMO + ["--epochs", "2", "--val-split", "0", "--out", str(run)]) == 0
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [row["val_loss"] for row in rows] == ["", ""] and all(float(row["train_loss"]) > 0 for row in rows)
    log = (run / "train.log").read_text()
    assert log.count("No validation set") == 1 and "1500 train / 0 val / 400 test" in log
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["loop"]["best_metric"] == "train_loss" and config["optim"]["plateau"]["metric"] == "train_loss"
    results = json.loads((run / "results.json").read_text())
    best = min(rows, key=lambda row: float(row["train_loss"]))
    assert results["split"] == "test" and results["best"]["epoch"] == int(best["epoch"])


def test_the_jaxcnn_command_dispatches_and_lists_its_commands(capsys):
    assert jaxcnn_main(["--help"]) == 0
    assert "train" in capsys.readouterr().out
    assert jaxcnn_main(["trian"]) == 2
    assert "Did you mean 'train'?" in capsys.readouterr().err
    assert jaxcnn_main(["summary", "--arch", "lenet5", "--num-classes", "10", "--input-size", "32"]) == 0
    assert "Total params: 62,006" in capsys.readouterr().out
    console = subprocess.run([sys.executable, "-m", "jaxcnn", "train", *BASE, "--print-config"],
                             capture_output=True, text=True, check=True)
    assert yaml.safe_load(console.stdout)["model"]["arch"] == "lenet5"
    assert jaxcnn.RunConfig is RunConfig
