"""A real small or read-only filesystem for fault tests: a tmpfs mounted for one test."""

import contextlib
import pathlib
import subprocess

import pytest


@contextlib.contextmanager
def tmpfs(mount_point: pathlib.Path, options: str):
    """Mount a tmpfs with `options` (e.g. "size=256k", "ro") at `mount_point` for the block.

    Needs root and a sandbox that allows mounting; where it is refused the test is skipped."""
    mount_point.mkdir(exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)
