"""Relabel a low-level dataset with high-level actions recovered by an inverse solver.

Each k-step window ``t..t+k-1`` of an episode becomes one high-level transition::

    (observations[t], states[t], z*, sum_{l<k} rewards[t+l], next_observations[t+k-1],
     next_states[t+k-1], terminals[t+k-1], timeouts[t+k-1])

plus the solver's ``residual``, ``converged`` and ``iterations``. The work is done in chunks;
every finished chunk is written atomically to ``<out>.parts/``, so an interrupted run resumes
where it stopped and produces byte-identical output.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.dataset import Dataset, window_starts
from ..data.io import PathLike, atomic_write_bytes
from .problem import InverseProblem
from .result import InverseResult

Inverter = Callable[[Dataset, np.ndarray], InverseResult]
"""``(dataset, window start rows (B,)) -> InverseResult`` -- any inverse method fits here."""


@dataclass
class ProblemInverter:
    """Inverts windows of a dataset with an :class:`InverseProblem` and a solver.

    ``init`` (e.g. an ``AnalyticSolver``) provides the starting point of ``solver``.
    """

    problem: InverseProblem
    solver: Any
    init: Any = None
    dtype: torch.dtype = torch.float64
    state_key: str = "states"

    def __call__(self, dataset: Dataset, starts: np.ndarray) -> InverseResult:
        batch = self.problem.batch_from_dataset(dataset, starts, self.dtype, self.state_key)
        z0 = None if self.init is None else self.init.solve(self.problem, batch).z
        return self.solver.solve(self.problem, batch, z0)

    def describe(self) -> str:
        if hasattr(self.solver, "describe"):  # e.g. a trained network: its own description includes its weights
            return f"{self.solver.describe()}+init={type(self.init).__name__ if self.init is not None else None}"
        return f"{type(self.solver).__name__}{asdict(self.solver) if hasattr(self.solver, '__dataclass_fields__') else ''}" \
               f"+init={type(self.init).__name__ if self.init is not None else None}+match={self.problem.match}"


@dataclass
class RelabelReport:
    """Residual statistics of a relabelled dataset."""

    windows: int
    tolerance: float
    reproduced_share: float  # share of windows with residual <= tolerance
    converged_share: float
    residual_median: float
    residual_p90: float
    residual_p99: float
    residual_max: float
    seconds: float = 0.0
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_arrays(cls, residual: np.ndarray, converged: np.ndarray, tolerance: float, seconds: float = 0.0) -> "RelabelReport":
        if residual.size == 0:
            return cls(0, tolerance, float("nan"), float("nan"), *(float("nan"),) * 4, seconds)
        # a flagged window (NaN residual) counts as neither reproduced nor converged, and is
        # reported in extra["failed"] instead of turning every statistic into NaN
        finite = np.isfinite(residual)
        r = residual[finite] if finite.any() else np.full(1, np.nan)
        q = np.quantile(r, [0.5, 0.9, 0.99])
        return cls(int(residual.size), tolerance, float((residual <= tolerance).mean()), float(converged.mean()),
                   float(q[0]), float(q[1]), float(q[2]), float(r.max()), seconds,
                   {"failed": int((~finite).sum())})

    def __str__(self) -> str:
        failed = self.extra.get("failed", 0)
        return (f"{self.windows} windows: {100 * self.reproduced_share:.2f}% reproduced within {self.tolerance:g}, "
                f"{100 * self.converged_share:.2f}% converged; residual median {self.residual_median:.3g}, "
                f"p90 {self.residual_p90:.3g}, p99 {self.residual_p99:.3g}, max {self.residual_max:.3g}"
                + (f"; {failed} windows failed (NaN residual, see the converged column)" if failed else ""))


def high_level_rows(dataset: Dataset, starts: np.ndarray, k: int, extra_keys: Sequence[str] = ()) -> Dict[str, np.ndarray]:
    """The non-z columns of the high-level transitions for windows starting at ``starts``."""
    dataset.require(["rewards", "terminals", "episode_ids"])
    last = starts + k - 1
    rows = starts[:, None] + np.arange(k)[None, :]
    out: Dict[str, np.ndarray] = {"rewards": dataset["rewards"][rows].sum(1), "episode_ids": dataset["episode_ids"][starts]}
    for key in ("observations", "states"):
        if key in dataset:
            out[key] = dataset[key][starts]
            out["next_" + key] = dataset["next_" + key][last]
    for key in ("terminals", "timeouts"):
        if key in dataset:
            out[key] = dataset[key][last]
    for key in extra_keys:
        out[key] = dataset[key][starts]
    return out


def relabel(
    dataset: Dataset,
    inverter: Inverter,
    k: int,
    out_path: PathLike,
    *,
    chunk_size: int = 4096,
    stride: Optional[int] = None,
    tolerance: float = 1e-6,
    resume: bool = True,
    progress: bool = True,
    extra_keys: Sequence[str] = (),
    description: Optional[str] = None,
    discount: Optional[float] = None,
    engine: str = "serial",
    workers: int = 2,
) -> tuple:
    """Relabel every k-step window of ``dataset``; returns ``(high_level Dataset, RelabelReport)``.

    Args:
        inverter: ``(dataset, starts) -> InverseResult`` (e.g. :class:`ProblemInverter`).
        k: window length (low-level steps per high-level decision).
        out_path: final ``.npz``; chunks go to ``<out_path>.parts/`` and are removed at the end.
        chunk_size: windows per chunk (one solver call each).
        stride: rows between window starts (default k). For data from a flat policy every start
            is a valid decision point, so ``stride < k`` yields more high-level transitions;
            data from a hierarchical policy should keep its own decision grid (``stride = k``).
        tolerance: residual below which a window counts as reproduced.
        resume: reuse finished chunks of an interrupted run with the same inputs. The chunks'
            ``manifest.json`` records a content hash of the dataset, a hash of the inverter's
            settings (solver fields, controller parameters and buffers, problem settings) and
            ``k``, ``stride``, ``chunk_size``; chunks are reused only on an exact match. Chunks of
            another run raise ``RuntimeError`` naming what differs (``resume=False`` discards them).
        extra_keys: per-step arrays copied from the window start (e.g. ``"z_true"``).
        discount: low-level ``gamma``. Given, each row also stores ``discounts = gamma**k`` (its
            SMDP discount; ``rewards`` stay the undiscounted k-step sums) and the agents' ``fit``
            uses that column, so the k-step discount cannot be forgotten.
        engine: ``"serial"`` (this process) or ``"ray"``: shards of whole chunks solved by
            ``workers`` Ray tasks, byte-identical output (:mod:`ohio_layers.inverse.sharded`).
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    if discount is not None and not (isinstance(discount, (int, float)) and 0.0 <= discount <= 1.0):
        raise ValueError(f"discount must be in [0, 1] or None, got {discount!r}")
    if engine not in ("serial", "ray"):
        raise ValueError(f"engine must be 'serial' or 'ray', got {engine!r}")
    if engine == "ray":
        from .sharded import relabel_sharded

        return relabel_sharded(relabel, dataset, inverter, k, out_path, workers=workers, chunk_size=chunk_size,
                               stride=stride, tolerance=tolerance, resume=resume, progress=progress,
                               extra_keys=extra_keys, description=description, discount=discount)
    out_path = Path(out_path)
    starts = window_starts(dataset, k, stride)
    if starts.size == 0:  # checked before anything is written, so a failed call leaves nothing behind
        raise ValueError(f"dataset has no complete window of k={k} steps")
    desc = description or (inverter.describe() if hasattr(inverter, "describe") else repr(inverter))
    manifest_data = {
        "version": 2, "k": int(k), "stride": int(stride or k), "chunk_size": int(chunk_size),
        "windows": int(starts.size), "extra_keys": list(extra_keys),
        "data": dataset_digest(dataset), "settings": settings_digest(inverter, desc),
    }
    parts = out_path.with_name(out_path.name + ".parts")
    _prepare_parts(parts, manifest_data, resume)

    n_chunks = (starts.size + chunk_size - 1) // chunk_size
    t0 = time.perf_counter()
    bar = tqdm(range(n_chunks), desc="relabel", unit="chunk", disable=not progress)
    for i in bar:
        path = parts / f"chunk_{i:06d}.npz"
        if path.exists():
            continue
        s = starts[i * chunk_size : (i + 1) * chunk_size]
        res = inverter(dataset, s)
        cols = high_level_rows(dataset, s, k, extra_keys)
        cols.update(z=res.z.detach().cpu().double().numpy(), residual=res.residual.detach().cpu().double().numpy(),
                    converged=res.converged.cpu().numpy().astype(bool), iterations=res.iterations.cpu().numpy().astype(np.int64))
        Dataset(cols).save(path)
        bar.set_postfix(residual_median=f"{float(np.median(cols['residual'])):.2e}")
    chunks = [Dataset.load(parts / f"chunk_{i:06d}.npz") for i in range(n_chunks)]
    seconds = time.perf_counter() - t0
    merged = Dataset.concatenate(chunks)
    report = RelabelReport.from_arrays(merged["residual"], merged["converged"], tolerance)
    merged.metadata = {"k": k, "stride": stride or k, "inverter": desc, "tolerance": tolerance, "source": dict(dataset.metadata),
                       "report": {k_: v for k_, v in asdict(report).items() if k_ != "seconds"}}
    if discount is not None:  # per-row SMDP discount (added after the chunks, so resuming is unaffected)
        merged.arrays["discounts"] = np.full(len(merged), float(discount) ** k)
        merged.metadata["discount"] = float(discount)
    merged.save(out_path)
    shutil.rmtree(parts)
    report.seconds = seconds
    return merged, report


