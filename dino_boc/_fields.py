"""Building a frozen settings dataclass from its dict form (a section of ``config.json``, a provenance record).

One rule for every such class (``ModelConfig``, ``PreprocessConfig``, ``FeatureSpec``, ``Provenance``): the
value must be a mapping, every key a field, JSON lists become tuples where the field holds a tuple, and the
class's own ``__post_init__`` validates the values; :func:`to_fields` is the inverse (tuples as lists), and
:class:`DictForm` gives a class both as ``to_dict`` / ``from_dict``. It sits
in a layer of its own just above ``errors``, so that ``preprocess``, ``models`` and ``outputs`` share it; it
imports nothing of ours but the error classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any, ClassVar, TypeVar

from dino_boc.errors import ConfigError

__all__ = ["DictForm", "from_fields", "to_fields"]

T = TypeVar("T")


def from_fields(cls: type[T], data: Any, *, what: str, tuples: tuple[str, ...] = ()) -> T:
    """``cls(**data)`` for a dataclass ``cls``, with errors that name the section.

    Args:
        cls: a dataclass whose ``__post_init__`` validates its values.
        data: its dict form, e.g. ``json.loads(...)["model"]``.
        what: the section's name in messages (``"model config"``, ``"preprocessing"``, ...).
        tuples: fields that hold tuples; a JSON list given for one is turned into a tuple.

    Returns:
        The instance.

    Raises:
        ConfigError: ``data`` is not a mapping, has keys that are not fields of ``cls`` (the message lists
            the known ones), lacks a field without default, or holds a value ``cls`` rejects.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"the {what} is a {type(data).__name__}; expected a JSON object of fields")
    known = {f.name for f in fields(cls) if f.init}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"unknown {what} keys {sorted(unknown)}; known: {sorted(known)}")
    values = {k: tuple(v) if k in tuples and isinstance(v, list) else v for k, v in data.items()}
    try:
        return cls(**values)
    except TypeError as exc:  # a required field missing
        raise ConfigError(f"incomplete {what} {sorted(values)}: {exc}") from exc


def to_fields(obj: Any) -> dict[str, Any]:
    """The dict form of a dataclass instance, its tuple fields as lists (as JSON reads them back).

    Args:
        obj: a dataclass instance, e.g. a ``ModelConfig``.

    Returns:
        ``{field: value}`` in field order; :func:`from_fields` with ``tuples=`` those fields is its inverse.
    """
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(obj).items()}


class DictForm:
    """``to_dict`` / ``from_dict`` of a frozen settings dataclass, by :func:`to_fields` and :func:`from_fields`.

    A subclass names its section for messages (``dict_name``) and its tuple fields (``dict_tuples``).
    """

    dict_name: ClassVar[str] = "settings"
    dict_tuples: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``{field: value}``, tuples as lists."""
        return to_fields(self)

    @classmethod
    def from_dict(cls: type[T], d: Any) -> T:
        """The instance from its :meth:`to_dict` form.

        Raises:
            ConfigError: ``d`` is not a mapping, has unknown keys, lacks a required field or holds a bad value.
        """
        return from_fields(cls, d, what=cls.dict_name, tuples=cls.dict_tuples)  # type: ignore[attr-defined]
