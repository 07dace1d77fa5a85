"""Sharded relabelling on Ray: the serial :func:`~ohio_layers.inverse.relabel.relabel`, one Ray task per shard.

``relabel(..., engine="ray", workers=N)`` lands here. The plan:

1. The windows are those of the serial path (``window_starts``), cut into the serial path's
   chunks of ``chunk_size`` windows. A **shard is a contiguous run of whole chunks**, so every
   solver call sees exactly the batch it sees in the serial path. That is what makes the output
   byte-identical for *every* inverter, including batch-coupled ones (``CEMSolver`` draws one
   noise tensor per batch). A task receives only the rows its windows cover, from the first
   window's start to the last window's end: windows never cross a shard, and the rows of
   the episodes in between are shipped whole.
2. Each shard is one Ray core task (not Ray Data: its retries re-run fused tasks and
   ``max_errored_blocks`` drops data). The task runs the serial ``relabel`` on its rows
   (resumable chunk by chunk, atomic output) into
   ``<out>.shards/<key>/shard_<j>.npz``. A shard file that exists is final, so a retried task
   (the worker died; Ray re-runs it, ``max_retries``) only redoes the missing chunks.
   Side effects are at-least-once; the output is exactly-once.
3. The key is a SHA-256 of the inputs: the dataset's contents (every array's name, dtype,
   shape and bytes, plus its metadata), the window starts, ``k``, ``stride``, ``chunk_size``, the
   inverter's description (solver and its settings) and the shard plan. Shards of other inputs
   are never reused.
4. The driver then runs the serial ``relabel`` once more, with an inverter that *replays* the
   shards' ``z, residual, converged, iterations``. Chunking, the non-z columns, the metadata,
   the report and the atomic write are the serial code's own. Then it deletes
   ``<out>.shards``.

Ray runs on 127.0.0.1 only, without usage stats or token files, unless ``address`` (or
``RAY_ADDRESS``) names a cluster. An already initialised Ray is reused and left running.
Files go to the run directory and Ray's session folder (``ray_temp_dir``, default Ray's
``/tmp/ray``) only.

Scaling: the driver hashes the dataset, ships each shard's rows as its task's argument and
replays the results through the serial code. The replay costs about 0.1 ms per window here,
against 0.4-1 ms for LM and ~20 ms for 300 Adam iterations. It bounds the speed-up of cheap
solvers (see the scaling model in ``benchmarks/bench_scale.py``). Per-shard work is
``inverter`` calls only.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from .._ray import map_tasks
from ..data.dataset import Dataset, window_starts
from ..data.io import PathLike, atomic_write_bytes
from .result import InverseResult

_RESULT_KEYS = ("z", "residual", "converged", "iterations")


def dataset_digest(dataset: Dataset) -> str:
    """SHA-256 of a dataset's contents: every array's name, dtype, shape and bytes, and its metadata."""
    h = hashlib.sha256()
    for key in sorted(dataset.keys()):
        arr = np.ascontiguousarray(dataset[key])
        h.update(f"{key}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    h.update(json.dumps(dataset.metadata, sort_keys=True, default=str).encode())
    return h.hexdigest()


def shard_plan(n_chunks: int, shards: int) -> List[Tuple[int, int]]:
    """Split chunks ``0..n_chunks-1`` into ``min(shards, n_chunks)`` contiguous runs ``[lo, hi)`` of near-equal size."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    cuts = np.linspace(0, n_chunks, min(shards, n_chunks) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


@dataclass
class ReplayInverter:
    """Returns stored per-window inverse results. ``starts (W,)`` sorted, ``results`` columns ``(W, ...)``."""

    starts: np.ndarray
    results: Dict[str, np.ndarray]
    description: str

    def __call__(self, dataset: Dataset, starts: np.ndarray) -> InverseResult:
        idx = np.searchsorted(self.starts, starts)
        found = self.starts[np.minimum(idx, self.starts.size - 1)]
        if np.any(idx >= self.starts.size) or not np.array_equal(found, starts):
            raise KeyError("replayed relabelling was asked for windows that no shard solved")
        return InverseResult(*(torch.from_numpy(self.results[key][idx]) for key in _RESULT_KEYS))

    def describe(self) -> str:
        return self.description


def _relabel_shard(relabel: Callable[..., tuple], rows: Dataset, inverter: Any, k: int, stride: Optional[int],
                   chunk_size: int, expected: np.ndarray, description: str, path: str, threads: int) -> Dict[str, Any]:
    """Ray task body: serial ``relabel`` of one shard's rows into ``path`` (skipped if ``path`` exists)."""
    torch.set_num_threads(threads)  # the serial path's thread count: same kernels, same bytes
    found = window_starts(rows, k, stride)
    if not np.array_equal(found, expected):
        raise RuntimeError(f"shard {path}: its rows hold windows {found[:5]}... but the plan expects {expected[:5]}...")
    out = Path(path)
    if not out.exists():
        relabel(rows, inverter, k, out, chunk_size=chunk_size, stride=stride, resume=True, progress=False,
                description=description)
    return {"path": path, "windows": int(expected.size), "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
            "pid": os.getpid()}


