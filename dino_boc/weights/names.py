"""Names that become paths: cache folder names, Hub revisions, and replacing a cached model folder safely.

A model name passed to ``add_weights(name=)`` / ``dino-boc weights add --name`` is one path component
inside :func:`~dino_boc.weights.registry.cache_dir`; a Hub revision is a branch or tag name or a 40-hex
commit (huggingface_hub joins it to ``refs/`` and ``snapshots/`` of its cache offline). Neither can reach
outside its cache. A cached model folder carries a marker file; only a folder with that marker (or a
dino_boc 0.1 folder holding nothing but ``config.json`` and ``model.safetensors``) is ever replaced.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from dino_boc.errors import ConfigError, WeightsError
from dino_boc.models.hub_format import CONFIG_NAME, WEIGHTS_NAME

__all__ = ["MARKER_NAME", "check_model_name", "check_revision", "cache_folder", "is_model_folder",
           "check_replaceable", "replace_model_folder"]

#: file written into every model folder that ``add_weights`` caches
MARKER_NAME = ".dino_boc_model"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REF_CHARS = re.compile(r"^[A-Za-z0-9._/-]{1,255}$")


def check_model_name(name: str) -> str:
    """``name`` if it is a safe cache folder name: letters, digits, ``.``, ``_``, ``-``; starts with a
    letter or digit; no ``..``; at most 128 characters.

    Raises:
        ConfigError: anything else (a path separator, an absolute path, ``..``, an empty name).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise ConfigError(
            f"model name {name!r} is not allowed; expected one folder name of letters, digits, '.', '_' and '-' "
            "starting with a letter or digit (e.g. 'dino-boc-vitl16' or 'my-model.v2'), no '/' and no '..'"
        )
    return name


def check_revision(revision: str | None) -> str | None:
    """``revision`` if it is None, a 40-hex commit, or a branch/tag name by git's rules.

    Accepted: letters, digits, ``.``, ``_``, ``-`` and ``/`` (e.g. ``main``, ``v1.0``, ``refs/pr/3``); no
    ``..``, no empty or dot-leading path component, no trailing ``/`` or ``.lock``.

    Raises:
        ConfigError: anything else, e.g. ``'../../../x'``.
    """
    if revision is None or (isinstance(revision, str) and _COMMIT.fullmatch(revision)):
        return revision
    parts = revision.split("/") if isinstance(revision, str) else []
    if (not isinstance(revision, str) or not _REF_CHARS.fullmatch(revision) or ".." in revision
            or any(not p or p.startswith(".") or p.endswith(".lock") for p in parts)):
        raise ConfigError(
            f"revision {revision!r} is not a branch or tag name nor a 40-hex commit; expected e.g. 'main', "
            "'v1.0' or a full commit hash"
        )
    return revision


def cache_folder(root: Path, name: str) -> Path:
    """The folder of model ``name`` under the cache ``root``; guaranteed to be a direct child of ``root``.

    Raises:
        ConfigError: an unsafe name.
        WeightsError: the folder (e.g. through a symbolic link) resolves outside ``root``.
    """
    target = root / check_model_name(name)
    real_root = root.resolve()
    if target.is_symlink() or target.resolve().parent != real_root:
        raise WeightsError(
            f"{target} resolves to {target.resolve()}, outside the cache {real_root}; remove that link or "
            "choose another name"
        )
    return target


def is_model_folder(folder: Path) -> bool:
    """Whether ``folder`` is a model folder that dino_boc cached (and may therefore replace)."""
    if not folder.is_dir() or folder.is_symlink():
        return False
    if (folder / MARKER_NAME).is_file():
        return True
    # dino_boc 0.1 wrote no marker: exactly its two files, the config naming dino_boc as its library
    if {p.name for p in folder.iterdir()} != {CONFIG_NAME, WEIGHTS_NAME}:
        return False
    try:
        meta = json.loads((folder / CONFIG_NAME).read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("library") == "dino_boc"


def check_replaceable(target: Path) -> None:
    """Raise unless ``target`` is absent or a model folder that dino_boc cached (see :func:`is_model_folder`).

    Raises:
        WeightsError: naming the folder; nothing is touched.
    """
    if (target.exists() or target.is_symlink()) and not is_model_folder(target):
        raise WeightsError(
            f"{target} exists and is not a model folder cached by dino_boc (no {MARKER_NAME} file); nothing was "
            "changed — remove or rename it yourself, or choose another --name"
        )


def replace_model_folder(target: Path, write: Callable[[Path], None], *, marker: dict) -> None:
    """Write a model folder with ``write(tmp)`` beside ``target``, then swap it in.

    A previous folder at ``target`` is replaced only if :func:`is_model_folder` says dino_boc made it; it is
    moved aside first and deleted only after the new folder is in place.

    Raises:
        WeightsError: ``target`` exists and is not a model folder of dino_boc (nothing is touched).
    """
    check_replaceable(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-new-", dir=target.parent))
    old: Path | None = None
    try:
        write(tmp)
        (tmp / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n")
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
            os.replace(target, old / "model")
        try:
            os.replace(tmp, target)
        except OSError:
            if old is not None:  # put the previous model back
                os.replace(old / "model", target)
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
