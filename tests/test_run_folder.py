"""Run folders: the exclusive lock, refusing reuse, moving old contents aside, resume and read-only checks."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO_ROOT
from mount_helpers import tmpfs
from jaxcnn.run_folder import RunFolderError, RunLock, claim_run_folder, read_run_config


def write_run(run_dir, config=None):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config or {"config": {"arch": "lenet5"}}))
    (run_dir / "metrics.csv").write_text("epoch\n1\n")


@pytest.fixture
def holder(tmp_path):
    """A separate process that claims `tmp_path / 'run'` and sleeps; yields (run_dir, process)."""
    run_dir = tmp_path / "run"
    script = textwrap.dedent(f"""
        import sys, time
        from jaxcnn.run_folder import claim_run_folder
        claim_run_folder({str(run_dir)!r})
        print("claimed", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.stdout.readline().strip() == "claimed"
    yield run_dir, proc
    proc.kill()
    proc.wait()


def test_second_run_fails_naming_the_holder_until_the_holder_is_killed(holder):
    run_dir, proc = holder
    with pytest.raises(RunFolderError) as error:
        claim_run_folder(run_dir, overwrite=True)  # not even --overwrite touches a live run's folder
    assert str(error.value) == (
        f"the run folder {run_dir} is in use by another run (PID {proc.pid}); "
        "wait for it to end or choose another folder"
    )
    assert "\n" not in str(error.value) and not list(run_dir.parent.glob("run.old-*"))

    proc.send_signal(signal.SIGKILL)  # the OS drops a dead process's flock; the stale .lock file stays
    proc.wait()
    with claim_run_folder(run_dir) as run:
        assert (run_dir / ".lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(RunFolderError, match=f"in use by another run \\(PID {os.getpid()}\\)"):
            RunLock(run_dir).acquire()  # a second lock in the same process is refused as well
    with RunLock(run_dir):  # released on exit
        pass
    assert run.path == run_dir.resolve()


def test_new_run_creates_the_folder_and_a_lock_only_folder_counts_as_empty(tmp_path):
    run_dir = tmp_path / "a" / "b" / "run"
    with claim_run_folder(run_dir) as run:
        assert run.path == run_dir and run.moved_aside is None
    assert [p.name for p in run_dir.iterdir()] == [".lock"]  # the write probe is gone
    claim_run_folder(run_dir).close()  # e.g. a run killed before it wrote anything


def test_non_empty_folder_is_refused_without_resume_or_overwrite(tmp_path):
    run_dir = tmp_path / "run"
    write_run(run_dir)
    with pytest.raises(RunFolderError) as error:
        claim_run_folder(run_dir)
    assert str(error.value) == (
        f"the run folder {run_dir} is not empty (config.json, metrics.csv); use --resume to continue "
        "that run or --overwrite to move its contents aside, or choose another folder"
    )
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "config.json", "metrics.csv"]
    RunLock(run_dir).acquire().release()  # the refused claim released its lock


def test_overwrite_moves_the_old_contents_aside(tmp_path):
    run_dir = tmp_path / "run"
    write_run(run_dir)
    (run_dir / "checkpoints" / "3").mkdir(parents=True)
    with claim_run_folder(run_dir, overwrite=True) as run:
        assert [p.name for p in run_dir.iterdir()] == [".lock"]
    old = run.moved_aside
    assert old.parent == tmp_path and old.name.startswith("run.old-") and len(old.name) == len("run.old-20260101-120000")
    assert sorted(p.name for p in old.iterdir()) == ["checkpoints", "config.json", "metrics.csv"]
    assert (old / "metrics.csv").read_text() == "epoch\n1\n" and (old / "checkpoints" / "3").is_dir()

    write_run(run_dir)  # twice within one second: a second folder, nothing merged or lost
    second = claim_run_folder(run_dir, overwrite=True)
    second.close()
    assert second.moved_aside != old and len(list(tmp_path.glob("run.old-*"))) == 2


def test_resume_needs_a_run_folder_and_keeps_it_as_it_is(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(RunFolderError, match=f"^not a jaxcnn run folder: {missing} does not exist$"):
        claim_run_folder(missing, resume=True)
    assert not missing.exists()
    with pytest.raises(RunFolderError, match=f"^not a jaxcnn run folder: {tmp_path} has no config.json$"):
        claim_run_folder(tmp_path, resume=True)
    (tmp_path / "config.json").write_text("{truncated")
    with pytest.raises(RunFolderError, match="^not a jaxcnn run folder: .*config.json is unreadable: not valid JSON"):
        read_run_config(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(RunFolderError, match="does not hold a JSON object$"):
        read_run_config(tmp_path)

    run_dir = tmp_path / "run"
    write_run(run_dir)
    link = tmp_path / "link"
    link.symlink_to(run_dir)
    with claim_run_folder(link, resume=True) as run:
        assert run.path == run_dir and run.moved_aside is None  # the real path
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "config.json", "metrics.csv"]
    assert read_run_config(run_dir) == {"config": {"arch": "lenet5"}}
    with pytest.raises(RunFolderError, match="^resume and overwrite exclude each other"):
        claim_run_folder(run_dir, resume=True, overwrite=True)


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder this process cannot write to: chmod for a normal user, a read-only tmpfs for root."""
    folder = tmp_path / "ro"
    if os.geteuid() == 0:
        with tmpfs(folder, "ro,size=64k"):
            yield folder
        return
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


def test_read_only_folder_fails_before_anything_else(read_only_dir):
    with pytest.raises(RunFolderError) as error:
        claim_run_folder(read_only_dir)
    assert str(error.value) in (
        f"cannot write to the run folder {read_only_dir}: Read-only file system",
        f"cannot write to the run folder {read_only_dir}: Permission denied",
    )
    with pytest.raises(RunFolderError, match=f"^cannot create the run folder {read_only_dir / 'run'}: "):
        claim_run_folder(read_only_dir / "run")
