"""Minibatches of transitions: from a fixed :class:`~ohio_layers.data.Dataset` or an online replay buffer.

A batch is a ``dict`` of tensors: ``observations (B, do)``, ``actions (B, da)``, ``rewards (B,)``,
``next_observations (B, do)``, ``terminals (B,)`` (float 0/1), ``discounts (B,)`` and any extra
columns requested (e.g. ``mc_returns (B,)``).
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..data.dataset import Dataset

Batch = Dict[str, Tensor]

__all__ = ["Batch", "TransitionSampler", "ReplayBuffer", "concat_batches", "row_discount_key"]


# ---------------------------------------------------------------------------------- sampling
class TransitionSampler:
    """Uniform minibatches from a :class:`~ohio_layers.data.Dataset` (columns copied to tensors once).

    Args:
        dataset: needs ``observations, <action_key>, rewards, next_observations, terminals``.
        action_key: the action column (``"actions"`` for low-level data, ``"z"`` for relabelled).
        discount: constant ``gamma`` used when ``discount_key`` is ``None``.
        discount_key: optional per-row discount column ``(N,)``.
        extra_keys: further per-row columns to include in batches (e.g. ``"mc_returns"``).
        obs_dim, action_dim: expected sizes (checked when given).
    """

    def __init__(self, dataset: Dataset, action_key: str = "actions", discount: float = 0.99,
                 discount_key: Optional[str] = None, extra_keys: Sequence[str] = (), *,
                 obs_dim: Optional[int] = None, action_dim: Optional[int] = None,
                 device: Union[str, torch.device] = "cpu", dtype: torch.dtype = torch.float32) -> None:
        if not isinstance(dataset, Dataset):
            raise TypeError(f"dataset must be an ohio_layers.data.Dataset, got {type(dataset).__name__}")
        keys = ["observations", action_key, "rewards", "next_observations", "terminals", *extra_keys]
        if discount_key is not None:
            keys.append(discount_key)
        dataset.require(keys)
        n = len(dataset)
        if n == 0:
            raise ValueError("dataset is empty")

        def col(key: str, width: Optional[int]) -> Tensor:
            arr = np.asarray(dataset[key])
            if width is None:  # per-row scalar
                if arr.ndim == 2 and arr.shape[1] == 1:
                    arr = arr[:, 0]
                if arr.ndim != 1:
                    raise ValueError(f"dataset[{key!r}] must have shape (N,), got {arr.shape}")
            else:
                if arr.ndim != 2 or (width > 0 and arr.shape[1] != width):
                    raise ValueError(f"dataset[{key!r}] must have shape (N, {width if width > 0 else 'd'}), got {arr.shape}")
            t = torch.as_tensor(arr.astype(np.float64), dtype=dtype, device=device)
            if not bool(torch.isfinite(t).all()):
                bad = (~torch.isfinite(t.reshape(len(t), -1))).any(1)
                raise ValueError(f"dataset[{key!r}] contains NaN or inf in {int(bad.sum())} of {len(t)} rows (first "
                                 f"{bad.nonzero()[:5, 0].tolist()}); relabelled rows the inverse could not solve carry "
                                 f"z = NaN (counted in the relabel report's extra['failed']): drop them before training")
            return t

        do = obs_dim if obs_dim is not None else -1
        da = action_dim if action_dim is not None else -1
        self.columns: Dict[str, Tensor] = {
            "observations": col("observations", do),
            "actions": col(action_key, da),
            "rewards": col("rewards", None),
            "next_observations": col("next_observations", do if do > 0 else np.asarray(dataset["observations"]).shape[1]),
            "terminals": col("terminals", None),
        }
        self.columns["discounts"] = (col(discount_key, None) if discount_key is not None
                                     else torch.full((n,), float(discount), dtype=dtype, device=device))
        for key in extra_keys:
            arr = np.asarray(dataset[key])
            self.columns[key] = col(key, None if arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1) else arr.shape[1])
        self.size = n
        self.device = torch.device(device)

    def __len__(self) -> int:
        return self.size

    def sample(self, batch_size: int, generator: Optional[torch.Generator] = None) -> Batch:
        """A batch of ``batch_size`` rows drawn uniformly with replacement (torch RNG)."""
        idx = torch.randint(0, self.size, (batch_size,), generator=generator, device=self.device)
        return {k: v.index_select(0, idx) for k, v in self.columns.items()}  # faster than v[idx]


class ReplayBuffer:
    """Circular buffer of transitions with the same batch layout as :class:`TransitionSampler`.

    ``add(observations=..., actions=..., ...)`` takes rows ``(n, ...)`` (or single rows) of the
    columns given at the first call; ``sample(B)`` draws uniformly.
    """

    def __init__(self, capacity: int, device: Union[str, torch.device] = "cpu", dtype: torch.dtype = torch.float32) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity, self.device, self.dtype = int(capacity), torch.device(device), dtype
        self.columns: Dict[str, Tensor] = {}
        self.size = 0
        self._pos = 0

    def __len__(self) -> int:
        return self.size

    def add(self, **rows: Any) -> Tensor:
        """Append ``n`` rows; every column is batch-first ``(n, ...)`` (scalars per row: ``(n,)``).

        Returns the buffer indices ``(n,)`` written (fewer when ``n`` exceeds the capacity)."""
        ts = {k: torch.as_tensor(np.asarray(v, dtype=np.float64), dtype=self.dtype, device=self.device) for k, v in rows.items()}
        for k, v in ts.items():
            if v.dim() == 0:
                raise ValueError(f"column {k!r} must be batch-first (n, ...), got a scalar")
        if not self.columns:
            self.columns = {k: torch.zeros((self.capacity, *v.shape[1:]), dtype=self.dtype, device=self.device)
                            for k, v in ts.items()}
        if set(ts) != set(self.columns):
            raise KeyError(f"add() needs exactly the columns {sorted(self.columns)}, got {sorted(ts)}")
        for k, v in ts.items():
            if v.shape[1:] != self.columns[k].shape[1:]:
                raise ValueError(f"column {k!r} rows must have shape {tuple(self.columns[k].shape[1:])}, got {tuple(v.shape[1:])}")
        sizes = {k: v.shape[0] for k, v in ts.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"columns have different numbers of rows: {sizes}")
        n_rows = next(iter(sizes.values()))
        if n_rows > self.capacity:  # only the newest rows fit
            ts = {k: v[n_rows - self.capacity:] for k, v in ts.items()}
            n_rows = self.capacity
        idx = (self._pos + torch.arange(n_rows, device=self.device)) % self.capacity
        for k, v in ts.items():
            self.columns[k][idx] = v
        self._pos = int((self._pos + n_rows) % self.capacity)
        self.size = min(self.size + n_rows, self.capacity)
        return idx

    def sample(self, batch_size: int, generator: Optional[torch.Generator] = None) -> Batch:
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty ReplayBuffer")
        idx = torch.randint(0, self.size, (batch_size,), generator=generator, device=self.device)
        return {k: v.index_select(0, idx) for k, v in self.columns.items()}  # faster than v[idx]


def concat_batches(*batches: Batch) -> Batch:
    """Row-concatenate batches over their common keys."""
    keys = set(batches[0]).intersection(*batches[1:])
    return {k: torch.cat([b[k] for b in batches]) for k in sorted(keys)}


def row_discount_key(dataset: Dataset, discount_key: Optional[str], discount: float) -> Optional[str]:
    """``discount_key``, else ``"discounts"`` if the dataset has it; warns when k-step rows would get a 1-step ``discount``."""
    if discount_key is not None or "discounts" in dataset:
        return discount_key if discount_key is not None else "discounts"
    k = int(dataset.metadata.get("k", 1) or 1)
    if k > 1:
        warnings.warn(f"rows span k={k} low-level steps and carry no 'discounts' column: config.discount={discount} is used "
                      f"per row, so it must already be gamma**k (relabel(..., discount=gamma) stores it per row)", stacklevel=4)
    return None
