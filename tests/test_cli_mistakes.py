"""Command-line mistakes are a few lines and exit 2 (issue 19): a flag typo gets "did you mean",
and an output that cannot be written fails before the run is even loaded."""

import os
import subprocess
import sys

import pytest

import jaxcnn.inference
from conftest import REPO_ROOT
from jaxcnn.cli import main

TYPOS = {  # command line -> the flag suggested
    ("train", "--batchsize", "8"): "--batch-size",
    ("train", "--arch", "lenet5", "--weight_decay", "0.1"): "--weight-decay",
    ("predict", "RUN", "a.png", "--outptu", "p.csv"): "--output",
    ("export", "RUN", "--ouput", "dir"): "--output",
    ("export-torch", "RUN", "w.safetensors", "--chekpoint", "last"): "--checkpoint",
    ("evaluate", "RUN", "--spilt", "val"): "--split",
    ("compare", "RUN", "--ot", "c.png"): "--out",
    ("summary", "--arch", "lenet5", "--num-classes", "3", "--input-size", "32", "--dpeth", "1"): "--depth",
}


@pytest.mark.parametrize("argv", list(TYPOS), ids=[argv[0] for argv in TYPOS])
def test_an_unknown_flag_gets_the_closest_one_in_two_lines(argv, capsys):
    """Old code: argparse's usage (~40 lines for train) and no hint."""
    with pytest.raises(SystemExit) as exit:
        main(list(argv))
    assert exit.value.code == 2
    captured = capsys.readouterr()
    typo = next(arg for arg in argv if arg.startswith("--") and arg not in ("--arch", "--num-classes", "--input-size"))
    assert captured.err.splitlines() == [f"error: unrecognized argument {typo}; did you mean {TYPOS[argv]}?",
                                         f"`jaxcnn {argv[0]} --help` lists the options"]
    assert captured.out == ""


def test_other_argument_mistakes_are_short_too(capsys):
    for argv, message in ((["train", "--epochs", "many"], "argument --epochs: invalid int value: 'many'"),
                          (["predict", "RUN"], "the following arguments are required: PATH"),
                          (["predict", "RUN", "a.png", "--topk", "0"], "--topk must be >= 1, got 0"),
                          (["train", "--nonsense", "--batchsize", "8"],
                           "unrecognized arguments --nonsense, --batchsize (did you mean --batch-size?)")):
        with pytest.raises(SystemExit) as exit:
            main(argv)
        err = capsys.readouterr().err.splitlines()
        assert exit.value.code == 2 and len(err) == 2 and err[0] == f"error: {message}", err


def test_a_typo_through_the_jaxcnn_command():
    proc = subprocess.run([sys.executable, "-m", "jaxcnn", "train", "--batchsize", "8"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu"}, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["error: unrecognized argument --batchsize; did you mean --batch-size?",
                                        "`jaxcnn train --help` lists the options"]


# --------------------------------------------------------------------------------- outputs, first

@pytest.fixture
def loads(monkeypatch) -> list:
    """The runs `load_run` was asked for (none is loaded: nothing must get that far)."""
    calls = []

    def load_run(*args, **kwargs):
        calls.append(args)
        raise AssertionError("load_run was called before the output was checked")

    monkeypatch.setattr(jaxcnn.inference, "load_run", load_run)
    return calls


def test_an_output_that_cannot_be_written_fails_before_the_run_is_loaded(tmp_path, loads, capsys, monkeypatch):
    """Old code: the model was loaded and the predictions or the export computed, then the write failed."""
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    (tmp_path / "a-file").write_text("")
    missing = tmp_path / "missing"
    cases = {
        ("predict", "RUN", str(image), "--output", str(missing / "p.csv")): f"--output file {missing / 'p.csv'}",
        ("predict", "RUN", str(image), "--output", str(tmp_path / "a-file" / "p.csv")): "a-file is not a folder",
        ("export", "RUN", "--output", str(missing / "export")): f"--output folder {missing / 'export'}",
        ("export", "RUN", "--output", str(tmp_path / "a-file")): "it exists and is not a folder",
        ("export-torch", "RUN", str(missing / "w.safetensors")): f"weights file {missing / 'w.safetensors'}",
        ("export-torch", "RUN", str(tmp_path / "w.npz")): "use one of .pth, .pt, .safetensors",
    }
    for argv, message in cases.items():
        assert main(list(argv)) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    monkeypatch.setitem(sys.modules, "torch", None)  # as without torch
    assert main(["export-torch", "RUN", str(tmp_path / "w.pth")]) == 2
    assert "pip install torch" in capsys.readouterr().err
    assert loads == []
    assert sorted(os.listdir(tmp_path)) == ["a-file", "a.png"]
