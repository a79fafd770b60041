"""Faults injected into whole `jaxcnn train` runs (lenet5 on the demo): nothing is lost, every
fault is one clear line with its exit status, and a resumed run ends as an uninterrupted one.

The library-level twins of these cases (folders, archives, checkpoints, signals) are in
test_data_faults.py, test_checkpoint_faults.py, test_run_folder.py and test_termination.py.
"""

import csv
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT
from jaxcnn.cli.train import main
from mount_helpers import tmpfs

DEMO = ["--arch", "lenet5", "--data", "demo", "--lr", "1e-3", "--no-progress", "--early-stop-patience", "0"]
# Every recipe switch that keeps state or randomness, so that resume must restore all of it.
RECIPE = ["--ema", "0.9", "--mixup", "0.2", "--cutmix", "1.0", "--augment", "flip,randaugment:2:9,erase:0.25",
          "--clip-grad-norm", "1.0", "--grad-accum-steps", "2", "--batch-size", "20"]
COMMAND = [sys.executable, str(REPO_ROOT / "scripts" / "train.py")]
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
KEYS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"]


def metrics(run) -> list[dict]:
    with open(pathlib.Path(run) / "metrics.csv") as f:
        return list(csv.DictReader(f))


def assert_same_metrics(got_run, want_run, epochs: int):
    got, want = metrics(got_run), metrics(want_run)
    assert len(got) == len(want) == epochs
    for a, b in zip(got, want):
        assert [float(a[k]) for k in KEYS] == pytest.approx([float(b[k]) for k in KEYS], rel=1e-6, abs=1e-7)
        if "val_accuracy_ema" in b:
            assert float(a["val_accuracy_ema"]) == pytest.approx(float(b["val_accuracy_ema"]), rel=1e-6)


