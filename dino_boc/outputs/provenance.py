"""Provenance: what produced a feature table (spec: ``docs/outputs.md``, format_version 1).

Every output carries the same JSON: Parquet under the schema metadata key ``dino_boc``, AnnData in
``uns["dino_boc"]`` (a JSON string), ``.npy`` in the ``<stem>.provenance.json`` sidecar.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from dino_boc._fields import from_fields
from dino_boc.errors import ConfigError
from dino_boc.models.config import ChannelPool, FeatureSpec

__all__ = ["FORMAT_VERSION", "FeatureLayout", "Provenance", "library_version", "state_dict_sha256"]

FORMAT_VERSION = 1
PREPROCESSING_KEYS: tuple[str, ...] = ("normalize", "resize", "crop", "scale", "eps")
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: keys of format_version 1 outputs written under an older name -> their name now (read by ``from_dict``)
RENAMED_KEYS: dict[str, str] = {"weights_sha256": "state_dict_sha256"}


def library_version() -> str:
    """The installed dino-boc version, or ``"unknown"`` when run from a source tree without metadata."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dino-boc")
    except PackageNotFoundError:  # pragma: no cover - only outside an install
        return "unknown"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def state_dict_sha256(module: Any) -> str:
    """sha256 of a model's weights, independent of the file format they came from.

    The digest runs over the state dict in sorted key order; for each entry it takes the key (UTF-8),
    the dtype string (``torch.float32``), the shape (``(3, 4)``) and the raw little-endian bytes.

    Args:
        module: a ``torch.nn.Module`` or a state dict (name -> tensor).

    Returns:
        64 lowercase hex digits.
    """
    import torch

    state = module.state_dict() if hasattr(module, "state_dict") else dict(module)
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous().reshape(-1)
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(state[key].shape)).encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _json_ready(name: str, value: Any) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"provenance field {name!r} must be JSON-serialisable; got {value!r} ({exc})") from exc


@dataclass(frozen=True)
class FeatureLayout(FeatureSpec):
    """How tokens became the feature vector: the run's :class:`~dino_boc.models.config.FeatureSpec`
    (``n_last_blocks``, ``avgpool``, ``channel_pool``, keyword-only) plus the model family.

    Attributes:
        arch: model family, ``"boc"``, ``"ha"``, ``"channel_vit"``, ``"fixed"`` or ``"ca_mae"``.

    Raises:
        ConfigError: a bad option (:func:`~dino_boc.models.config.check_feature_options`).
    """

    arch: str

    def to_dict(self) -> dict[str, Any]:
        """``{"arch", "n_last_blocks", "avgpool", "channel_pool"}``, in the order of format_version 1."""
        return {"arch": self.arch, **{k: v for k, v in super().to_dict().items() if k != "arch"}}


@dataclass(frozen=True)
class Provenance:
    """What produced a feature table; written into every output.

    Attributes:
        model_name: registry name, directory or Hub id of the model.
        state_dict_sha256: :func:`state_dict_sha256` of the weights (the tensors, whatever file they came from),
            or None when unknown. Not ``model.weights_sha256``, the hash of the weights FILE. Outputs written
            before this name carry it as ``weights_sha256``; :meth:`from_dict` reads both.
        pretrained: False for random weights (never call those pretrained).
        preprocessing: ``PreprocessConfig.to_dict()`` of the run; must hold normalize, resize, crop,
            scale and eps.
        feature_layout: :class:`FeatureLayout` (a dict is converted).
        tiling: large-image handling, e.g. ``{"size": 224, "reduce": "mean"}``; None = whole image
            (after resize/crop).
        options: other settings that change the numbers (dims, z projection, single-cell crop size,
            mask outside the object, ...); free-form JSON.
        dino_boc_version: library version that wrote the table.
        created: ISO 8601 UTC time the run started.
    """

    model_name: str
    state_dict_sha256: str | None
    pretrained: bool
    preprocessing: dict[str, Any]
    feature_layout: FeatureLayout
    tiling: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    dino_boc_version: str = field(default_factory=library_version)
    created: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        if isinstance(self.feature_layout, Mapping):
            object.__setattr__(self, "feature_layout", FeatureLayout.from_dict(self.feature_layout))
        if not isinstance(self.feature_layout, FeatureLayout):
            kind = type(self.feature_layout).__name__
            raise ConfigError(f"feature_layout must be a FeatureLayout or dict; got {kind}")
        pre = _json_ready("preprocessing", dict(self.preprocessing))
        missing = [k for k in PREPROCESSING_KEYS if k not in pre]
        if missing:
            raise ConfigError(f"preprocessing lacks {missing}; pass PreprocessConfig.to_dict() of the run")
        object.__setattr__(self, "preprocessing", pre)
        tiling = None if self.tiling is None else _json_ready("tiling", dict(self.tiling))
        object.__setattr__(self, "tiling", tiling)
        object.__setattr__(self, "options", _json_ready("options", dict(self.options)))
        sha = self.state_dict_sha256
        if sha is not None and not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
            raise ConfigError(f"state_dict_sha256={sha!r} must be 64 lowercase hex digits or None")
        object.__setattr__(self, "pretrained", bool(self.pretrained))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict, with ``format_version`` first."""
        return {"format_version": FORMAT_VERSION, **asdict(self), "feature_layout": self.feature_layout.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Provenance":
        """Inverse of :meth:`to_dict`; also reads outputs written before a key was renamed (:data:`RENAMED_KEYS`).

        Raises:
            ConfigError: a newer format_version, or unknown / missing keys.
        """
        data = dict(data)
        for old, new in RENAMED_KEYS.items():
            if old in data:
                if new in data:
                    raise ConfigError(f"provenance holds both {old!r} (the old name) and {new!r}; expected one")
                data[new] = data.pop(old)
        version = data.pop("format_version", None)
        if version != FORMAT_VERSION:
            raise ConfigError(
                f"provenance format_version {version!r} is not {FORMAT_VERSION}; "
                f"upgrade dino-boc (pip install -U dino-boc) to read this output"
            )
        return from_fields(cls, data, what="provenance")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Provenance":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"provenance is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    def differences(self, other: "Provenance") -> list[str]:
        """Fields (except ``created``) whose values differ; empty when a run may resume the other's."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [k for k in mine if k != "created" and mine[k] != theirs[k]]

    @classmethod
    def from_model(
        cls,
        model: Any,
        *,
        n_last_blocks: int,
        avgpool: bool,
        channel_pool: ChannelPool = FeatureSpec.channel_pool,
        preprocessing: Any = None,
        tiling: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> "Provenance":
        """Provenance of a run with a dino_boc model.

        Args:
            model: an ``EmbeddingModel`` (uses ``name``, ``pretrained``, ``config.arch``, ``preprocess``
                and its state dict).
            n_last_blocks, avgpool, channel_pool: the feature layout of the run.
            preprocessing: the run's ``PreprocessConfig`` (or its dict) when it differs from
                ``model.preprocess``.
            tiling, options: see the class attributes.
        """
        pre = preprocessing if preprocessing is not None else model.preprocess
        pre = pre.to_dict() if hasattr(pre, "to_dict") else dict(pre)
        return cls(
            model_name=str(model.name),
            state_dict_sha256=state_dict_sha256(model),
            pretrained=bool(model.pretrained),
            preprocessing=pre,
            feature_layout=FeatureLayout(
                arch=str(model.config.arch), n_last_blocks=n_last_blocks, avgpool=avgpool, channel_pool=channel_pool
            ),
            tiling=None if tiling is None else dict(tiling),
            options=dict(options or {}),
        )
