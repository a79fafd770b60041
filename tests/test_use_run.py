"""Using a trained run: `load_run`, `jaxcnn evaluate / predict / export / compare`, the end-of-run report.

One lenet5 run on the demo set (2 epochs) is trained once for the whole module.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import jaxcnn
from conftest import REPO_ROOT
from jaxcnn.cli import train as train_cli

DEMO = ["--arch", "lenet5", "--data", "demo", "--epochs", "2", "--batch-size", "32", "--lr", "1e-3", "--ema", "0.9",
        "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("use") / "lenet5-demo"
    assert train_cli.main(DEMO + ["--out", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def demo_test():
    from jaxcnn.data import load_data

    return load_data("demo", val_split=0.2, split_seed=42).test


def results(run_dir) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def subprocess_env(devices: int) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


# --------------------------------------------------------------------------------- load_run

def test_load_run_predict_reproduces_the_recorded_test_accuracy(run_dir, demo_test):
    model = jaxcnn.load_run(run_dir)
    recorded = results(run_dir)["best"]
    assert model.epoch == recorded["epoch"] and model.class_names == demo_test.class_names
    assert model.input_shape == (28, 28, 1)
    probabilities = model.predict(demo_test.paths)
    assert probabilities.shape == (400, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    accuracy = np.mean(probabilities.argmax(axis=1) == demo_test.labels)
    assert accuracy == recorded["accuracy"]
    assert recorded["accuracy"] > 0.3  # it learned something: the check above is not chance-level


def test_the_ema_weights_reproduce_their_recorded_test_accuracy(run_dir, demo_test):
    model = jaxcnn.load_run(run_dir, checkpoint="last", ema=True)
    assert model.ema and model.tag == "last-ema"
    accuracy = np.mean(model.predict(demo_test.paths).argmax(axis=1) == demo_test.labels)
    assert accuracy == results(run_dir)["ema"]["accuracy"]
    plain = jaxcnn.load_run(run_dir, checkpoint="last")
    assert not plain.ema and not np.allclose(plain.variables["params"]["fc"]["kernel"],
                                             model.variables["params"]["fc"]["kernel"])


def test_paths_pil_images_and_arrays_are_preprocessed_alike(run_dir, demo_test):
    model = jaxcnn.load_run(run_dir, checkpoint="last", batch_size=5)
    path = demo_test.paths[0]
    gray = np.asarray(Image.open(path))
    rgba = np.dstack([np.repeat(gray[..., None], 3, axis=2), np.full_like(gray, 255)])
    same = model.predict([path, Image.open(path), gray, gray[..., None], rgba])
    np.testing.assert_allclose(same, np.repeat(same[:1], 5, axis=0), atol=1e-6)
    # Any size: a larger photo-like RGB image is resized exactly as the run's evaluation did.
    big = np.asarray(Image.fromarray(gray).resize((90, 70)).convert("RGB"))
    assert model.predict(big).shape == (1, 10)
    # `apply` and the variables, for research use
    logits = model.apply(model.variables, model.inputs.prepare([model.inputs.load(path)]))
    np.testing.assert_allclose(np.asarray(jax.nn.softmax(logits)), same[:1], atol=1e-6)


def test_load_run_rejects_a_bad_checkpoint_or_folder(run_dir, tmp_path):
    with pytest.raises(ValueError, match="'best', 'last' or an epoch number"):
        jaxcnn.load_run(run_dir, checkpoint="newest")
    with pytest.raises(ValueError, match=r"kept epochs \[2\]"):
        jaxcnn.load_run(run_dir, checkpoint=1)
    with pytest.raises(ValueError, match="not a jaxcnn run folder"):
        jaxcnn.load_run(tmp_path)
    with pytest.raises(ValueError, match="uint8"):
        jaxcnn.load_run(run_dir).predict(np.zeros((28, 28), np.float32))


def test_an_old_run_gets_its_inputs_from_its_dataset_and_loading_changes_nothing(run_dir, tmp_path):
    import shutil

    old = tmp_path / "old-run"
    shutil.copytree(run_dir, old, ignore=shutil.ignore_patterns("eval-*", "export"))
    recorded = json.loads((old / "config.json").read_text())
    del recorded["inputs"]  # as runs wrote config.json before load_run existed
    (old / "config.json").write_text(json.dumps(recorded))
    saving = old / "checkpoints" / "3.orbax-checkpoint-tmp-1700000000000000"  # as a run still training has
    saving.mkdir()
    assert jaxcnn.load_run(old).inputs == jaxcnn.load_run(run_dir).inputs
    assert saving.is_dir()  # loading touched nothing


PREDICT_SCRIPT = """
import json, sys
import jax, jaxcnn
model = jaxcnn.load_run(sys.argv[1], batch_size=8)
paths = json.loads(sys.argv[2])
print(json.dumps({"devices": jax.device_count(), "probabilities": model.predict(paths).tolist()}))
"""


def predict_in_subprocess(run, paths, devices: int) -> tuple[int, np.ndarray]:
    proc = subprocess.run([sys.executable, "-c", PREDICT_SCRIPT, str(run), json.dumps(paths)],
                          env=subprocess_env(devices), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out["devices"], np.asarray(out["probabilities"])


def test_a_run_trained_on_one_device_loads_and_predicts_on_two(run_dir, demo_test):
    paths = demo_test.paths[:20]
    devices, probabilities = predict_in_subprocess(run_dir, paths, devices=2)
    assert devices == 2
    np.testing.assert_allclose(probabilities, jaxcnn.load_run(run_dir).predict(paths), atol=1e-6)


@pytest.mark.slow
def test_a_run_trained_on_two_devices_loads_and_predicts_on_one(tmp_path, demo_test):
    run = tmp_path / "two-devices"
    proc = subprocess.run([sys.executable, "-m", "jaxcnn", "train", *DEMO, "--out", str(run)],
                          env=subprocess_env(2), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 cpu device(s)" in (run / "train.log").read_text()
    probabilities = jaxcnn.load_run(run).predict(demo_test.paths)
    assert np.mean(probabilities.argmax(axis=1) == demo_test.labels) == results(run)["best"]["accuracy"]


# --------------------------------------------------------------------------------- evaluate

def test_evaluate_reproduces_the_recorded_test_loss_and_accuracy(run_dir, capsys):
    from jaxcnn.cli import main

    assert main(["evaluate", str(run_dir), "--checkpoint", "best"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((run_dir / "eval-test-best.json").read_text())
    recorded = results(run_dir)["best"]
    assert abs(report["loss"] - recorded["loss"]) < 1e-6
    assert abs(report["accuracy"] - recorded["accuracy"]) < 1e-6
    assert report["confusion_matrix"] == recorded["confusion_matrix"] and report["examples"] == 400
    assert 0 < report["top5_accuracy"] <= 1 and report["top5_accuracy"] >= report["accuracy"]
    assert 0 <= report["expected_calibration_error"] < 1
    per_class = report["per_class"]
    assert [per_class[c]["accuracy"] for c in per_class] == list(recorded["per_class_accuracy"].values())
    assert all(per_class[c]["support"] == 40 for c in per_class)
    for kind in ("confusion", "mistakes", "reliability"):
        assert (run_dir / f"eval-test-best-{kind}.png").stat().st_size > 10_000
    assert f"accuracy {recorded['accuracy']:.4f}" in printed and "| Ankle boot" in printed


def test_evaluate_with_flip_tta_and_bad_options(run_dir, tmp_path, capsys):
    from jaxcnn.cli import main

    assert main(["evaluate", str(run_dir), "--split", "val", "--tta", "flip", "--out-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "eval-val-best-tta.json").read_text())
    assert report["examples"] == 300 and report["tta"] == "flip"
    assert main(["evaluate", str(run_dir), "--checkpoint", "last", "--ema", "--out-dir", str(tmp_path)]) == 0
    report, recorded = json.loads((tmp_path / "eval-test-last-ema.json").read_text()), results(run_dir)["ema"]
    assert report["ema_weights"] and abs(report["loss"] - recorded["loss"]) < 1e-6
    assert report["accuracy"] == recorded["accuracy"]
    other = tmp_path / "other"
    for name in ("cat", "dog"):
        (other / name).mkdir(parents=True)
        Image.fromarray(np.zeros((28, 28), np.uint8)).save(other / name / "0.png")
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--data", str(other), "--split", "train"]) == 2
    assert "has classes cat, dog; the run was trained on T-shirt/top, Trouser" in capsys.readouterr().err
    assert main(["evaluate", str(run_dir), "--checkpoint", "7"]) == 2
    assert "kept epochs [2]" in capsys.readouterr().err


COUNT_CACHE_EVENTS = """
import json, sys
import jax
events = []
jax.monitoring.register_event_listener(lambda name, **_: events.append(name))
from jaxcnn.cli import main
code = main(sys.argv[1:])
counts = {kind: events.count(f"/jax/compilation_cache/cache_{kind}") for kind in ("hits", "misses")}
print("CACHE " + json.dumps(counts))
sys.exit(code)
"""


def test_a_second_command_loads_what_the_first_compiled_and_evaluates_alike(run_dir, tmp_path):
    env = {**subprocess_env(1), "JAXCNN_CACHE_DIR": str(tmp_path / "cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}  # lenet5's programs compile in under the 1 s kept
    env = {k: v for k, v in env.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "JAX_ENABLE_COMPILATION_CACHE")}
    seen = []
    for attempt in ("first", "second"):
        out = tmp_path / attempt
        command = ["evaluate", str(run_dir), "--checkpoint", "last", "--out-dir", str(out)]
        proc = subprocess.run([sys.executable, "-c", COUNT_CACHE_EVENTS, *command],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        line = next(line for line in proc.stdout.splitlines() if line.startswith("CACHE "))
        seen.append((json.loads(line.removeprefix("CACHE ")), json.loads((out / "eval-test-last.json").read_text())))
    (first, first_report), (second, second_report) = seen
    assert first["hits"] == 0 and first["misses"] > 0
    assert second == {"hits": first["misses"], "misses": 0}
    assert list((tmp_path / "cache" / "xla").iterdir())  # one folder, this machine's
    first_report.pop("files"), second_report.pop("files")  # each in its --out-dir
    assert second_report == first_report


def test_classification_metrics_on_a_known_case():
    from jaxcnn.report.classification import calibration, per_class_metrics, topk_accuracy
    from jaxcnn.report.figures import top_confusions

    confusion = np.array([[3, 1, 0], [0, 2, 2], [0, 0, 0]])
    metrics = per_class_metrics(confusion)
    np.testing.assert_allclose(metrics["precision"][:2], [1.0, 2 / 3])
    np.testing.assert_allclose(metrics["recall"][:2], [0.75, 0.5])
    np.testing.assert_allclose(metrics["f1"][:2], [6 / 7, 4 / 7])
    assert np.isnan(metrics["recall"][2]) and metrics["precision"][2] == 0  # never seen; predicted twice, wrongly
    assert top_confusions(confusion, ["a", "b", "c"]) == [("b", "c", 2, 0.5), ("a", "b", 1, 0.25)]

    probabilities = np.array([[0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.2, 0.3, 0.5], [0.1, 0.2, 0.7]])
    labels = np.array([0, 1, 2, 0])
    assert topk_accuracy(labels, probabilities, 1) == 0.5 and topk_accuracy(labels, probabilities, 2) == 0.75
    bins = calibration(labels, probabilities, bins=10)
    # bins: 0.9 right (conf .9), 0.6 wrong (.6), 0.5 right (.5), 0.7 wrong (.7)
    assert bins.ece == pytest.approx((0.1 + 0.6 + 0.5 + 0.7) / 4)


# --------------------------------------------------------------------------------- predict

def test_predict_writes_a_row_per_readable_file_and_lists_the_unreadable(run_dir, demo_test, tmp_path, capsys):
    import csv
    import shutil

    from jaxcnn.cli import main

    photos = tmp_path / "photos"
    (photos / "nested").mkdir(parents=True)
    for i, path in enumerate(demo_test.paths[:5]):
        shutil.copy(path, photos / ("nested" if i % 2 else "") / f"{i}.png")
    (photos / "nested" / "broken.jpg").write_bytes(b"not a jpeg")
    (photos / "notes.txt").write_text("not an image, and not picked up from a folder")
    pattern = os.path.join(os.path.dirname(demo_test.paths[5]), "*.png")
    output = tmp_path / "preds.csv"
    assert main(["predict", str(run_dir), str(photos), pattern, "--topk", "3", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    with open(output) as f:
        rows = list(csv.DictReader(f))
    expected = 5 + len([p for p in demo_test.paths if os.path.dirname(p) == os.path.dirname(demo_test.paths[5])])
    assert len(rows) == expected
    names = demo_test.class_names
    for row in rows:
        probabilities = np.array([float(row[f"p[{name}]"]) for name in names])
        assert abs(probabilities.sum() - 1) < 1e-5
        assert row["predicted"] == row["top1"] == names[int(probabilities.argmax())]
        assert float(row["probability"]) == float(row["top1_probability"]) >= float(row["top3_probability"])
    by_path = {row["path"]: row for row in rows}
    expected_first = jaxcnn.load_run(run_dir).predict([demo_test.paths[0]])[0]
    assert float(by_path[str(photos / "0.png")][f"p[{names[0]}]"]) == pytest.approx(expected_first[0], abs=1e-6)
    unreadable = (tmp_path / "preds-unreadable.csv").read_text()
    assert "broken.jpg,not an image" in unreadable and "notes.txt" not in unreadable
    assert "1 unreadable:" in printed and "broken.jpg: not an image" in printed

    output_json = tmp_path / "preds.json"
    assert main(["predict", str(run_dir), str(photos / "0.png"), str(tmp_path / "missing*.png"),
                 "--output", str(output_json)]) == 0
    written = json.loads(output_json.read_text())
    assert [p["path"] for p in written["predictions"]] == [str(photos / "0.png")]
    assert written["unreadable"] == [{"path": str(tmp_path / "missing*.png"), "reason": "no file matches"}]
    assert main(["predict", str(run_dir), str(photos), "--output", str(tmp_path / "preds.txt")]) == 2
    assert "--output must end in .csv or .json" in capsys.readouterr().err


def test_predict_under_an_ascii_locale_writes_unicode_file_names(run_dir, demo_test, tmp_path):
    """`LANG=C jaxcnn predict RUN <files named in any script> --output p.csv` (old code: the
    predictions were computed, then `'ascii' codec can't encode character`, nothing written)."""
    import csv
    import shutil

    for name, source in zip(("Ω.png", "猫.png"), demo_test.paths):
        shutil.copy(source, tmp_path / name)
    env = {**subprocess_env(1), "PYTHONUTF8": "0", "LANG": "C", "LC_ALL": "C"}  # `open()` and file names: ASCII
    proc = subprocess.run([sys.executable, "-m", "jaxcnn", "predict", str(run_dir), ".", "--output", "p.csv"],
                          env=env, cwd=tmp_path, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    assert "Ω.png".encode() in proc.stdout and b"Wrote 2 predictions to p.csv" in proc.stdout
    with open(tmp_path / "p.csv", encoding="utf-8") as f:
        rows = {os.path.basename(row["path"]): row for row in csv.DictReader(f)}
    expected = jaxcnn.load_run(run_dir).predict(demo_test.paths[:2])[:, 0]
    found = [float(rows[name][f"p[{demo_test.class_names[0]}]"]) for name in ("Ω.png", "猫.png")]
    np.testing.assert_allclose(found, expected, atol=1e-6)


# --------------------------------------------------------------------------------- export

PLAIN_JAX_RUNNER = """
import sys
sys.modules["flax"] = sys.modules["jaxcnn"] = None  # importing flax or jaxcnn now raises ImportError
for name in ("flax", "jaxcnn"):
    try:
        __import__(name)
        raise SystemExit(f"{name} could be imported")
    except ImportError:
        pass
