"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from dino_boc.outputs import read_manifests


def _kill_after_shards(proc: subprocess.Popen, shards: Path | str, *, n: int = 3, timeout: float = 120.0) -> None:
    """SIGKILL ``proc`` (a ``dino-boc embed`` run) once rank 0 has committed ``n`` shards under ``shards``
    (a folder, or the URL prefix of shards written to a bucket).

    Fails the test if the run finished first (the corpus was too small to be interrupted). ``timeout`` only
    bounds the wait for a run that hangs; it is not a speed check.
    """
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        manifests = read_manifests(shards)
        if manifests and len(manifests[0].shards) >= n:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    if proc.returncode == 0:
        pytest.fail("the run finished before it could be killed; make the corpus larger")


@pytest.fixture
def kill_after_shards():
    """:func:`_kill_after_shards`: interrupt an embedding run with kill -9 at a committed shard."""
    return _kill_after_shards
