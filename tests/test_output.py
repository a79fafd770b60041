"""Output files and text (issue 19): UTF-8 whatever the locale, any file name survives, files the
user names are checked before any work and written whole or not at all (`jaxcnn.output`)."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT
from jaxcnn.errors import UserError

# What Python runs under with an ASCII locale: UTF-8 mode off, so `open()` and the file system
# encoding are ASCII and a non-ASCII file name comes in as surrogate escapes.
ASCII_LOCALE = {"PYTHONUTF8": "0", "LANG": "C", "LC_ALL": "C"}
NAME = "Ω-猫.png"


def ascii_locale_env() -> dict:
    return {**os.environ, **ASCII_LOCALE, "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu"}


# ASCII only: the command line is decoded with the locale's encoding.
WRITERS_UNDER_ASCII_LOCALE = r"""
import os, sys
assert sys.getfilesystemencoding() == "ascii", sys.getfilesystemencoding()
from jaxcnn.inference.predict import write_predictions
from jaxcnn.report.compare import COLUMNS, write_table
from jaxcnn.report.final import write_best_report
out = sys.argv[1]
path = os.fsdecode("\u03a9-\u732b.png".encode())  # as this locale lists the file: surrogate escapes
assert path != "\u03a9-\u732b.png"
classes = [os.fsdecode("\u03a9mega".encode()), "\u732b"]  # a class folder's name, and one from a UTF-8 config.json
rows = [{"path": path, "predicted": classes[0], "probability": 0.75, "top": [(classes[0], 0.75)],
         "probabilities": dict(zip(classes, (0.75, 0.25)))}]
