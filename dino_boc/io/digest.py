"""Checksums of files: the one file hash used for weight files, shards and manifests."""

from __future__ import annotations

import hashlib
import os

__all__ = ["file_sha256"]

_BLOCK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (64 lowercase hex digits), read in 1 MiB blocks (memory stays bounded).

    This is the hash of a *file*; the hash of a model's weights whatever file they came from is
    :func:`dino_boc.outputs.provenance.state_dict_sha256`.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
