"""Argument checks shared by every module: errors name the argument and the expected form."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

Dim = Union[int, str, None]


def check_tensor(
    name: str,
    x: object,
    shape: Sequence[Dim],
    *,
    finite: bool = True,
    dtype_floating: bool = True,
) -> torch.Tensor:
    """Check that ``x`` is a tensor of the given shape.

    ``shape`` entries are ints (must match), ``None`` or a string label (any size; the label
    only appears in the message, e.g. ``("B", 4)``). Raises ``TypeError``/``ValueError``
    naming ``name``. Returns ``x`` unchanged.
    """
    expected = "(" + ", ".join(str(d) if d is not None else "*" for d in shape) + ")"
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {expected}, got {type(x).__name__}")
    if x.dim() != len(shape) or any(
        isinstance(d, int) and s != d for s, d in zip(x.shape, shape)
    ):
        raise ValueError(f"{name} must have shape {expected}, got {tuple(x.shape)}")
    if dtype_floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if finite and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def check_same_batch(**tensors: torch.Tensor) -> int:
    """All tensors share the leading batch size; returns it."""
    sizes = {k: v.shape[0] for k, v in tensors.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"batch sizes differ: {sizes}")
    return next(iter(sizes.values()))


def check_in_bounds(
    name: str, x: torch.Tensor, low: Optional[torch.Tensor], high: Optional[torch.Tensor], atol: float = 1e-9
) -> None:
    """Raise if any entry of ``x`` lies outside ``[low, high]`` (broadcast over the batch)."""
    if low is not None and bool((x < low.to(x) - atol).any()):
        bad = (x < low.to(x) - atol).nonzero()[0].tolist()
        raise ValueError(f"{name} is below its lower bound at index {bad}: bounds are [{low.tolist()}, {high.tolist() if high is not None else None}]")
    if high is not None and bool((x > high.to(x) + atol).any()):
        bad = (x > high.to(x) + atol).nonzero()[0].tolist()
        raise ValueError(f"{name} is above its upper bound at index {bad}: bounds are [{low.tolist() if low is not None else None}, {high.tolist()}]")


def check_config_keys(cls: type, values: dict) -> None:
    """Raise ``TypeError`` naming unknown keys for a config dataclass ``cls``."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TypeError(f"unknown {cls.__name__} keys {unknown}; known keys: {sorted(known)}")
