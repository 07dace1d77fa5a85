"""One transition-dataset format for every domain: named arrays with a common first axis.

Low-level (as collected) datasets hold, per environment step ``t`` (``N`` rows)::

    observations (N, do)      what the RL policy sees
    states (N, ds)            what the low-level controller sees (e.g. unwrapped joint angles)
    actions (N, da)           executed low-level actions
    rewards (N,)
    next_observations (N, do), next_states (N, ds)
    terminals (N,) bool       true environment termination
    timeouts (N,) bool        episode truncated (time limit) -- episode ends, no termination
    episode_ids (N,) int64    episodes are contiguous runs of equal id

Domains add their own per-step arrays (e.g. the OSC's sub-step states and torques, or the
true z of a hierarchical behaviour policy under ``"z_true"``). High-level (relabelled)
datasets use the same names with ``actions`` replaced by ``z``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence

import numpy as np

from .io import PathLike, load_npz, save_npz

LOW_LEVEL_KEYS = ("observations", "states", "actions", "rewards", "next_observations", "next_states",
                  "terminals", "timeouts", "episode_ids")


@dataclass
class Dataset:
    """Column store of transitions. ``arrays[k].shape[0]`` is the same for every key."""

    arrays: Dict[str, np.ndarray]
    metadata: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        sizes = {k: np.asarray(v).shape[0] if np.asarray(v).ndim else None for k, v in self.arrays.items()}
        if any(s is None for s in sizes.values()):
            raise ValueError(f"every dataset array needs a first (row) axis; scalars: {[k for k, s in sizes.items() if s is None]}")
        if len(set(sizes.values())) > 1:
            raise ValueError(f"dataset arrays have different lengths: {sizes}")
        self.arrays = {k: np.asarray(v) for k, v in self.arrays.items()}

    def __len__(self) -> int:
        return next(iter(self.arrays.values())).shape[0] if self.arrays else 0

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            return self.arrays[key]
        except KeyError:
            raise KeyError(f"dataset has no array {key!r}; it has {sorted(self.arrays)}") from None

    def __contains__(self, key: str) -> bool:
        return key in self.arrays

    def keys(self) -> Iterable[str]:
        return self.arrays.keys()

    def require(self, keys: Sequence[str]) -> None:
        """Raise ``KeyError`` naming the missing arrays."""
        missing = [k for k in keys if k not in self.arrays]
        if missing:
            raise KeyError(f"dataset is missing arrays {missing}; it has {sorted(self.arrays)}")

    def select(self, rows: np.ndarray | slice) -> "Dataset":
        return Dataset({k: v[rows] for k, v in self.arrays.items()}, dict(self.metadata))

    def save(self, path: PathLike) -> None:
        """Atomic, deterministic ``.npz``."""
        save_npz(path, self.arrays, self.metadata)

    @classmethod
    def load(cls, path: PathLike) -> "Dataset":
        arrays, metadata = load_npz(path)
        return cls(arrays, metadata)

    @classmethod
    def concatenate(cls, parts: Sequence["Dataset"], metadata: Optional[Mapping[str, Any]] = None) -> "Dataset":
        if not parts:
            raise ValueError("parts must not be empty")
        keys = set(parts[0].arrays)
        for p in parts[1:]:
            if set(p.arrays) != keys:
                raise ValueError(f"datasets have different arrays: {sorted(keys)} vs {sorted(p.arrays)}")
        return cls({k: np.concatenate([p.arrays[k] for p in parts]) for k in sorted(keys)},
                   dict(metadata if metadata is not None else parts[0].metadata))

    def episodes(self) -> Iterator[np.ndarray]:
        """Row indices of each episode, in order."""
        ids = self["episode_ids"]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        ends = np.r_[starts[1:], len(ids)]
        for s, e in zip(starts, ends):
            yield np.arange(s, e)


class MisalignedEpisodeError(ValueError):
    """An episode whose ``next_<key>[t]`` is not ``<key>[t + 1]`` (or whose T+1 observations do not match T steps)."""


def paired_keys(dataset: Dataset) -> List[str]:
    """Arrays ``<key>`` that have a ``next_<key>`` partner (e.g. ``observations``, ``states``)."""
    return sorted(k for k in dataset.keys() if not k.startswith("next_") and f"next_{k}" in dataset)


def check_aligned(dataset: Dataset, keys: Optional[Sequence[str]] = None) -> None:
    """Raise :class:`MisalignedEpisodeError` unless ``next_<key>[t] == <key>[t+1]`` inside every episode.

    Formats that store one observation sequence per episode (Minari's T+1 observations,
    d3rlpy's next-row convention) need this. ``keys`` default: :func:`paired_keys`.
    """
    for key in paired_keys(dataset) if keys is None else keys:
        cur, nxt = dataset[key], dataset[f"next_{key}"]
        for rows in dataset.episodes():
            a, b = nxt[rows[:-1]], cur[rows[1:]]
            same = (a == b) | ((a != a) & (b != b)) if a.dtype.kind in "fc" else (a == b)
            same = same.reshape(len(rows) - 1, -1).all(1)
            if not same.all():
                t = int(np.flatnonzero(~same)[0])
                raise MisalignedEpisodeError(
                    f"episode {dataset['episode_ids'][rows[0]]!r}: next_{key}[{rows[t]}] != {key}[{rows[t + 1]}] "
                    f"(row {t} of the episode); this format stores one observation sequence per episode and needs "
                    f"contiguous transitions (relabelled data: use stride = k)")


def window_starts(dataset: Dataset, k: int, stride: Optional[int] = None) -> np.ndarray:
    """Start rows ``t`` of the k-step windows ``t..t+k-1`` that lie inside one episode.

    Windows start at each episode's first row and advance by ``stride`` (default ``k``); a
    trailing partial window is dropped. A window may end on a terminal step but never
    contain one earlier.
    """
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    stride = k if stride is None else stride
    if not isinstance(stride, (int, np.integer)) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"stride must be an int >= 1 (rows between window starts), got {stride!r}")
    terminals = dataset["terminals"].astype(bool)
    starts = []
    for rows in dataset.episodes():
        for t in range(0, len(rows) - k + 1, stride):
            if not terminals[rows[t : t + k - 1]].any():
                starts.append(rows[t])
    return np.asarray(starts, dtype=np.int64)


class EpisodeRecorder:
    """Collects per-step arrays of whole episodes into a :class:`Dataset`."""

    def __init__(self) -> None:
        self._rows: Dict[str, list] = {}
        self._episode = 0

    def add(self, **arrays: Any) -> None:
        for k, v in arrays.items():
            self._rows.setdefault(k, []).append(np.asarray(v))
        self._rows.setdefault("episode_ids", []).append(np.int64(self._episode))

    def end_episode(self) -> None:
        self._episode += 1

    def to_dataset(self, metadata: Optional[Mapping[str, Any]] = None) -> Dataset:
        return Dataset({k: np.stack(v) for k, v in self._rows.items()}, dict(metadata or {}))