import json
import numpy as np
from jax import export
folder, images, out = sys.argv[1:]
spec = json.load(open(f"{folder}/model.json"))
with open(f"{folder}/{spec['artifact']}", "rb") as f:
    forward = export.deserialize(bytearray(f.read()))
np.save(out, np.asarray(forward.call(np.load(images))))
"""


def test_the_exported_artifact_runs_without_jaxcnn_or_flax(run_dir, demo_test, tmp_path, capsys):
    flatbuffers = pytest.importorskip("flatbuffers", reason="jax.export serialization needs flatbuffers")
    from jaxcnn.cli import main

    assert main(["export", str(run_dir), "--output", str(tmp_path / "export")]) == 0
    assert "uint8 (N, 28, 28, 1) -> probabilities over 10 classes" in capsys.readouterr().out
    spec = json.loads((tmp_path / "export" / "model.json").read_text())
    assert spec["class_names"] == list(demo_test.class_names) and spec["input"]["shape"] == [None, 28, 28, 1]

    model = jaxcnn.load_run(run_dir)
    paths = demo_test.paths[::40]
    np.save(tmp_path / "images.npy", model.inputs.resize([model.inputs.load(p) for p in paths]))
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(flatbuffers.__file__))
    proc = subprocess.run([sys.executable, "-c", PLAIN_JAX_RUNNER, str(tmp_path / "export"),
                           str(tmp_path / "images.npy"), str(tmp_path / "out.npy")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), model.predict(paths), atol=1e-5)


def test_an_export_that_fails_mid_write_leaves_the_old_one(run_dir, tmp_path, monkeypatch):
    """Old code: model.jaxexport was replaced, then writing model.json failed: a new artifact beside
    the old spec (its batch size wrong)."""
    pytest.importorskip("flatbuffers", reason="jax.export serialization needs flatbuffers")
    from jaxcnn.inference.export import export_model

    model, out = jaxcnn.load_run(run_dir), tmp_path / "export"
    export_model(model, out)
    before = {path.name: path.read_bytes() for path in out.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left")

    monkeypatch.setattr(json, "dumps", disk_full)  # model.json fails after model.jaxexport was written
    with pytest.raises(OSError, match="No space left"):
        export_model(model, out, batch_size=4)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before and os.listdir(tmp_path) == ["export"]


# --------------------------------------------------------------------------------- compare

def test_compare_writes_the_figure_and_a_row_per_run(run_dir, tmp_path, capsys):
    import csv
    import shutil

    from jaxcnn.cli import main

    other = tmp_path / "copy" / run_dir.name  # same folder name: the labels must still differ
    shutil.copytree(run_dir, other, ignore=shutil.ignore_patterns("checkpoints", "export"))
    out = tmp_path / "cmp" / "compare.png"
    assert main(["compare", str(run_dir), str(other), "--out", str(out)]) == 0
    assert out.stat().st_size > 20_000
    with open(out.with_suffix(".csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and rows[0]["run"] != rows[1]["run"]
    recorded = results(run_dir)
    for row in rows:
        assert row["arch"] == "lenet5" and int(row["params"]) == 44_426 and int(row["epochs"]) == 2
        assert float(row["test_accuracy_best"]) == recorded["best"]["accuracy"]
        assert float(row["test_accuracy_last"]) == recorded["last"]["accuracy"]
        assert int(row["best_val_epoch"]) in (1, 2) and 0 < float(row["best_val_accuracy"]) <= 1
    markdown = out.with_suffix(".md").read_text()
    assert markdown.count("| lenet5 ") == 2 and "44,426" in markdown
    assert "test acc (best)" in capsys.readouterr().out

    unfinished = tmp_path / "unfinished"  # a run that never finished an epoch; old code: a bug, exit 1
    unfinished.mkdir()
    shutil.copy(run_dir / "config.json", unfinished)
    assert main(["compare", str(run_dir), str(unfinished), "--out", str(out)]) == 2
    assert "has no metrics.csv: not a jaxcnn run folder" in capsys.readouterr().err
    (unfinished / "metrics.csv").write_text("epoch,train_loss\n1,nan?\n")
    assert main(["compare", str(unfinished)]) == 2 and "not a metrics.csv written by" in capsys.readouterr().err
    assert main(["compare", str(run_dir), "--out", "c.svg"]) == 2
    assert capsys.readouterr().err == "error: --out must be a .png file, got 'c.svg'\n"


# --------------------------------------------------------------------------------- end-of-run report

def tensorboard_events(folder) -> list:
    """Every Event of the event files under `folder` (TFRecord framing: length, crc, data, crc)."""
    import struct

    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            events.append(event_pb2.Event.FromString(data[offset + 12:offset + 12 + length]))
            offset += 12 + length + 4
    return events


def test_a_finished_run_reports_its_best_checkpoint(run_dir):
    import csv

    recorded = results(run_dir)["best"]
    assert (run_dir / "confusion.png").stat().st_size > 10_000
    with open(run_dir / "per_class.csv") as f:
        rows = {row["class"]: row for row in csv.DictReader(f)}
    assert list(rows) == list(recorded["per_class_accuracy"])
    for name, accuracy in recorded["per_class_accuracy"].items():
        assert float(rows[name]["accuracy"]) == pytest.approx(accuracy) and int(rows[name]["support"]) == 40
    assert "| T-shirt/top |" in (run_dir / "per_class.md").read_text()

    tags = {value.tag for event in tensorboard_events(run_dir / "tensorboard") for value in event.summary.value}
    assert "confusion_matrix/test_best" in tags
    assert {"_hparams_/experiment", "_hparams_/session_start_info", "hparam/best_accuracy"} <= tags


# ----------------------------------------------------------------------------- export-torch

def test_export_torch_round_trip_keeps_the_test_accuracy(run_dir, demo_test, tmp_path):
    """jaxcnn -> torchvision-format file -> torch gives the recorded test accuracy -> back into
    jaxcnn gives it again (and torch's strict load accepts the file)."""
    torch = pytest.importorskip("torch")
    import safetensors.numpy

    from jaxcnn.cli import main as jaxcnn_main
    from jaxcnn.weights import load_torch_weights
    from jaxcnn.weights.torch_models import torch_model

    recorded = results(run_dir)["best"]["accuracy"]
    model = jaxcnn.load_run(run_dir)
    images = model.inputs.prepare([model.inputs.load(path) for path in demo_test.paths])  # normalized NHWC
    for name in ("lenet5.safetensors", "lenet5.pth"):
        path = tmp_path / name
        assert jaxcnn_main(["export-torch", str(run_dir), str(path)]) == 0
        twin = torch_model("lenet5", 10, image_size=28, channels=1).eval()
        state_dict = (torch.load(path, weights_only=True) if name.endswith(".pth")
                      else {k: torch.from_numpy(v) for k, v in safetensors.numpy.load_file(str(path)).items()})
        twin.load_state_dict(state_dict, strict=True)
        with torch.no_grad():
            logits = twin(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
        assert np.mean(logits.argmax(axis=1) == demo_test.labels) == recorded

        variables, report = load_torch_weights("lenet5", path, input_shape=(28, 28, 1))
        assert not report.newly_initialized and not report.missing
        back = np.asarray(model.model.apply(variables, images, train=False)).argmax(axis=1)
        assert np.mean(back == demo_test.labels) == recorded


def test_export_torch_prints_how_to_build_load_and_feed_the_twin(run_dir, demo_test, tmp_path, capsys):
    """The printed lines run as they are, and the printed mean / std give the run's predictions."""
    torch = pytest.importorskip("torch")
    import re

    from jaxcnn.cli import main as jaxcnn_main

    path = tmp_path / "lenet5.safetensors"
    assert jaxcnn_main(["export-torch", str(run_dir), str(path)]) == 0
    printed = capsys.readouterr().out
    code = "\n".join(line[4:] for line in printed.split("Load it in PyTorch:\n")[1].splitlines() if
                     line.startswith("    ") and not line.startswith("    mean"))
    namespace = {}
    exec(code, namespace)
    mean, std = (np.array(json.loads(v)) for v in re.search(r"mean (\[.*?\]), std (\[.*?\])", printed).groups())
    assert "float32 NCHW batches (N, 1, 28, 28)" in printed
    model = jaxcnn.load_run(run_dir)
    pixels = np.stack([model.inputs.resize([model.inputs.load(p)])[0] for p in demo_test.paths[::10]])
    x = ((pixels / 255.0 - mean) / std).astype(np.float32).transpose(0, 3, 1, 2)
    with torch.no_grad():
        logits = namespace["model"](torch.from_numpy(x)).numpy()
    expected = np.log(model.predict(demo_test.paths[::10]))
    np.testing.assert_allclose(logits - logits.max(1, keepdims=True), expected - expected.max(1, keepdims=True),
                               atol=2e-3)


def test_a_demo_run_has_fashion_mnists_class_names_and_evaluates_on_it(run_dir, tmp_path):
    from jaxcnn.cli import main
    from jaxcnn.data.mnist import FASHION_MNIST

    assert jaxcnn.load_run(run_dir).class_names == FASHION_MNIST.class_names
    if not os.path.isdir("/usr/share/datasets/fashion-mnist"):
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    assert main(["evaluate", str(run_dir), "--data", "fashion_mnist", "--out-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "eval-fashion_mnist-test-best.json").read_text())
    assert report["examples"] == 10_000 and report["accuracy"] > 0.3 and "T-shirt/top" in report["per_class"]


def test_tensorboard_loads_the_runs_event_files(run_dir):
    """`tensorboard --logdir runs` (the `tensorboard` extra) shows what jaxcnn wrote with tensorboardX."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    (events,) = (run_dir / "tensorboard").glob("events.out.tfevents.*")
    loaded = accumulator.EventAccumulator(str(events), size_guidance={accumulator.SCALARS: 0})
    loaded.Reload()
    epochs = results(run_dir)["epochs_completed"]
    scalars = loaded.Tags()["scalars"]
    assert {"loss/train", "accuracy/val", "lr"} <= set(scalars), scalars
    assert [event.step for event in loaded.Scalars("loss/train")] == list(range(1, epochs + 1))
    assert "confusion_matrix/test_best" in loaded.Tags()["images"]
