"""Exception classes of dino_boc.

Every class subclasses a built-in exception so that ``except ValueError`` and friends keep working.
Messages say what came in, what was expected and what to do.
"""

from __future__ import annotations

__all__ = [
    "DinoBocError",
    "InputError",
    "ChannelError",
    "ImageReadError",
    "ModelNotFoundError",
    "WeightsError",
    "ConfigError",
    "MissingExtraError",
    "ResourceLimitError",
    "OutputError",
]


class DinoBocError(Exception):
    """Base class of every error raised on purpose by dino_boc."""


class InputError(DinoBocError, ValueError):
    """An image or array does not fit: wrong dims, dtype, size, non-finite values, zero channels."""


class ChannelError(InputError, KeyError):
    """A channel index or name that the image (or model) does not have."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class ResourceLimitError(InputError):
    """An input over a configured budget (pixels decoded at once, tokens per image); raise the budget or
    make the input smaller (``--tile``, ``--resize``, ``--level``)."""


class ImageReadError(DinoBocError, OSError):
    """A file that cannot be read as an image: missing, corrupt, truncated or of an unknown format."""


class OutputError(DinoBocError, OSError):
    """An output that cannot be written: read-only folder, disk full, a folder where a file goes, a run
    already writing it, or an existing output that would be replaced without ``overwrite``."""


class ModelNotFoundError(DinoBocError, LookupError):
    """A model name, path or Hub repo that cannot be resolved."""


class WeightsError(DinoBocError, RuntimeError):
    """Weights that are missing, corrupt or do not fit the architecture."""


class ConfigError(DinoBocError, ValueError):
    """A configuration value that is unknown or out of range."""


class MissingExtraError(DinoBocError, ImportError):
    """An optional dependency is not installed; the message names the ``pip install`` to run."""


def require(module: str, extra: str):
    """Import an optional dependency or raise :class:`MissingExtraError` naming the extra.

    Args:
        module: importable module name, e.g. ``"zarr"``.
        extra: the dino-boc extra that installs it, e.g. ``"io"``.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(
            f"{module!r} is not installed; it is needed here. Install it with: pip install \"dino-boc[{extra}]\""
        ) from exc
