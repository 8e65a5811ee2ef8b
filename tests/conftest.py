"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from dino_boc.outputs import read_manifests


def _kill_after_shards(proc: subprocess.Popen, shards: Path | str, *, n: int = 3) -> None:
    """SIGKILL ``proc`` (a ``dino-boc embed`` run) once rank 0 has committed ``n`` shards under ``shards``
    (a folder, or the URL prefix of shards written to a bucket).

    Waits on the run's own progress, not on a clock: the loop ends when the shards are there (kill) or when
    the run ends by itself, which fails the test (the corpus was too small to be interrupted).
    """
    while proc.poll() is None:
        manifests = read_manifests(shards)
        if manifests and len(manifests[0].shards) >= n:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)  # polling interval only
    proc.wait()
    if proc.returncode == 0:
        pytest.fail("the run finished before it could be killed; make the corpus larger")


@pytest.fixture
def kill_after_shards():
    """:func:`_kill_after_shards`: interrupt an embedding run with kill -9 at a committed shard."""
    return _kill_after_shards


class Fifo:
    """A FIFO (named pipe) at ``path`` whose writer thread notes whether anything opened it for reading.

    Opening a FIFO for reading blocks until a writer comes; the writer thread is that writer, so code under
    test that wrongly opens it gets an empty read instead of hanging the suite, and :attr:`opened` tells.
    No clock is involved. :meth:`close` releases the writer (opening the read end without blocking).
    """

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path, self.opened, self._closing = path, False, False
        self._thread = threading.Thread(target=self._write, daemon=True)
        self._thread.start()

    def _write(self) -> None:
        fd = os.open(self.path, os.O_WRONLY)  # returns once a reader has opened the FIFO
        self.opened = self.opened or not self._closing
        os.close(fd)

    def close(self) -> None:
        self._closing = True
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self._thread.join()
        os.close(fd)


@pytest.fixture
def fifo():
    """``fifo(path)`` makes a :class:`Fifo`; every FIFO made is closed after the test."""
    made: list[Fifo] = []

    def make(path: Path) -> Fifo:
        made.append(Fifo(path))
        return made[-1]

    yield make
    for f in made:
        f.close()
