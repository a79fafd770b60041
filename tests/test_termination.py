"""SIGINT / SIGTERM: a clean exception, the real run path with the exact resume command, exit 130 / 143."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO_ROOT
from jaxcnn.run_folder import claim_run_folder
from jaxcnn.termination import (
    Terminated,
    check_termination,
    deferred_termination,
    exit_status,
    handle_termination,
    resume_hint,
    signal_name,
)

# What the CLI does around a run: claim the folder, work, and on a signal report and exit.
RUN = textwrap.dedent("""
    import sys, time
    from jaxcnn.run_folder import claim_run_folder
    from jaxcnn.termination import exit_status, handle_termination, resume_hint, signal_name

    def main():
        with handle_termination():
            run = claim_run_folder(sys.argv[1])
            (run.path / "config.json").write_text("{}")
            try:
                with run:
                    print("ready", flush=True)
                    time.sleep(60)
            except KeyboardInterrupt as interrupt:
                print(f"Interrupted by {signal_name(interrupt)}. {resume_hint(run.path)}", file=sys.stderr)
                return exit_status(interrupt)
        return 0

    sys.exit(main())
""")


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_ends_the_run_with_the_resume_command_and_the_shells_status(tmp_path, signum, status):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    given = tmp_path / "link" / "my run"  # a symlink and a space: the hint names the real, quoted path
    real = tmp_path / "real" / "my run"
    proc = subprocess.Popen([sys.executable, "-c", RUN, str(given)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == status
    assert stderr == (
        f"Interrupted by {signum.name}. Run folder: {real}. "
        f"Continue with: python scripts/train.py --resume '{real}'\n"
    )
    claim_run_folder(real, resume=True).close()  # the lock went with the process


def test_handlers_raise_terminated_inside_the_block_only():
    before = signal.getsignal(signal.SIGTERM)
    with handle_termination(), pytest.raises(Terminated) as raised:
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pause()  # never reached without the handler: the raise happens on delivery
    assert isinstance(raised.value, KeyboardInterrupt) and raised.value.signum == signal.SIGTERM
    assert str(raised.value) == "interrupted by SIGTERM" and signal_name(raised.value) == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before
    assert exit_status(KeyboardInterrupt()) == 130 and signal_name(KeyboardInterrupt()) == "SIGINT"


def test_deferred_signals_wait_for_a_check_and_a_second_one_does_not():
    with handle_termination():
        with deferred_termination():
            os.kill(os.getpid(), signal.SIGTERM)  # recorded only: no exception inside whatever runs now
            with pytest.raises(Terminated) as raised:
                check_termination()
            assert raised.value.signum == signal.SIGTERM
            check_termination()  # raised once

            os.kill(os.getpid(), signal.SIGINT)
            with pytest.raises(Terminated) as raised:
                os.kill(os.getpid(), signal.SIGTERM)  # the second signal: at once
            assert raised.value.signum == signal.SIGTERM
            with pytest.raises(Terminated) as raised:
                check_termination()
            assert raised.value.signum == signal.SIGINT

        with pytest.raises(Terminated), deferred_termination():
            os.kill(os.getpid(), signal.SIGINT)  # still pending when the block ends: raised there
    with deferred_termination():  # no handler installed: a no-op
        check_termination()


def test_resume_hint_before_anything_was_saved(tmp_path):
    assert resume_hint(tmp_path) == (
        f"Nothing to resume yet in {tmp_path} (no config.json was written); start the run again."
    )
    (tmp_path / "config.json").write_text("{}")
    assert resume_hint(tmp_path, program="jaxcnn train") == (
        f"Run folder: {tmp_path}. Continue with: jaxcnn train --resume {tmp_path}"
    )