def start(args, out) -> subprocess.Popen:
    return subprocess.Popen(COMMAND + args + ["--out", str(out)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for(predicate, proc, seconds=240.0, poll=0.01) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(poll)
    return False


def saving(run) -> bool:
    return any(".orbax-checkpoint-tmp" in p.name for p in (run / "checkpoints").glob("*")) \
        if (run / "checkpoints").is_dir() else False


def test_a_finished_run_folder_is_refused_and_overwrite_moves_it_aside(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(DEMO + ["--epochs", "1", "--batch-size", "32", "--out", str(run)]) == 0
    first = (run / "config.json").read_text()
    capsys.readouterr()
    assert main(DEMO + ["--epochs", "1", "--batch-size", "32", "--out", str(run)]) == 2
    assert "is not empty" in capsys.readouterr().err and (run / "config.json").read_text() == first

    assert main(DEMO + ["--epochs", "1", "--batch-size", "16", "--out", str(run), "--overwrite"]) == 0
    (aside,) = tmp_path.glob("run.old-*")
    assert (aside / "config.json").read_text() == first  # nothing deleted
    assert json.loads((run / "config.json").read_text())["config"]["data"]["batch_size"] == 16


def test_a_second_run_on_a_live_folder_fails_at_once_naming_the_holder(tmp_path, capsys):
    run = tmp_path / "run"
    holder = start(DEMO + ["--epochs", "50", "--batch-size", "8"], run)
    try:
        assert wait_for(lambda: (run / "config.json").exists(), holder)
        started = time.time()
        assert main(DEMO + ["--epochs", "1", "--out", str(run), "--overwrite"]) == 2
        assert time.time() - started < 30
        assert f"in use by another run (PID {holder.pid})" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


def test_resume_skips_an_unreadable_newest_checkpoint(tmp_path, capsys):
    run, straight = tmp_path / "run", tmp_path / "straight"
    args = DEMO + ["--batch-size", "32"]
    assert main(args + ["--epochs", "1", "--out", str(run)]) == 0
    kept = tmp_path / "epoch1"
    shutil.copytree(run / "checkpoints" / "1", kept)
    assert main(["--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    if not (run / "checkpoints" / "1").exists():  # epoch 2 was better: bring epoch 1 back beside it
        shutil.copytree(kept, run / "checkpoints" / "1")
    for data in (run / "checkpoints" / "2" / "state").rglob("d/*"):  # truncate epoch 2's array data
        data.write_bytes(data.read_bytes()[:5])
    capsys.readouterr()

    assert main(["--resume", str(run), "--epochs", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "the checkpoint of epoch 2" in out and "is unreadable" in out and "from epoch 2" in out
    assert (run / "checkpoints.unreadable" / "2").is_dir()  # set aside, not deleted
    assert main(args + ["--epochs", "3", "--out", str(straight)]) == 0
    assert_same_metrics(run, straight, 3)


RECIPE_RUN = DEMO + RECIPE + ["--epochs", "3"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run every killed-and-resumed one must end as."""
    run = tmp_path_factory.mktemp("straight") / "run"
    assert main(RECIPE_RUN + ["--out", str(run)]) == 0
    return run


@pytest.mark.parametrize("when", ["first epoch", "saving", "second epoch"])
def test_sigkill_anywhere_then_resume_ends_as_an_uninterrupted_run(tmp_path, straight, when):
    killed = tmp_path / "killed"
    proc = start(RECIPE_RUN, killed)
    ready = {
        "first epoch": lambda: (killed / "config.json").exists(),  # written when training starts
        "saving": lambda: saving(killed),
        "second epoch": lambda: (killed / "checkpoints" / "1").is_dir(),
    }[when]
    assert wait_for(ready, proc), f"the run ended before '{when}'"
    if when != "saving":
        time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(metrics(killed)) < 3 if (killed / "metrics.csv").exists() else True

    subprocess.run(COMMAND + ["--resume", str(killed), "--no-progress"], env=ENV, check=True, capture_output=True)
    assert_same_metrics(killed, straight, 3)
    results = json.loads((killed / "results.json").read_text())
    assert results["last"]["accuracy"] == json.loads((straight / "results.json").read_text())["last"]["accuracy"]
    assert "ema" in results and results["stop_reason"] == "completed"


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_and_sigterm_keep_results_and_print_the_resume_command(tmp_path, signum, status):
    run = tmp_path / "my run"  # a space: the printed command must quote it
    proc = start(DEMO + ["--epochs", "30", "--batch-size", "8"], run)
    assert wait_for(lambda: (run / "checkpoints" / "1").is_dir(), proc)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == status, out
    assert f"Continue with: jaxcnn train --resume '{run.resolve()}'" in out
    results = json.loads((run / "results.json").read_text())
    assert results["last"]["epoch"] >= 1 and "interrupted by" in results["stop_reason"]


def test_a_read_only_out_fails_before_any_data_is_read(tmp_path, capsys):
    with tmpfs(tmp_path / "ro", "ro,size=64k") as read_only:
        started = time.time()
        assert main(["--arch", "lenet5", "--data", "catdog", "--data-dir", str(tmp_path / "absent"),
                     "--out", str(read_only / "run")]) == 2
        err = capsys.readouterr().err.strip()
    assert "Read-only file system" in err and "\n" not in err and "catdog" not in err  # no data was looked at
    assert time.time() - started < 60


def test_a_full_disk_is_one_line_and_leaves_no_partial_checkpoint(tmp_path, capsys):
    with tmpfs(tmp_path / "small", "size=1200k") as small:
        run = small / "run"
        status = main(DEMO + ["--epochs", "30", "--batch-size", "32", "--out", str(run)])
        err = capsys.readouterr().err.strip()
        assert status == 1, err
        assert err.count("\n") == 0 and "No space left on device" in err and str(run) in err
        assert not [p for p in run.rglob("*") if "orbax-checkpoint-tmp" in p.name]


def test_a_failed_write_that_names_no_file_names_the_run_folder(tmp_path, capsys, monkeypatch):
    """ENOSPC from a plain write() (the log, the CSV, an event file) carries no file name: the
    one-line error names the run folder instead, whichever writer hit the full disk first."""
    import errno

    from jaxcnn import experiment

    def full_disk(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(experiment, "_run", full_disk)
    run = tmp_path / "run"
    assert main(DEMO + ["--epochs", "1", "--out", str(run)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: [Errno 28] No space left on device (writing the run folder {run.resolve()})"


def test_bad_image_folders_end_to_end(tmp_path, capsys):
    """A symlink loop and a non-UTF-8 unreadable file train cleanly; one class is refused."""
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for name in ("cats", "dogs"):
        (data / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(data / name / f"{i}.png")
    os.symlink("..", data / "cats" / "loop")
    (data / os.fsdecode(b"dogs/\xff\xfe.png")).write_bytes(b"not an image")
    run = tmp_path / "run"
    assert main(["--arch", "lenet5", "--data", str(data), "--image-size", "16", "--batch-size", "4",
                 "--epochs", "1", "--no-progress", "--out", str(run)]) == 0
    assert "1200" not in (run / "train.log").read_text()
    assert "10 train / 2 val" in (run / "train.log").read_text()  # 12 images once each, not 5,412
    listed = (run / "skipped_files.txt").read_bytes()
    assert b"\xff\xfe.png\t" in listed

    shutil.rmtree(data / "dogs")
    capsys.readouterr()
    assert main(["--arch", "lenet5", "--data", str(data), "--out", str(tmp_path / "one")]) == 2
    assert "a classifier needs at least 2 classes" in capsys.readouterr().err
