"""Every training feature meets every command that reads a run (issue: features compose).

Each row of `feature_matrix.ROWS` trains a tiny run (3 classes of real Fashion-MNIST PNGs, 1
epoch) and goes through resume (--epochs 2), evaluate (equals results.json), predict (equals
evaluate on the same files), export (the artifact equals predict within 1e-5), export-torch
(torch's strict load, the same logits); then `compare` reads all of them, skipping a folder that
is not a run. The table of cells is printed (`-s`) and asserted whole.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

import feature_matrix
from conftest import REPO_ROOT
from feature_matrix import COMMANDS, FEATURES, ROWS


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("matrix")
    feature_matrix.make_folder(work / "folder")
    feature_matrix.make_weights(work / "lenet5.safetensors")
    return work


CELLS: dict[str, dict[str, str]] = {}


@pytest.mark.parametrize("row", [name for name in ROWS if name != "2-devices"])
def test_row(row, work):
    CELLS[row] = feature_matrix.exercise(row, work)


def test_two_devices_row(work):
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{REPO_ROOT / 'tests'}", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "feature_matrix.py"), "2-devices", str(work)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("CELLS "))
    CELLS["2-devices"] = json.loads(line.removeprefix("CELLS "))
    config = json.loads((work / "runs" / "2-devices" / "config.json").read_text())
    assert len(config["environment"]["devices"]) == 2


def test_compare_reads_every_row_and_skips_what_is_not_a_run(work, capsys):
    from jaxcnn.cli import main

    runs = sorted((work / "runs").iterdir())
    (work / "runs" / "not-a-run").mkdir()
    out = work / "compare.png"
    assert main(["compare", *map(str, runs), str(work / "runs" / "not-a-run"), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "not-a-run" in printed.err + printed.out  # the note on what was skipped
    markdown = out.with_suffix(".md").read_text()
    for run in runs:
        assert run.name in markdown
        CELLS.setdefault(run.name, {})["compare"] = "pass"
    table = [f"| feature | {' | '.join(COMMANDS)} |", "|---" * (len(COMMANDS) + 1) + "|"]
    table += [f"| {feature} | " + " | ".join(CELLS.get(row, {}).get(c, "MISSING") for c in COMMANDS) + " |"
              for feature, row in FEATURES.items()]
    print("\n".join(table))
    missing = [(row, c) for row in ROWS for c in COMMANDS if not CELLS.get(row, {}).get(c, "").startswith("pass")]
    assert not missing, missing