def relabel_sharded(
    relabel: Callable[..., tuple],
    dataset: Dataset,
    inverter: Any,
    k: int,
    out_path: PathLike,
    *,
    workers: int = 2,
    shards: Optional[int] = None,
    address: Optional[str] = None,
    chunk_size: int = 4096,
    stride: Optional[int] = None,
    resume: bool = True,
    progress: bool = True,
    description: Optional[str] = None,
    max_retries: int = 3,
    ray_temp_dir: Optional[PathLike] = None,
    **final: Any,
) -> tuple:
    """:func:`~ohio_layers.inverse.relabel.relabel` with the chunks solved by Ray tasks; same output bytes.

    Args (besides those of ``relabel``):
        relabel: the serial :func:`~ohio_layers.inverse.relabel.relabel`. It is passed in, not
            imported, so ``relabel -> sharded`` stays the only import between the two modules.
        workers: concurrent tasks (and the CPUs of a locally started Ray).
        shards: number of shards (default ``4 * workers``, at most one per chunk). More shards
            balance the load and lose less work when a worker dies. Each shard costs one task.
        address: a Ray cluster to connect to (default: a local Ray on 127.0.0.1).
        max_retries: Ray re-runs a task whose worker died this many times. Errors raised by
            the inverter are not retried; they propagate.
        ray_temp_dir: Ray's session folder when Ray is started here.
        **final: the remaining ``relabel`` options (``tolerance``, ``extra_keys``, ...). They only
            shape the columns of the final serial pass, not the solving.
    Returns:
        ``(high_level Dataset, RelabelReport)``. ``report.extra["shards"]`` lists every shard's
        windows and file hash.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out_path = Path(out_path)
    starts = window_starts(dataset, k, stride)
    if starts.size == 0:
        raise ValueError(f"dataset has no complete window of k={k} steps")
    desc = description or (inverter.describe() if hasattr(inverter, "describe") else repr(inverter))
    n_chunks = (starts.size + chunk_size - 1) // chunk_size
    plan = shard_plan(n_chunks, 4 * workers if shards is None else shards)
    if len(plan) < workers:
        warnings.warn(f"only {n_chunks} chunk(s) of {chunk_size} windows for {workers} workers: some stay idle; "
                      f"a smaller chunk_size gives more shards (the output is byte-identical to the serial path "
                      f"with the same chunk_size)", stacklevel=3)
    key = hashlib.sha256("|".join([dataset_digest(dataset), hashlib.sha256(starts.tobytes()).hexdigest(), str(k),
                                   str(stride or k), str(chunk_size), desc, json.dumps(plan)]).encode()).hexdigest()
    root = out_path.with_name(out_path.name + ".shards")
    manifest = root / "manifest.json"
    if root.exists():
        old = json.loads(manifest.read_text()).get("key") if manifest.exists() else None
        if old != key:
            if resume and old is not None:
                raise RuntimeError(f"{root} holds shards of a different relabelling run (other data, k, chunk_size, "
                                   f"solver or shard plan); delete it or pass resume=False")
            shutil.rmtree(root)
        elif not resume:
            shutil.rmtree(root)
    shard_dir = root / key[:16]
    shard_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(manifest, json.dumps({"key": key, "windows": int(starts.size), "chunk_size": chunk_size,
                                             "shards": plan}, indent=1).encode())

    t0 = time.perf_counter()
    done = _run_shards(relabel, dataset, inverter, k, stride, chunk_size, starts, plan, desc, shard_dir, workers,
                       address, max_retries, ray_temp_dir, progress)
    parts = [Dataset.load(d["path"]) for d in done]
    results = {key_: np.concatenate([p[key_] for p in parts]) for key_ in _RESULT_KEYS}
    if results["z"].shape[0] != starts.size:
        raise RuntimeError(f"shards returned {results['z'].shape[0]} windows, expected {starts.size}")
    high, report = relabel(dataset, ReplayInverter(starts, results, desc), k, out_path, chunk_size=chunk_size,
                           stride=stride, resume=resume, progress=False, description=desc, **final)
    shutil.rmtree(root)
    report.seconds = time.perf_counter() - t0
    report.extra["shards"] = [{"chunks": list(plan[j]), "windows": d["windows"], "sha256": d["sha256"]}
                              for j, d in enumerate(done)]
    return high, report


def _run_shards(relabel: Callable[..., tuple], dataset: Dataset, inverter: Any, k: int, stride: Optional[int],
                chunk_size: int, starts: np.ndarray, plan: List[Tuple[int, int]], desc: str, shard_dir: Path,
                workers: int, address: Optional[str], max_retries: int, ray_temp_dir: Optional[PathLike],
                progress: bool) -> List[Dict[str, Any]]:
    """One task per shard, at most ``workers`` in flight; returns the shards' records in plan order."""
    threads = torch.get_num_threads()

    def args_of(j: int) -> tuple:
        lo, hi = plan[j]
        s = starts[lo * chunk_size: hi * chunk_size]
        first, last = int(s[0]), int(s[-1]) + k  # the shard's rows: its windows and nothing after
        return (relabel, dataset.select(slice(first, last)), inverter, k, stride, chunk_size, s - first, desc,
                str(shard_dir / f"shard_{j:05d}.npz"), threads)

    done = map_tasks(_relabel_shard, len(plan), args_of, workers, address=address, max_retries=max_retries,
                     temp_dir=ray_temp_dir, desc="relabel shards", progress=progress)
    return [done[j] for j in range(len(plan))]
