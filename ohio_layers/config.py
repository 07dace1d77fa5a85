"""One validation layer for every settings dataclass (agent configs, experiment configs).

A config is a dataclass deriving from :class:`Config`. Declaring a field is enough to get it
checked: its type annotation decides what is accepted, and optional constraints ride along in the
field's metadata (:func:`setting`)::

    @dataclasses.dataclass
    class MyConfig(Config):
        steps: int = setting(1000, ge=1)
        lr: float = setting(3e-4, gt=0)
        losses: Tuple[str, ...] = setting(("nll",), choices=("nll", "mse"))
        note: Optional[str] = None

What the annotation enforces (on construction, so a config object is always valid):

* ``int``: a Python/numpy integer, or a float with an integral value (JSON ``1e5``); not a bool,
  not a string, not ``2.5``.
* ``float``: any real number (not a bool or a string), finite unless ``finite=False``.
* ``bool`` / ``str``: exactly that type.
* ``Tuple[X, ...]``: a list or tuple of X, converted to a tuple; a single scalar becomes a
  one-element tuple (``--set seeds=5``), a string is never split into letters; non-empty unless
  ``allow_empty=True``. Constraints apply to every element.
* ``Optional[X]``: ``None`` or X. ``Dict[...]``: a mapping (copied to a ``dict``). ``Any``: anything.

Errors are ``TypeError`` / ``ValueError`` naming the class, the field and what was expected.
Cross-field rules go in :meth:`Config.check`, which runs after the field checks.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import typing
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union

__all__ = ["Config", "setting", "validate"]

C = TypeVar("C", bound="Config")
_MISSING = dataclasses.MISSING


def setting(default: Any = _MISSING, *, default_factory: Any = _MISSING, ge: Optional[float] = None,
            gt: Optional[float] = None, le: Optional[float] = None, lt: Optional[float] = None,
            choices: Optional[Sequence[Any]] = None, finite: bool = True, allow_empty: bool = False) -> Any:
    """A dataclass field with constraints (checked by :class:`Config` on construction).

    Args:
        default, default_factory: as :func:`dataclasses.field`.
        ge, gt, le, lt: numeric bounds (``>=``, ``>``, ``<=``, ``<``), per element for tuples.
        choices: allowed values (per element for tuples).
        finite: floats must be finite (default).
        allow_empty: tuples may be empty.
    """
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": None if choices is None else tuple(choices),
            "finite": finite, "allow_empty": allow_empty}
    kw: Dict[str, Any] = {"metadata": {"ohio": meta}}
    if default is not _MISSING:
        kw["default"] = default
    if default_factory is not _MISSING:
        kw["default_factory"] = default_factory
    return dataclasses.field(**kw)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Union:
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin in (tuple, Tuple):
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin in (dict, Dict, Mapping):
        return "a mapping"
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(where: str, value: Any, tp: Any, meta: Mapping[str, Any]) -> Any:
    """``value`` converted to ``tp`` with the constraints in ``meta``, or a named error."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        errors = []
        for a in rest:
            try:
                return _coerce(where, value, a, meta)
            except (TypeError, ValueError) as err:
                errors.append(err)
        if len(errors) == 1:
            raise errors[0]
        raise TypeError(f"{where} must be {_describe(tp)}, got {value!r}")
    if origin in (tuple, Tuple):
        args = typing.get_args(tp)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
                value = value.tolist()
            value = list(value) if isinstance(value, (list, tuple)) else [value]
        inner = {**meta, "allow_empty": True}  # emptiness is checked on the field itself, not its entries
        if len(args) == 2 and args[1] is Ellipsis:
            items = tuple(_coerce(f"{where}[{i}]", v, args[0], inner) for i, v in enumerate(value))
        else:
            if len(value) != len(args):
                raise ValueError(f"{where} must have {len(args)} entries, got {len(value)}")
            items = tuple(_coerce(f"{where}[{i}]", v, a, inner) for i, (v, a) in enumerate(zip(value, args)))
        if not items and not meta.get("allow_empty", False):
            raise ValueError(f"{where} must not be empty")
        return items
    if origin in (dict, Dict) or tp in (dict, Dict) or origin is Mapping or (origin is not None and origin is
                                                                          getattr(typing, "Mapping", None)):
        if not isinstance(value, Mapping):
            raise TypeError(f"{where} must be a mapping (JSON object), got {type(value).__name__} {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool) and type(value).__name__ != "bool_":
            raise TypeError(f"{where} must be true or false, got {type(value).__name__} {value!r}")
        return bool(value)
    if tp is int:
        if isinstance(value, bool) or type(value).__name__ == "bool_":
            raise TypeError(f"{where} must be an integer, got {value!r}")
        if isinstance(value, numbers.Integral):
            value = int(value)
        elif isinstance(value, numbers.Real) and math.isfinite(float(value)) and float(value).is_integer():
            value = int(value)
        else:
            raise TypeError(f"{where} must be an integer, got {type(value).__name__} {value!r}")
        return _check_range(where, value, meta)
    if tp is float:
        if isinstance(value, bool) or type(value).__name__ == "bool_" or not isinstance(value, numbers.Real):
            raise TypeError(f"{where} must be a number, got {type(value).__name__} {value!r}")
        value = float(value)
        if meta.get("finite", True) and not math.isfinite(value):
            raise ValueError(f"{where} must be finite, got {value}")
        if math.isnan(value):
            raise ValueError(f"{where} must not be NaN")
        return _check_range(where, value, meta)
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"{where} must be a string, got {type(value).__name__} {value!r}")
        return _check_range(where, value, meta)
    return value


def _check_range(where: str, value: Any, meta: Mapping[str, Any]) -> Any:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ValueError(f"{where} must be one of {list(choices)}, got {value!r}")
    for key, ok, word in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                          ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
        bound = meta.get(key)
        if bound is not None and not ok(value, bound):
            raise ValueError(f"{where} must be {word} {bound}, got {value!r}")
    return value


def validate(obj: Any) -> None:
    """Check and normalise every field of the dataclass instance ``obj`` in place."""
    hints = typing.get_type_hints(type(obj))
    cls = type(obj).__name__
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        meta = f.metadata.get("ohio", {})
        value = _coerce(f"{cls}.{f.name}", getattr(obj, f.name), hints.get(f.name, Any), meta)
        object.__setattr__(obj, f.name, value)


@dataclasses.dataclass
class Config:
    """Base of every settings dataclass: fields checked on construction, dict round trip.

    Subclasses add fields (checked by their annotations and :func:`setting` metadata) and may
    override :meth:`check` for rules between fields (call ``super().check()``).
    """

    def __post_init__(self) -> None:
        validate(self)
        self.check()

    def check(self) -> None:
        """Rules between fields; raise ``ValueError`` naming them."""

    @classmethod
    def from_dict(cls: Type[C], values: Mapping[str, Any]) -> C:
        """Build from a dict; unknown keys raise ``TypeError`` naming them and listing the known ones."""
        if not isinstance(values, Mapping):
            raise TypeError(f"{cls.__name__} values must be a mapping, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"unknown {cls.__name__} keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    @classmethod
    def coerce(cls: Type[C], config: Union[C, Mapping[str, Any], None]) -> C:
        """``None`` -> defaults, dict -> :meth:`from_dict`, instance -> itself."""
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        if isinstance(config, Mapping):
            return cls.from_dict(config)
        raise TypeError(f"config must be a {cls.__name__}, a dict or None, got {type(config).__name__}")

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict (tuples as lists), JSON friendly."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}
