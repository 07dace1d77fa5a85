"""Textual specs of controllers and dynamics, as given on the command line.

Grammar::

    SPEC  := NAME [":" ARGS]                 built-in name, e.g. lqr:horizon=5
           | MODULE ":" CLASS [":" ARGS]     a user's class, e.g. mypkg.ctrl:PDController:kp=4,kd=0.5
    ARGS  := KEY "=" VALUE ("," KEY "=" VALUE)*

A VALUE is JSON when it parses as JSON (``5``, ``1e-3``, ``[10,10,1,1]``, ``true``, ``"x"``), else
a plain string (``city.json``); commas inside ``[...]``/``{...}`` do not split arguments. A
``MODULE:CLASS`` spec is recognised by the dot in MODULE or by a second segment without ``=``.

Every error is a :class:`SpecError` that quotes the spec and names its bad part (an unknown
built-in, a module that does not import, a missing class, a class of the wrong kind, an unknown
or missing constructor argument, a constructor that raised).
"""
from __future__ import annotations

import importlib
import inspect
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

__all__ = ["Spec", "SpecError", "parse_spec", "import_object", "call_with_spec"]


class SpecError(ValueError):
    """A controller/dynamics spec that cannot be parsed or built; the message names the bad part."""


@dataclass(frozen=True)
class Spec:
    """A parsed spec: ``name`` (built-in) or ``target`` (``module:Class``), and keyword ``kwargs``."""

    text: str
    name: Optional[str] = None
    target: Optional[str] = None
    kwargs: Dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name if self.name is not None else str(self.target)

    def to_dict(self) -> Dict[str, Any]:
        return {"spec": self.text, "name": self.name, "target": self.target, "kwargs": self.kwargs}


def _split_top(text: str, sep: str) -> List[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse_args(spec: str, args: str, what: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    if not args.strip():
        return out
    for item in _split_top(args, ","):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise SpecError(f"{what} spec {spec!r}: argument {item!r} is not key=value")
        if key in out:
            raise SpecError(f"{what} spec {spec!r}: argument {key!r} given twice")
        out[key] = _value(value.strip())
    return out


def parse_spec(text: str, what: str = "controller") -> Spec:
    """Parse ``text`` (module docstring grammar) into a :class:`Spec`."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError(f"{what} spec must be a non-empty string, got {text!r}")
    text = text.strip()
    head, _, rest = text.partition(":")
    second, _, tail = rest.partition(":")
    if "." in head or (rest and "=" not in second and second.strip()):
        if not second.strip().isidentifier():
            raise SpecError(f"{what} spec {text!r}: expected module:ClassName, the class part {second!r} is not a name")
        if not all(p.isidentifier() for p in head.split(".")):
            raise SpecError(f"{what} spec {text!r}: module part {head!r} is not a dotted module path")
        return Spec(text, target=f"{head}:{second.strip()}", kwargs=_parse_args(text, tail, what))
    if not head.isidentifier():
        raise SpecError(f"{what} spec {text!r}: name {head!r} is not a built-in name or module:ClassName")
    return Spec(text, name=head, kwargs=_parse_args(text, rest, what))


def import_object(spec: Spec, what: str = "controller") -> Any:
    """The object ``module:Name`` of an import-path spec."""
    if spec.target is None:
        raise SpecError(f"{what} spec {spec.text!r} is not an import path")
    module, name = spec.target.split(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        raise SpecError(f"{what} spec {spec.text!r}: module {module!r} cannot be imported ({err})") from None
    if not hasattr(mod, name):
        public = sorted(n for n in dir(mod) if not n.startswith("_"))[:20]
        raise SpecError(f"{what} spec {spec.text!r}: module {module!r} has no {name!r} (it has {public})")
    return getattr(mod, name)


def call_with_spec(factory: Callable[..., Any], spec: Spec, what: str = "controller",
                   fixed: Optional[Mapping[str, Any]] = None) -> Any:
    """``factory(**fixed, **spec.kwargs)`` with the arguments checked against its signature first."""
    kwargs = {**(fixed or {}), **spec.kwargs}
    label = spec.label
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        params = sig.parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"]
        unknown = [k for k in spec.kwargs if k not in accepted]
        if unknown and not takes_any:
            raise SpecError(f"{what} spec {spec.text!r}: unknown argument(s) {unknown} of {label}; accepted: {accepted}")
        missing = [n for n, p in params.items() if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                   and n != "self" and n not in kwargs]
        if missing:
            raise SpecError(f"{what} spec {spec.text!r}: {label} needs argument(s) {missing}")
    try:
        return factory(**kwargs)
    except SpecError:
        raise
    except Exception as err:  # noqa: BLE001 - re-raised with the spec named
        raise SpecError(f"{what} spec {spec.text!r}: {label}({', '.join(f'{k}={v!r}' for k, v in spec.kwargs.items())}) "
                        f"failed: {type(err).__name__}: {err}") from err


def split_kwargs(spec: Spec, names: Tuple[str, ...]) -> Tuple[Dict[str, Any], Spec]:
    """Take ``names`` out of ``spec.kwargs``: ``(taken, spec without them)``."""
    taken = {k: v for k, v in spec.kwargs.items() if k in names}
    rest = {k: v for k, v in spec.kwargs.items() if k not in names}
    return taken, Spec(spec.text, spec.name, spec.target, rest)
