"""ONNX export: onnxruntime against the model's own forward pass for every architecture, a trained
run exported and run where jax cannot be imported, and the errors a user can cause.

Needs the `onnx` extra (onnx, onnxruntime); skipped without it.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import jaxcnn  # noqa: E402
from conftest import REPO_ROOT  # noqa: E402
from jaxcnn.errors import UserError  # noqa: E402
from jaxcnn.models import create_model, list_models  # noqa: E402
from jaxcnn.models.layers import adaptive_avg_pool  # noqa: E402
from jaxcnn.onnx_export import OnnxExportError, export_onnx  # noqa: E402
from jaxcnn.train.inputs import InputNormalization, normalize_images  # noqa: E402

SIZE = (45, 37)  # odd and not square; every architecture accepts it (VGG, the largest minimum, needs 32)
CLASSES = 5
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TOLERANCE = 1e-4  # on the probabilities
# The reference forward passes are compiled once each, without LLVM's costly passes: the same
# arithmetic (no fast-math either way), and resnet152's reference took 22 s instead of 31 s here.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def random_variables(model, seed: int) -> dict:
    """Fresh random weights, and BatchNorm statistics and affine terms far from their initial 0 / 1."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *SIZE, 3)), train=False))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        if "kernel" in name:  # N(0, 1 / fan_in): activations keep their scale through the depth
            return rng.standard_normal(leaf.shape, np.float32) / np.float32(np.sqrt(np.prod(leaf.shape[:-1])))
        if "'var'" in name:
            return rng.uniform(0.5, 2.0, leaf.shape).astype(np.float32)
        if "scale" in name:
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        return rng.normal(0, 0.2, leaf.shape).astype(np.float32)  # biases, BatchNorm means

    return jax.tree_util.tree_map_with_path(draw, shapes)


def reference(model, variables, images) -> tuple[dict, np.ndarray]:
    """(variables, probabilities): the model's own eval forward; the classifier rescaled so the
    logits spread about 2 (informative probabilities, neither uniform nor saturated)."""
    normalize = InputNormalization(MEAN, STD)
    forward = jax.jit(lambda v, x: model.apply(v, normalize_images(x, normalize), train=False))
    logits = forward.lower(variables, images).compile(FAST_COMPILE)
    spread = float(np.std(np.asarray(logits(variables, images))))
    fc = {name: value * (2.0 / spread) for name, value in variables["params"]["fc"].items()}
    variables = {**variables, "params": {**variables["params"], "fc": fc}}
    return variables, np.asarray(jax.nn.softmax(logits(variables, images), axis=-1))


def onnx_probabilities(path, images) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images})[0]


