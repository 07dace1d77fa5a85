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
        q = np.quantile(residual, [0.5, 0.9, 0.99])
        return cls(int(residual.size), tolerance, float((residual <= tolerance).mean()), float(converged.mean()),
                   float(q[0]), float(q[1]), float(q[2]), float(residual.max()), seconds)

    def __str__(self) -> str:
        return (f"{self.windows} windows: {100 * self.reproduced_share:.2f}% reproduced within {self.tolerance:g}, "
                f"{100 * self.converged_share:.2f}% converged; residual median {self.residual_median:.3g}, "
                f"p90 {self.residual_p90:.3g}, p99 {self.residual_p99:.3g}, max {self.residual_max:.3g}")


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
        resume: reuse finished chunks of an interrupted run with the same inputs.
        extra_keys: per-step arrays copied from the window start (e.g. ``"z_true"``).
        engine: ``"serial"`` (this process) or ``"ray"``: shards of whole chunks solved by
            ``workers`` Ray tasks, byte-identical output (:mod:`ohio_layers.inverse.sharded`).
    """
    if engine not in ("serial", "ray"):
        raise ValueError(f"engine must be 'serial' or 'ray', got {engine!r}")
    if engine == "ray":
        from .sharded import relabel_sharded

        return relabel_sharded(relabel, dataset, inverter, k, out_path, workers=workers, chunk_size=chunk_size,
                               stride=stride, tolerance=tolerance, resume=resume, progress=progress,
                               extra_keys=extra_keys, description=description)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out_path = Path(out_path)
    starts = window_starts(dataset, k, stride)
    desc = description or (inverter.describe() if hasattr(inverter, "describe") else repr(inverter))
    fingerprint = hashlib.sha256(starts.tobytes() + f"|{k}|{chunk_size}|{len(dataset)}|{desc}".encode()).hexdigest()
    parts = out_path.with_name(out_path.name + ".parts")
    manifest = parts / "manifest.json"
    if parts.exists() and (not resume or not manifest.exists() or json.loads(manifest.read_text()).get("fingerprint") != fingerprint):
        if resume and manifest.exists():
            raise RuntimeError(f"{parts} holds chunks of a different relabelling run (other data, k, chunk_size or solver); "
                               f"delete it or pass resume=False")
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(manifest, json.dumps({"fingerprint": fingerprint, "windows": int(starts.size)}).encode())

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
    if chunks:
        merged = Dataset.concatenate(chunks)
        report = RelabelReport.from_arrays(merged["residual"], merged["converged"], tolerance)
    else:
        raise ValueError(f"dataset has no complete window of k={k} steps")
    merged.metadata = {"k": k, "stride": stride or k, "inverter": desc, "tolerance": tolerance, "source": dict(dataset.metadata),
                       "report": {k_: v for k_, v in asdict(report).items() if k_ != "seconds"}}
    merged.save(out_path)
    shutil.rmtree(parts)
    report.seconds = seconds
    return merged, report
