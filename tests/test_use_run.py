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

DEMO = ["--arch", "lenet5", "--data", "demo", "--epochs", "2", "--batch-size", "32", "--lr", "1e-3", "--no-progress"]


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