def check_parity(arch: str, tmp_path, **options) -> None:
    """Batch 7 and batch 1 through one exported file, against the model's own forward pass."""
    model = create_model(arch, CLASSES, **options)
    images = np.random.default_rng(1).integers(0, 256, (7, *SIZE, 3), dtype=np.uint8)
    variables, expected = reference(model, random_variables(model, seed=0), images)
    assert 1.5 / CLASSES < expected.max(axis=1).mean() < 0.99  # the check below is not on flat or one-hot rows

    path = tmp_path / f"{arch}.onnx"
    proto = export_onnx((model, variables), path, input_shape=(*SIZE, 3), mean=MEAN, std=STD)
    onnx.checker.check_model(str(path), full_check=True)
    assert [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == ["batch", *SIZE, 3]
    batch_of_7, batch_of_1 = onnx_probabilities(path, images), onnx_probabilities(path, images[:1])
    difference = max(np.abs(batch_of_7 - expected).max(), np.abs(batch_of_1 - expected[:1]).max())
    name = f"{arch} {options}" if options else arch
    print(f"\n{name}: largest difference {difference:.2e}, {path.stat().st_size / 2**20:.1f} MiB")
    assert difference < TOLERANCE


@pytest.mark.parametrize("arch", list_models())
def test_onnxruntime_matches_the_models_forward_pass(arch, tmp_path):
    check_parity(arch, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("arch, options", [("vgg11", {"head": "classic"}), ("googlenet", {"aux_logits": True}),
                                           ("resnet18", {"stem": "cifar"})])
def test_model_options_export_too(arch, options, tmp_path):
    """The classic VGG head's adaptive pool and 4096-wide layers (a 400 MiB file), GoogLeNet with its
    auxiliary heads' variables (unused in evaluation), the CIFAR stem."""
    check_parity(arch, tmp_path, **options)


class Extras(nn.Module):
    """Layers outside the zoo (LayerNorm, a dilated depthwise conv, GELU, average and adaptive
    pools, leaky ReLU, sigmoid, clip, squeeze, a transposed flatten, a parameter broadcast over the
    batch, a rematerialized layer), for the primitives they use."""

    num_classes: int = 4

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.LayerNorm()(nn.Conv(8, (3, 3), strides=2, padding=((1, 1), (1, 1)))(x))
        depthwise = nn.Conv(8, (3, 3), padding=((2, 2), (2, 2)), kernel_dilation=2, feature_group_count=8)(x)
        averaged = nn.avg_pool(nn.gelu(depthwise), (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        adaptive = adaptive_avg_pool(nn.leaky_relu(x, 0.1), (3, 3))
        features = jnp.concatenate([
            jnp.square(averaged).mean((1, 2)),
            jnp.transpose(adaptive, (0, 3, 1, 2)).reshape(x.shape[0], -1),
            nn.sigmoid(x[:, :, :, 0]).min(axis=(1, 2))[:, None],
            jnp.log(1 + jnp.abs(-jnp.clip(x, -1, 1))).max((1, 2)),
            jnp.broadcast_to(self.param("offsets", nn.initializers.normal(), (1, 2)), (x.shape[0], 2))], axis=-1)
        return nn.remat(nn.Dense)(self.num_classes)(nn.tanh(features))


@pytest.mark.parametrize("input_layout", ["nhwc-uint8", "nchw-float32"])
def test_layers_outside_the_zoo_and_both_input_layouts(input_layout, tmp_path):
    model = Extras()
    variables = model.init(jax.random.key(0), jnp.zeros((1, *SIZE, 3)), train=False)
    images = np.random.default_rng(2).integers(0, 256, (7, *SIZE, 3), dtype=np.uint8)
    normalized = np.asarray(normalize_images(images, InputNormalization(MEAN, STD)))
    expected = np.asarray(jax.nn.softmax(model.apply(variables, normalized, train=False)))
    proto = export_onnx((model, variables), tmp_path / "extras.onnx", input_shape=(*SIZE, 3), mean=MEAN, std=STD,
                        class_names=["a", "b", "c", "d"], input_layout=input_layout)
    feed = images if input_layout == "nhwc-uint8" else normalized.transpose(0, 3, 1, 2).copy()
    for batch in (feed, feed[:1]):
        np.testing.assert_allclose(onnx_probabilities(tmp_path / "extras.onnx", batch), expected[:len(batch)],
                                   atol=TOLERANCE)
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["class_names"]) == ["a", "b", "c", "d"]
    assert json.loads(props["mean"]) == list(MEAN) and json.loads(props["std"]) == list(STD)
    assert props["input_layout"] == ("NHWC" if input_layout == "nhwc-uint8" else "NCHW")
    assert json.loads(props["image_size"]) == list(SIZE) and props["channels"] == "3"
    assert proto.opset_import[0].version == 17


# ------------------------------------------------------------------------------ what is refused

class CumulativeSum(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        return nn.Dense(3)(jnp.cumsum(x, axis=1).mean((1, 2)))


class ScaledByBatch(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        return nn.Dense(3)(x.mean((1, 2))) / x.shape[0]


def _init(model):
    return model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)


def test_an_unsupported_primitive_is_one_line_naming_it_and_the_model(tmp_path):
    model = CumulativeSum(name="cumulative")
    named = r"ONNX export of cumulative: .*'cumsum' at .*test_onnx_export.py"
    with pytest.raises(OnnxExportError, match=named) as error:
        export_onnx((model, _init(model)), tmp_path / "m.onnx", input_shape=(8, 8, 3), mean=MEAN, std=STD)
    assert isinstance(error.value, UserError) and "\n" not in str(error.value)
    assert not (tmp_path / "m.onnx").exists()


def test_a_model_using_its_batch_size_needs_a_fixed_batch(tmp_path):
    model = ScaledByBatch()
    with pytest.raises(OnnxExportError, match="uses its batch size as a number"):
        export_onnx((model, _init(model)), tmp_path / "m.onnx", input_shape=(8, 8, 3), mean=MEAN, std=STD)
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    proto = export_onnx((model, _init(model)), tmp_path / "m.onnx", input_shape=(8, 8, 3), mean=MEAN, std=STD,
                        batch_size=3)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 3
    expected = jax.nn.softmax(model.apply(_init(model), normalize_images(images, InputNormalization(MEAN, STD)),
                                          train=False))
    np.testing.assert_allclose(onnx_probabilities(tmp_path / "m.onnx", images), expected, atol=TOLERANCE)


def test_bad_options_and_bfloat16_models_are_refused(tmp_path):
    lenet = create_model("lenet5", 3)
    variables = lenet.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)
    with pytest.raises(OnnxExportError, match="pass mean= and std="):
        export_onnx((lenet, variables), tmp_path / "m.onnx", input_shape=(28, 28, 1))
    with pytest.raises(OnnxExportError, match="input_layout 'nchw'"):
        export_onnx((lenet, variables), tmp_path / "m.onnx", input_shape=(28, 28, 1), input_layout="nchw")
    bfloat16 = r"in bfloat16 and the export is float32: export \(model\.clone\(dtype=jnp\.float32\), variables\)"
    with pytest.raises(OnnxExportError, match=bfloat16):
        export_onnx((lenet.clone(dtype=jnp.bfloat16), variables), tmp_path / "m.onnx", input_shape=(28, 28, 1),
                    mean=(0.5,), std=(0.5,))
    with pytest.raises(OnnxExportError, match=r"a TrainedModel .* or a \(model, variables\) pair"):
        export_onnx(lenet, tmp_path / "m.onnx")


# ------------------------------------------------------------------------------ a trained run

DEMO = ["--arch", "lenet5", "--data", "demo", "--epochs", "1", "--batch-size", "32", "--lr", "1e-3", "--no-progress"]

# onnxruntime, numpy and Pillow only: jax, flax and jaxcnn cannot be imported.
WITHOUT_JAX = """
import sys
for blocked in ("jax", "jaxlib", "flax", "jaxcnn"):
    sys.modules[blocked] = None
import json
import numpy as np, onnxruntime as ort
from PIL import Image

folder, paths = sys.argv[1], json.loads(sys.argv[2])
spec = json.load(open(f"{folder}/model.json"))
_, height, width, channels = spec["input"]["shape"]
batch = np.stack([np.asarray(Image.open(p).convert("L")).reshape(height, width, channels) for p in paths])
session = ort.InferenceSession(f"{folder}/{spec['artifact']}", providers=["CPUExecutionProvider"])
print(json.dumps(session.run(None, {"images": batch})[0].tolist()))
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from jaxcnn.cli import train as train_cli

    run = tmp_path_factory.mktemp("onnx") / "lenet5-demo"
    assert train_cli.main(DEMO + ["--out", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def demo_paths():
    from jaxcnn.data import load_data

    return load_data("demo", val_split=0.2, split_seed=42).test.paths[::20]


def predicted(run_dir, paths, tmp_path) -> np.ndarray:
    from jaxcnn.cli import main

    assert main(["predict", str(run_dir), *paths, "--output", str(tmp_path / "predictions.json")]) == 0
    rows = json.loads((tmp_path / "predictions.json").read_text())["predictions"]
    return np.asarray([list(row["probabilities"].values()) for row in rows])


def test_an_exported_run_in_onnxruntime_without_jax_equals_predict(run_dir, demo_paths, tmp_path, capsys):
    from jaxcnn.cli import main

    assert main(["export", str(run_dir), "--format", "onnx"]) == 0
    assert "ONNX (opset 17): uint8 NHWC (N, 28, 28, 1) -> probabilities over 10 classes" in capsys.readouterr().out
    spec = json.loads((run_dir / "export" / "model.json").read_text())
    assert spec["artifact"] == "model.onnx" and spec["input"]["shape"] == [None, 28, 28, 1]
    proc = subprocess.run([sys.executable, "-c", WITHOUT_JAX, str(run_dir / "export"), json.dumps(demo_paths)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    probabilities = np.asarray(json.loads(proc.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(probabilities, predicted(run_dir, demo_paths, tmp_path), atol=TOLERANCE)

    proto = onnx.load(str(run_dir / "export" / "model.onnx"))
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["class_names"]) == spec["class_names"] and props["arch"] == "lenet5"
    assert json.loads(props["mean"]) == spec["preprocessing_inside"]["mean"] and props["epoch"] == str(spec["epoch"])


def test_the_readme_onnxruntime_example_runs_as_pasted(run_dir, demo_paths, tmp_path):
    readme = (REPO_ROOT / "README.md").read_text()
    (example,) = [textwrap.dedent(block) for block in re.findall(r"```python\n(.*?)```", readme, flags=re.S)
                  if "onnxruntime" in block]
    example = re.sub(r'"jaxcnn/data/demo/test/[^"]+"', '"shoe.png"', example).replace("runs/demo/export", "export")
    from jaxcnn.cli import main

    work = tmp_path / "work"
    work.mkdir()
    assert main(["export", str(run_dir), "--format", "onnx", "--output", str(work / "export")]) == 0
    shutil.copy(demo_paths[0], work / "shoe.png")
    blocked = "import sys\nfor m in ('jax', 'flax', 'jaxcnn'): sys.modules[m] = None\n"
    proc = subprocess.run([sys.executable, "-c", blocked + example], capture_output=True, text=True, timeout=300,
                          cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    probabilities = predicted(run_dir, demo_paths[:1], tmp_path)[0]
    names = json.loads((work / "export" / "model.json").read_text())["class_names"]
    assert proc.stdout.strip().splitlines()[-1] == names[int(probabilities.argmax())]


def test_the_float_nchw_layout_from_the_command_line(run_dir, demo_paths, tmp_path):
    from jaxcnn.cli import main

    out = tmp_path / "nchw"
    argv = ["export", str(run_dir), "--format", "onnx", "--input-layout", "nchw-float32", "--output", str(out)]
    assert main(argv) == 0
    spec = json.loads((out / "model.json").read_text())
    assert spec["input"]["shape"] == [None, 1, 28, 28] and spec["preprocessing_inside"] is None
    model = jaxcnn.load_run(run_dir)
    prepared = model.inputs.prepare([model.inputs.load(p) for p in demo_paths])  # NHWC, normalized
    probabilities = onnx_probabilities(out / "model.onnx", prepared.transpose(0, 3, 1, 2).copy())
    np.testing.assert_allclose(probabilities, model.predict(demo_paths), atol=TOLERANCE)


def test_export_onnx_takes_a_trained_model_from_python(run_dir, demo_paths, tmp_path):
    model = jaxcnn.load_run(run_dir)
    proto = jaxcnn.export_onnx(model, tmp_path / "lenet5.onnx")
    assert json.loads({p.key: p.value for p in proto.metadata_props}["class_names"]) == list(model.class_names)
    images = model.inputs.resize([model.inputs.load(p) for p in demo_paths])
    np.testing.assert_allclose(onnx_probabilities(tmp_path / "lenet5.onnx", images), model.predict(demo_paths),
                               atol=TOLERANCE)
    with pytest.raises(OnnxExportError, match="a TrainedModel brings its own"):
        jaxcnn.export_onnx(model, tmp_path / "other.onnx", mean=(0.5,), std=(0.5,))


@pytest.mark.parametrize("argv, message", [
    (["--format", "tflite"], "error: --format 'tflite': expected jax or onnx"),
    (["--input-layout", "nchw-float32"], "error: --input-layout applies to --format onnx only"),
    (["--format", "onnx", "--input-layout", "nchw"],
     "error: --input-layout 'nchw': expected nhwc-uint8 or nchw-float32"),
])
def test_a_bad_export_request_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    from jaxcnn.cli import main

    assert main(["export", str(tmp_path / "no-run"), *argv]) == 2
    assert capsys.readouterr().err.strip() == message


def test_a_run_the_exporter_refuses_is_one_line_and_exit_2(run_dir, tmp_path, capsys):
    from jaxcnn.cli import main

    run = tmp_path / "bfloat16-run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("export"))
    recorded = json.loads((run / "config.json").read_text())
    recorded["config"]["model"]["dtype"] = "bfloat16"  # as `jaxcnn train --dtype bfloat16` records it
    (run / "config.json").write_text(json.dumps(recorded))
    assert main(["export", str(run), "--format", "onnx"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: ONNX export of lenet5: the model computes in bfloat16 and the export is float32: export "
        "(model.clone(dtype=jnp.float32), variables) from Python to run it in float32 instead")
    assert not (run / "export").exists()


def test_without_the_onnx_extra_the_command_names_it(tmp_path):
    script = ("import sys; sys.modules['onnx'] = None\n"
              "from jaxcnn.cli import main; sys.exit(main(['export', sys.argv[1], '--format', 'onnx']))")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == 'error: ONNX export needs the onnx package: pip install "jaxcnn[onnx]"'