write_predictions(os.path.join(out, "p.csv"), rows, [(path, "not an image")], classes)
write_predictions(os.path.join(out, "p.json"), rows, [], classes)
best = {"epoch": 1, "accuracy": 0.5, "confusion_matrix": [[1, 1], [0, 2]]}
files = write_best_report(out, {"best": best}, classes, "test", "lenet5")
table = [dict.fromkeys(COLUMNS) | {"run": path, "arch": "lenet5"}]
write_table(table, os.path.join(out, "t.csv"), os.path.join(out, "t.md"))
print(" ".join(os.path.basename(f) for f in files))
"""


def test_text_files_are_utf8_under_an_ascii_locale_and_keep_any_file_name(tmp_path):
    """Old code: `'ascii' codec can't encode character` (predictions computed, nothing written),
    and `set_text(): incompatible function arguments` from the confusion matrix."""
    proc = subprocess.run([sys.executable, "-c", WRITERS_UNDER_ASCII_LOCALE, str(tmp_path)], env=ascii_locale_env(),
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    assert proc.stdout.split() == [b"confusion.png", b"per_class.csv", b"per_class.md"]
    predictions = (tmp_path / "p.csv").read_text(encoding="utf-8").splitlines()
    assert predictions[0].endswith("p[Ωmega],p[猫]")
    assert predictions[1].startswith(f"{NAME},Ωmega,0.75,Ωmega,0.75,")
    assert (tmp_path / "p-unreadable.csv").read_text(encoding="utf-8").splitlines() == ["path,reason",
                                                                                      f"{NAME},not an image"]
    recorded = json.loads((tmp_path / "p.json").read_text(encoding="utf-8"))["predictions"][0]
    assert recorded["path"] == NAME and recorded["probabilities"] == {"Ωmega": 0.75, "猫": 0.25}
    assert (tmp_path / "per_class.csv").read_text(encoding="utf-8").splitlines()[1].startswith("Ωmega,")
    assert "| Ωmega " in (tmp_path / "per_class.md").read_text(encoding="utf-8")
    assert (tmp_path / "confusion.png").stat().st_size > 5_000
    assert (tmp_path / "t.csv").read_text(encoding="utf-8").splitlines()[1].startswith(NAME)
    assert NAME in (tmp_path / "t.md").read_text(encoding="utf-8")


def test_a_name_that_is_not_utf8_is_written_as_its_own_bytes(tmp_path):
    from jaxcnn.inference.predict import write_predictions

    path = os.fsdecode(b"caf\xe9.png")  # latin-1 bytes: not UTF-8 in any locale
    row = {"path": path, "predicted": "a", "probability": 1.0, "top": [("a", 1.0)], "probabilities": {"a": 1.0}}
    write_predictions(tmp_path / "p.csv", [row], [], ["a"])
    assert (tmp_path / "p.csv").read_bytes().splitlines()[1].startswith(b"caf\xe9.png,a,")


def test_displayable_and_the_console_never_fail_on_a_name(monkeypatch):
    from jaxcnn.output import displayable, safe_console

    escaped = os.fsdecode("Ω".encode()) if sys.getfilesystemencoding() == "ascii" else "\udcce\udca9"
    assert displayable(escaped + "x") == "Ωx"
    assert displayable(os.fsdecode(b"caf\xe9")) == "caf\ufffd"
    assert displayable("\ud800") == "\\ud800"  # a lone surrogate that stands for no byte
    for encoding in ("ascii", "utf-8"):
        buffer = io.BytesIO()
        console = io.TextIOWrapper(buffer, encoding=encoding, errors="strict")
        monkeypatch.setattr(sys, "stdout", console)
        safe_console()
        print("Ω " + os.fsdecode(b"caf\xe9"), end="")
        console.flush()
        expected = b"\\u03a9" if encoding == "ascii" else "Ω".encode()
        assert buffer.getvalue() == expected + b" caf\xe9"


# --------------------------------------------------------------------------------- writable, atomic

def test_check_writable_names_the_path_before_any_work(tmp_path):
    from jaxcnn.output import OutputPathError, check_writable

    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder").mkdir()
    cases = {tmp_path / "missing" / "p.csv": "missing does not exist",
             tmp_path / "a-file" / "p.csv": "a-file is not a folder",
             tmp_path / "a-folder": "it exists and is a folder"}
    for path, reason in cases.items():
        with pytest.raises(OutputPathError, match=reason) as error:
            check_writable(path, what="--output")
        assert isinstance(error.value, UserError) and str(path) in str(error.value)
        assert "\n" not in str(error.value)
    with pytest.raises(OutputPathError, match="it exists and is not a folder"):
        check_writable(tmp_path / "a-file", folder=True)
    assert check_writable(tmp_path / "new.csv") == tmp_path / "new.csv"
    assert check_writable(tmp_path / "a-folder", folder=True) == tmp_path / "a-folder"
    assert sorted(os.listdir(tmp_path)) == ["a-file", "a-folder"]  # the probe is gone


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_check_writable_refuses_a_read_only_folder(tmp_path):
    from jaxcnn.output import OutputPathError, check_writable

    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    with pytest.raises(OutputPathError, match="does not take new files"):
        check_writable(folder / "p.csv")


def test_a_failure_mid_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    from jaxcnn.output import atomic_write

    path = tmp_path / "p.csv"
    path.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_write(path) as f:
        f.write("new, half")
        raise RuntimeError("disk full")
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["p.csv"]
    with atomic_write(path) as f:
        f.write("Ω\n")
    assert path.read_bytes() == "Ω\n".encode() and os.listdir(tmp_path) == ["p.csv"]


def test_predictions_that_fail_mid_write_leave_the_old_file(tmp_path):
    """Old code: the CSV was truncated and half written."""
    from jaxcnn.inference.predict import write_predictions

    good = {"path": "a.png", "predicted": "a", "probability": 1.0, "top": [("a", 1.0)], "probabilities": {"a": 1.0}}
    broken = {"path": "b.png", "predicted": "a"}  # no probabilities: fails on the second row
    for name in ("p.csv", "p.json"):
        path = tmp_path / name
        path.write_text("old\n")
        with pytest.raises((KeyError, TypeError)):
            write_predictions(path, [good, broken, {1, 2}], [], ["a"])
        assert path.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["p.csv", "p.json"]


def test_a_stale_unreadable_list_is_not_left_beside_new_predictions(tmp_path):
    from jaxcnn.inference.predict import write_predictions

    row = {"path": "a.png", "predicted": "a", "probability": 1.0, "top": [("a", 1.0)], "probabilities": {"a": 1.0}}
    assert write_predictions(tmp_path / "p.csv", [row], [("b.png", "not an image")], ["a"])[1].endswith(
        "p-unreadable.csv")
    assert write_predictions(tmp_path / "p.csv", [row], [], ["a"]) == [str(tmp_path / "p.csv")]
    assert os.listdir(tmp_path) == ["p.csv"]


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    from jaxcnn.output import atomic_folder

    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "model.json").write_text("old")
    (folder / "notes.txt").write_text("the user's")
    with pytest.raises(RuntimeError), atomic_folder(folder) as new:
        (new / "model.json").write_text("new")
        raise RuntimeError("failed before the artifact")
    assert sorted(os.listdir(tmp_path)) == ["export"]
    assert (folder / "model.json").read_text() == "old"
    with atomic_folder(folder) as new:
        (new / "model.json").write_text("new")
        (new / "model.jaxexport").write_bytes(b"\x00")
    assert sorted(os.listdir(tmp_path)) == ["export"]
    assert sorted(os.listdir(folder)) == ["model.jaxexport", "model.json", "notes.txt"]
    assert (folder / "model.json").read_text() == "new" and (folder / "notes.txt").read_text() == "the user's"
    with atomic_folder(tmp_path / "fresh") as new:
        (new / "a").write_text("a")
    assert (tmp_path / "fresh" / "a").read_text() == "a"


def test_a_state_dict_that_fails_mid_write_leaves_the_old_file(tmp_path, monkeypatch):
    """Old code: `save_file` wrote straight to the path, so a failure left half a file."""
    import safetensors.numpy

    from jaxcnn.weights import read_state_dict, write_state_dict

    path = tmp_path / "w.safetensors"
    write_state_dict({"a": np.ones(3, np.float32)}, path)

    def half_then_fail(arrays, target):
        with open(target, "wb") as f:
            f.write(b"\x10\x00")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.numpy, "save_file", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        write_state_dict({"a": np.zeros(3, np.float32)}, path)
    np.testing.assert_array_equal(read_state_dict(path)["a"], np.ones(3, np.float32))
    assert os.listdir(tmp_path) == ["w.safetensors"]