# ------------------------------------------------------------------ resume manifest
_MANIFEST_LABELS = {"data": "the dataset content", "settings": "the inverter settings (solver, controller, problem)",
                    "k": "k", "stride": "stride", "chunk_size": "chunk_size", "windows": "the number of windows",
                    "extra_keys": "extra_keys", "version": "the manifest format"}


def _prepare_parts(parts: Path, manifest: Dict[str, Any], resume: bool) -> None:
    """Make ``parts`` hold only chunks of the run described by ``manifest`` (or raise naming the difference)."""
    path = parts / "manifest.json"
    if parts.exists():
        chunks = list(parts.glob("chunk_*.npz"))
        try:
            old = json.loads(path.read_text()) if path.exists() else None
        except (OSError, ValueError):
            old = {"version": "unreadable"}
        if old != manifest:
            if resume and chunks:
                if old is None:
                    why = "it has no manifest.json"
                else:
                    why = "they differ in " + ", ".join(_MANIFEST_LABELS.get(k_, k_) for k_ in sorted(
                        set(manifest) | set(old)) if old.get(k_) != manifest.get(k_))
                raise RuntimeError(f"{parts} holds {len(chunks)} chunks of a different relabelling run ({why}); "
                                   f"delete it or pass resume=False to recompute")
            shutil.rmtree(parts)
        elif not resume:
            shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(manifest, sort_keys=True).encode())


