"""End to end: `scripts/train.py` on the embedded demo and on a Kaggle-layout cat-and-dog folder
(killed-and-resumed runs: test_run_faults.py)."""

import csv
import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from scripts.train import main

DEMO = ["--arch", "lenet5", "--data", "demo", "--batch-size", "32", "--lr", "1e-3", "--no-progress"]


def read_metrics(run_dir) -> list[dict]:
    with open(pathlib.Path(run_dir) / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_demo_run_learns_and_writes_the_run_folder(tmp_path):
    run = tmp_path / "run"
    assert main(DEMO + ["--epochs", "3", "--out", str(run)]) == 0

    rows = read_metrics(run)
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert rows[-1]["val_accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert all(row["images_per_second"] > 0 and row["lr"] == pytest.approx(1e-3) for row in rows)

    config = json.loads((run / "config.json").read_text())
    assert config["config"]["model"]["arch"] == "lenet5" and config["environment"]["devices"]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "curves.png").stat().st_size > 0
    assert "Epoch 3/3 | train loss" in (run / "train.log").read_text()

    results = json.loads((run / "results.json").read_text())
    assert results["split"] == "test" and results["epochs_completed"] == 3
    best_epoch = max(rows, key=lambda row: row["val_accuracy"])["epoch"]
    assert results["best"]["epoch"] == best_epoch and results["last"]["epoch"] == 3
    for tag in ("best", "last"):
        assert results[tag]["examples"] == 400
        assert len(results[tag]["per_class_accuracy"]) == 10
        assert np.sum(results[tag]["confusion_matrix"]) == 400
    kept = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    assert kept == sorted({best_epoch, 3})
    assert not (run / "skipped_files.txt").exists()


def write_catdog(root: pathlib.Path, per_class: int) -> None:
    """The Kaggle "cat-and-dog" layout with real-looking photos (gradients + noise, varied sizes)."""
    rng = np.random.default_rng(0)
    for split, n in (("training_set", per_class), ("test_set", per_class // 2)):
        for label, name in enumerate(("cats", "dogs")):
            folder = root / split / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                h, w = rng.integers(60, 120, size=2)
                base = np.linspace(0, 255, w)[None, :, None] * (1 - label) + 40 * label
                image = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(image).save(folder / f"{name[:-1]}.{i}.jpg", quality=90)
    (root / "training_set" / "training_set" / "cats" / "_DS_Store.jpg").write_bytes(b"not an image")


def test_catdog_vgg16_end_to_end(tmp_path):
    data = tmp_path / "catdog"
    write_catdog(data, per_class=12)
    run = tmp_path / "run"
    code = main(["--arch", "vgg16", "--data", "catdog", "--data-dir", str(data), "--image-size", "32",
                 "--epochs", "1", "--batch-size", "4", "--out", str(run), "--no-progress"])
    assert code == 0
    results = json.loads((run / "results.json").read_text())
    assert results["split"] == "test" and results["best"]["examples"] == 12
    assert set(results["best"]["per_class_accuracy"]) == {"cats", "dogs"}
    assert "_DS_Store.jpg" in (run / "skipped_files.txt").read_text()
    assert results["skipped_files"] == 1


def test_missing_catdog_prints_the_expected_layout(tmp_path, capsys):
    assert main(["--arch", "vgg16", "--data", "catdog", "--data-dir", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "training_set" in err and "kaggle" in err.lower()
    assert "point --data-dir at" in err and "data.dir" not in err  # library names become flags


def test_unknown_arch_lists_valid_names(tmp_path, capsys):
    assert main(["--arch", "vgg61", "--data", "demo", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "vgg16" in err and "resnet20" in err


def test_bfloat16_compute_trains(tmp_path):
    run = tmp_path / "bf16"
    assert main(DEMO + ["--epochs", "2", "--dtype", "bfloat16", "--out", str(run)]) == 0
    assert read_metrics(run)[-1]["val_accuracy"] > 0.5
    assert json.loads((run / "config.json").read_text())["config"]["model"]["dtype"] == "bfloat16"
