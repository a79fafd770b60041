"""The feature x command matrix: each training feature trains one tiny run, and every command that
reads a run is used on it and checked against the others (tests/test_feature_matrix.py).

Run on its own (`python tests/feature_matrix.py NAME WORKDIR`) it trains the row NAME and runs
its commands in this process, printing the cells as JSON: the rows that need another process
setup (2 devices) go through that.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys

import numpy as np

TINY = ["--arch", "lenet5", "--epochs", "1", "--batch-size", "8", "--lr", "1e-3", "--no-progress"]
CLASSES, TRAIN_PER_CLASS, TEST_PER_CLASS = 3, 24, 8

# row -> the training flags it adds (after --data FOLDER and TINY; later flags win). Several
# features share a row where they compose; every row meets every command.
ROWS = {
    "plain": [],
    "finetune": ["--pretrained", "{weights}", "--freeze-backbone-epochs", "1", "--backbone-lr-scale", "0.1",
                 "--ema", "0.9", "--best-metric", "val_accuracy_ema"],
    "recipe": ["--mixup", "0.2", "--cutmix", "1.0", "--label-smoothing", "0.1", "--grad-accum-steps", "3",
               "--schedule", "onecycle"],
    "no-val-bf16": ["--val-split", "0", "--dtype", "bfloat16", "--schedule", "plateau"],
    "device-auto": ["--cache", "--input-pipeline", "device", "--batch-size", "auto"],
    "googlenet-aux": ["--arch", "googlenet", "--model-opt", "aux_logits=True", "--image-size", "32"],
    "2-devices": [],  # in a subprocess with 2 CPU devices
}
FEATURES = {  # the feature -> its row
    "plain": "plain", "--pretrained": "finetune", "--freeze-backbone-epochs": "finetune",
    "--backbone-lr-scale": "finetune", "--ema (val_accuracy_ema)": "finetune", "--mixup/--cutmix": "recipe",
    "--grad-accum-steps": "recipe", "--schedule onecycle": "recipe", "--schedule plateau": "no-val-bf16",
    "--val-split 0": "no-val-bf16", "--dtype bfloat16": "no-val-bf16", "--input-pipeline device": "device-auto",
    "--batch-size auto": "device-auto", "2 devices": "2-devices", "googlenet aux heads": "googlenet-aux",
    "label smoothing": "recipe",
}
COMMANDS = ("resume", "evaluate", "predict", "export", "export-torch", "compare")


def make_folder(root: pathlib.Path) -> pathlib.Path:
    """A 3-class image folder (train/ and test/) of real Fashion-MNIST PNGs from the demo set."""
    from jaxcnn.data.folder import DEMO_ROOT

    demo = pathlib.Path(DEMO_ROOT)
    for split, count in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        for class_dir in sorted((demo / split).iterdir())[:CLASSES]:
            target = root / split / class_dir.name
            target.mkdir(parents=True)
            for image in sorted(class_dir.glob("*.png"))[:count]:
                shutil.copy(image, target / image.name)
    return root


def make_weights(path: pathlib.Path) -> pathlib.Path:
    """A torchvision-format lenet5 file (10 classes: its head does not fit and is replaced)."""
    import jax

    from jaxcnn.models import create_model
    from jaxcnn.weights import save_torch_weights

    model = create_model("lenet5", 10)
    variables = model.init(jax.random.key(7), np.zeros((1, 28, 28, 1), np.float32), train=False)
    return save_torch_weights(jax.device_get(variables), "lenet5", path, input_shape=(28, 28, 1))


def cli(*argv) -> None:
    from jaxcnn.cli import main

    status = main([str(a) for a in argv])
    if status != 0:
        raise AssertionError(f"jaxcnn {' '.join(map(str, argv))} exited {status}")


def exercise(name: str, work: pathlib.Path) -> dict[str, str]:
    """Train row `name` in `work/runs/name`, then resume, evaluate, predict, export and
    export-torch it, each checked; returns {command: "pass"} (an AssertionError otherwise)."""
    import jax
    import jaxcnn

    folder = work / "folder"
    run = work / "runs" / name
    flags = [f.format(weights=work / "lenet5.safetensors") for f in ROWS[name]]
    cli("train", "--data", folder, *TINY, *flags, "--out", run)
    results = json.loads((run / "results.json").read_text())
    assert results["epochs_completed"] == 1
    cells = {}

    cli("train", "--resume", run, "--epochs", "2")
    resumed = json.loads((run / "results.json").read_text())
    assert resumed["epochs_completed"] == 2 and len((run / "metrics.csv").read_text().splitlines()) == 3
    cells["resume"] = "pass"

    cli("evaluate", run, "--checkpoint", "best")
    model = jaxcnn.load_run(run)  # "best": its EMA weights when an EMA metric chose it, as in results.json
    evaluated = json.loads((run / f"eval-test-{model.tag}.json").read_text())
    assert abs(evaluated["loss"] - resumed["best"]["loss"]) < 1e-5, (evaluated["loss"], resumed["best"])
    assert evaluated["accuracy"] == resumed["best"]["accuracy"]
    cells["evaluate"] = "pass"

    test_files = sorted(str(p) for p in (folder / "test").rglob("*.png"))
    cli("predict", run, *test_files, "--output", work / f"{name}.json")
    predicted = json.loads((work / f"{name}.json").read_text())["predictions"]
    classes = list(model.class_names)
    labels = np.array([classes.index(pathlib.Path(row["path"]).parent.name) for row in predicted])
    probabilities = np.array([[row["probabilities"][c] for c in classes] for row in predicted])
    assert np.mean(probabilities.argmax(axis=1) == labels) == evaluated["accuracy"]
    loss = -np.mean(np.log(probabilities[np.arange(len(labels)), labels]))
    assert abs(loss - evaluated["loss"]) < 1e-4, (loss, evaluated["loss"])
    cells["predict"] = "pass"

    cli("export", run, "--output", work / f"{name}-export")
    exported = jax.export.deserialize((work / f"{name}-export" / "model.jaxexport").read_bytes())
    images = model.inputs.resize([model.inputs.load(p) for p in test_files])
    np.testing.assert_allclose(np.asarray(exported.call(images)), model.predict(test_files), atol=1e-5)
    cells["export"] = "pass"

    cli("export-torch", run, work / f"{name}.safetensors")
    cells["export-torch"] = _torch_twin_agrees(model, work / f"{name}.safetensors", test_files)
    return cells


def _torch_twin_agrees(model, path: pathlib.Path, files: list[str]) -> str:
    """torch's strict load of the exported file, and the twin's logits equal to the run's."""
    try:
        import torch
    except ImportError:
        return "pass (torch absent: file written)"
    import safetensors.numpy

    from jaxcnn.weights.torch_models import torch_model

    height, width, channels = model.input_shape
    options = {k: v for k, v in model.config.model.options.items()}
    twin = torch_model(model.config.model.arch, len(model.class_names), image_size=height, channels=channels,
                       **options).eval()
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in safetensors.numpy.load_file(str(path)).items()},
                         strict=True)
    images = model.inputs.prepare([model.inputs.load(p) for p in files])
    with torch.no_grad():
        logits = twin(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    jax_logits, _ = model.forward(images)
    tolerance = 5e-2 if model.config.model.dtype == "bfloat16" else 1e-4  # the run computes in bfloat16
    np.testing.assert_allclose(logits, jax_logits, atol=tolerance, rtol=tolerance)
    return "pass"


if __name__ == "__main__":
    print("CELLS " + json.dumps(exercise(sys.argv[1], pathlib.Path(sys.argv[2]))))