def dataset_digest(dataset: Dataset) -> str:
    """SHA-256 of every array of ``dataset`` (names, dtypes, shapes and bytes) and its metadata."""
    h = hashlib.sha256()
    for key in sorted(dataset.keys()):
        a = np.ascontiguousarray(dataset[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes() if a.dtype != object else repr(a.tolist()).encode())
    h.update(json.dumps(dataset.metadata, sort_keys=True, default=repr).encode())
    return h.hexdigest()


def settings_digest(inverter: Any, description: str = "") -> str:
    """SHA-256 of everything that determines the inverter's answer, stable across processes.

    Walks dataclass fields, module parameters, buffers and plain attributes, tensors and arrays
    (bytes), containers and callables (qualified names); memory addresses never enter. A plain
    function inverter is keyed on its qualified name and ``description`` (its ``describe()``)
    only; use a class (e.g. :class:`ProblemInverter`) to have its settings checked.
    """
    h = hashlib.sha256(description.encode())
    _digest_into(h, inverter, depth=0, seen=set())
    return h.hexdigest()


def _digest_into(h: Any, obj: Any, depth: int, seen: set) -> None:
    put = lambda x: h.update((str(x) + "|").encode())  # noqa: E731
    if obj is None or isinstance(obj, (bool, int, float, str, torch.dtype, torch.device, np.generic)):
        put(f"{type(obj).__name__}:{obj!r}")
        return
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        put(f"tensor:{t.dtype}:{tuple(t.shape)}")
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
        return
    if isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        put(f"array:{a.dtype.str}:{a.shape}")
        h.update(a.tobytes() if a.dtype != object else repr(a.tolist()).encode())
        return
    if depth > 8 or id(obj) in seen:
        put(f"ref:{type(obj).__qualname__}")
        return
    seen.add(id(obj))
    if isinstance(obj, (list, tuple)):
        put(f"{type(obj).__name__}:{len(obj)}")
        for x in obj:
            _digest_into(h, x, depth + 1, seen)
        return
    if isinstance(obj, dict):
        put(f"dict:{len(obj)}")
        for key in sorted(obj, key=repr):
            put(repr(key))
            _digest_into(h, obj[key], depth + 1, seen)
        return
    if callable(obj) and not hasattr(obj, "__dict__") or isinstance(obj, type):
        put(f"callable:{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}")
        return
    put(f"object:{type(obj).__module__}.{type(obj).__qualname__}")
    if isinstance(obj, torch.nn.Module):
        for name, t in sorted(list(obj.named_parameters(recurse=False)) + list(obj.named_buffers(recurse=False))):
            put(name)
            _digest_into(h, t, depth + 1, seen)
        for name, m in sorted(obj.named_children()):
            put(name)
            _digest_into(h, m, depth + 1, seen)
    if hasattr(obj, "__dataclass_fields__"):
        fields = {f: getattr(obj, f) for f in obj.__dataclass_fields__}
    else:
        fields = {k_: v for k_, v in getattr(obj, "__dict__", {}).items()
                  if not k_.startswith("_") and k_ not in ("training",)}
    if hasattr(obj, "__code__"):
        # a function is keyed on its name and ``describe()`` only: its closure may hold mutable state
        put(f"function:{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}")
        return
    for key in sorted(fields):
        put(key)
        _digest_into(h, fields[key], depth + 1, seen)
