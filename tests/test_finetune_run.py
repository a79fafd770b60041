"""Fine-tuning runs through `jaxcnn train`: --pretrained from a .safetensors file with a
1000-class head replaced, --freeze-backbone-epochs (the backbone and its BatchNorm statistics
bit-identical to the file after the frozen epoch, a resume continuing unfrozen exactly as an
uninterrupted run), --backbone-lr-scale, and the options' checks."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import traverse_util
from PIL import Image

from jaxcnn.builder import build_training
from jaxcnn.run_config import RunConfig
from jaxcnn.cli.train import main
from jaxcnn.models import create_model
from jaxcnn.train.finetune import head_labels
from jaxcnn.weights import load_torch_weights, save_torch_weights

SIZE = 8  # px: the CIFAR ResNet-20 at its smallest, to keep compiling and training quick


def random_weight(rng, name: str, shape) -> np.ndarray:
    """He-scaled kernels and BatchNorm values near their defaults, drawn in numpy (no compiling)."""
    if name == "kernel":
        return (rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[:-1]))).astype(np.float32)
    middle = 0.0 if name in ("bias", "mean") else 1.0  # scale and var near 1
    return (middle + 0.1 * rng.uniform(-1, 1, shape)).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 3-class image folder and ImageNet-style (1000-class) resnet20 weights as .safetensors."""
    root = tmp_path_factory.mktemp("finetune")
    rng = np.random.default_rng(0)
    for label in range(3):
        folder = root / "data" / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    model = create_model("resnet20", 1000)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)), train=False))
    variables = jax.tree_util.tree_map_with_path(lambda path, leaf: random_weight(rng, path[-1].key, leaf.shape), shapes)
    weights = save_torch_weights(variables, "resnet20", root / "resnet20.safetensors")
    return root / "data", weights


def args(files, out, *extra):
    data, weights = files
    return ["--arch", "resnet20", "--data", str(data), "--batch-size", "4", "--val-split", "0.25",
            "--no-progress", "--early-stop-patience", "0", "--pretrained", str(weights),
            "--freeze-backbone-epochs", "1", "--out", str(out), *extra]


def checkpoint(run, epoch) -> dict:
    """The params and batch_stats saved after `epoch`, as flat {(collection, ...): array}."""
    state = ocp.StandardCheckpointer().restore(run / "checkpoints" / str(epoch) / "state")
    return traverse_util.flatten_dict({c: state[c] for c in ("params", "batch_stats")})


def split_by_part(flat: dict) -> tuple[dict, dict]:
    """(head, backbone) leaves of flat resnet20 variables: the head is `fc`."""
    model = create_model("resnet20", 3)
    labels = traverse_util.flatten_dict(head_labels(model, traverse_util.unflatten_dict(
        {path[1:]: v for path, v in flat.items() if path[0] == "params"})))
    is_head = {path: path[0] == "params" and labels[path[1:]] == "head" for path in flat}
    return ({p: v for p, v in flat.items() if is_head[p]}, {p: v for p, v in flat.items() if not is_head[p]})


def test_frozen_epoch_keeps_the_backbone_and_a_resume_continues_unfrozen(files, tmp_path):
    run, straight = tmp_path / "run", tmp_path / "straight"
    loaded, _ = load_torch_weights("resnet20", files[1], num_classes=3, input_shape=(SIZE, SIZE, 3),
                                   rng=jax.random.key(42))  # the run's seed initializes the new head
    head0, backbone0 = split_by_part(traverse_util.flatten_dict(loaded))
    assert any(path[0] == "batch_stats" for path in backbone0)

    assert main(args(files, run, "--epochs", "1")) == 0  # stopped after the frozen epoch
    head1, backbone1 = split_by_part(checkpoint(run, 1))
    assert backbone1.keys() == backbone0.keys()
    for path, value in backbone0.items():  # parameters and BatchNorm statistics, bit for bit
        assert np.array_equal(backbone1[path], value) and backbone1[path].dtype == value.dtype, path
    assert all(not np.array_equal(head1[path], head0[path]) for path in head0)
    log = (run / "train.log").read_text()
    assert log.count("resnet20 (3 classes): 95 loaded, 2 newly initialized, 0 missing, 0 unexpected") == 1
    assert "newly initialized  fc.weight  file (1000, 64)  model (3, 64)" in log
    assert "Epoch 1: only the head learns" in log

    assert main(["--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    _, backbone2 = split_by_part(checkpoint(run, 2))
    assert not any(np.array_equal(backbone2[path], backbone0[path]) for path in backbone0)
    assert "Epoch 2: the whole network learns" in (run / "train.log").read_text()
    assert json.loads((run / "config.json").read_text())["config"]["finetune"] == {
        "pretrained": str(files[1]), "freeze_backbone_epochs": 1, "backbone_lr_scale": 1.0}

    assert main(args(files, straight, "--epochs", "2")) == 0  # the same run, uninterrupted
    resumed, uninterrupted = checkpoint(run, 2), checkpoint(straight, 2)
    assert all(np.array_equal(resumed[path], uninterrupted[path]) for path in uninterrupted)
    csv = [(folder / "metrics.csv").read_text().splitlines() for folder in (run, straight)]
    strip = lambda lines: [line.rsplit(",", 2)[0] for line in lines]  # noqa: E731 - without the timings
    assert strip(csv[0]) == strip(csv[1])


def sgd_updates(scale: float) -> dict:
    """lenet5's updates from one step of the builder's SGD (no momentum) at backbone LR scale `scale`."""
    config = RunConfig.from_dict({
        "model": {"arch": "lenet5"}, "finetune": {"backbone_lr_scale": scale},
        "optim": {"name": "sgd", "momentum": 0.0, "schedule": "constant", "learning_rate": 0.1}})
    training = build_training(config, num_classes=3, input_shape=(32, 32, 3), steps_per_epoch=1)
    params, rng = training.state.params, np.random.default_rng(0)
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
    updates, _ = training.optimizer.update(grads, training.state.opt_state, params)
    return jax.tree.map(np.asarray, updates)


def test_backbone_lr_scale_scales_the_backbone_updates_exactly():
    plain, scaled = sgd_updates(1.0), sgd_updates(0.1)
    for name in ("conv1", "conv2"):  # lenet5's backbone
        for leaf in ("kernel", "bias"):
            assert np.array_equal(scaled[name][leaf], plain[name][leaf] * np.float32(0.1)), (name, leaf)
    for name in ("fc1", "fc2", "fc"):  # the head
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(scaled[name]), jax.tree.leaves(plain[name])))


@pytest.mark.parametrize("flags,message", [
    (["--pretrained", "{tmp}/missing.safetensors"], "error: --pretrained: no weights file at {tmp}/missing.safetensors"),
    (["--pretrained", "{tmp}/weights.bin"], "error: --pretrained: must be a .pth, .pt, .safetensors file, got '{tmp}/weights.bin'"),
    (["--backbone-lr-scale", "0"], "error: --backbone-lr-scale: must be > 0.0, got 0.0"),
    (["--freeze-backbone-epochs", "-1"], "error: --freeze-backbone-epochs: must be >= 0, got -1"),
])
def test_bad_finetune_options_are_one_line_and_write_nothing(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    assert main(["--arch", "lenet5", "--data", "demo", "--out", str(out), *flags]) == 2
    assert capsys.readouterr().err.strip() == message.format(tmp=tmp_path)
    assert not out.exists()
