"""Collection and evaluation stages as jobs of :func:`~.common.run_jobs` (local processes or Ray), same bytes as one process.

**Collection** (:func:`collect_episodes`). Every domain seeds its episodes independently (episode
``e`` is reset with ``seed + e`` and draws its policy noise from a stream of ``(seed, e)``), so a
stage's episodes are cut into contiguous ranges, one job each. A job writes its rows atomically
to ``<artefact>.shards/<job name>-<job key>.npz``. The key hashes every input of the job, so a
shard of other inputs is never reused, and a job that Ray re-runs after its worker died finds
its file or rewrites the same bytes (the write is idempotent; side effects are at-least-once,
the output exactly-once). The driver checks each shard's SHA-256, concatenates the shards in
episode order, renumbers the episode ids as one process numbers them, sets the metadata one
call would (``seed``, ``episodes``, per-episode lists), saves the dataset atomically and only then
removes the shards.

**Evaluation** (:func:`evaluate_jobs`). The evaluations of a reference stage (one policy on the
evaluation seeds) are jobs; a policy's episodes stay in one job because some behaviour
heuristics draw from one random stream across episodes. The driver writes each result
(:func:`run_jobs`), so a re-run job still has one result.

The number of shards never changes the output, so a run resumed with other ``workers`` reuses
nothing it should not and still produces the serial path's bytes (tests/experiments/test_sharded_stages.py).
"""
from __future__ import annotations

import functools
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..data import Dataset
from .common import file_hash, job_key, run_jobs

__all__ = ["episode_ranges", "collect_episodes", "merge_episodes", "evaluate_jobs"]


def episode_ranges(episodes: int, shards: int) -> List[Tuple[int, int]]:
    """Episodes ``0..episodes-1`` as ``min(shards, episodes)`` contiguous ranges ``[lo, hi)`` of near-equal size."""
    if episodes < 1 or shards < 1:
        raise ValueError(f"episodes and shards must be >= 1, got {episodes} and {shards}")
    cuts = np.linspace(0, episodes, min(shards, episodes) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:])]


def _shard_path(job: Dict[str, Any]) -> Path:
    return Path(job["shard_dir"]) / f"{job['name']}-{job_key(job)[:16]}.npz"


def _collect_shard(collect_range: Callable[[Dict[str, Any]], Dataset], job: Dict[str, Any]) -> Dict[str, Any]:
    """Job body: ``collect_range(job)`` (episodes ``job["first"]`` to ``job["first"] + job["count"] - 1``) saved
    atomically to the job's shard file, unless a previous attempt already wrote it."""
    path = _shard_path(job)
    if not path.exists():
        data = collect_range(job)
        ids = data["episode_ids"]
        got = int(np.count_nonzero(np.r_[True, ids[1:] != ids[:-1]]))
        if got != job["count"]:
            raise RuntimeError(f"{getattr(collect_range, '__name__', collect_range)} returned {got} episodes for "
                               f"shard {job['name']}, expected {job['count']}")
        data.save(path)
    return {"path": str(path), "sha256": file_hash(path), "first": job["first"], "count": job["count"]}


def merge_episodes(parts: Sequence[Dataset], metadata: Dict[str, Any]) -> Dataset:
    """Concatenate episode-ordered parts; ``episode_ids`` renumbered ``0..E-1`` in order (dtype kept)."""
    data = Dataset.concatenate(parts, metadata)
    ids, offset = [], 0
    for p in parts:
        e = p["episode_ids"]
        local = np.cumsum(np.r_[0, e[1:] != e[:-1]])  # 0, 0, ..., 1, ... per episode within the part
        ids.append((local + offset).astype(e.dtype))
        offset += int(local[-1]) + 1
    data.arrays["episode_ids"] = np.concatenate(ids)
    return data


def collect_episodes(collect_range: Callable[[Dict[str, Any]], Dataset], job: Dict[str, Any], episodes: int,
                     path: Path, *, stage_key: Mapping[str, Any], workers: int, engine: str = "process",
                     shards: Optional[int] = None, per_episode: Sequence[str] = (), desc: str = "collect") -> Dataset:
    """Collect ``episodes`` episodes as episode-range jobs; the dataset one ``collect_range`` call of all would give.

    Args:
        collect_range: a module-level function ``job -> Dataset`` that collects episodes
            ``job["first"] .. job["first"] + job["count"] - 1`` (with their global seeds) from the
            settings in ``job``; picklable, since it runs in worker processes or Ray tasks.
        job: the settings ``collect_range`` reads (JSON values; they key the shard files). Its
            ``"seed"`` (if any) is the metadata's ``seed``.
        episodes: total episodes.
        path: where the merged dataset is saved atomically (its shards go to ``<path>.shards/``).
        stage_key: the key of the stage (:meth:`~.common.Stages.key`: its config fields, input file
            hashes and the library version); part of every shard's key, so that a shard is reused
            only for the same inputs, also when ``job`` names an input file whose content changed.
        workers, engine: as :func:`~.common.run_jobs` (``workers <= 1`` with ``"process"``: in this process).
        shards: episode ranges (default ``4 * workers``: balance, and little lost when a worker dies).
        per_episode: metadata keys holding one entry per episode (concatenated over the shards).
    Returns:
        the merged :class:`Dataset`; ``metadata["episodes"] = episodes``.
    """
    shard_dir = Path(path).with_name(Path(path).name + ".shards")
    ranges = episode_ranges(episodes, shards if shards is not None else 4 * max(int(workers), 1))
    stage = job_key(stage_key)
    jobs = [{**job, "name": f"shard_{j:04d}", "first": lo, "count": hi - lo, "shard_dir": str(shard_dir), "stage": stage}
            for j, (lo, hi) in enumerate(ranges)]
    results = run_jobs(functools.partial(_collect_shard, collect_range), jobs, shard_dir, workers=workers, desc=desc,
                       engine=engine)
    parts = []
    for r in results:
        if file_hash(Path(r["path"])) != r["sha256"]:
            raise RuntimeError(f"shard {r['path']} changed after its job finished (hash mismatch); delete {shard_dir}")
        parts.append(Dataset.load(r["path"]))
    meta = dict(parts[0].metadata)
    differ = sorted(k for k in meta if k not in ("seed", "episodes", *per_episode)
                    and any(p.metadata.get(k) != meta[k] for p in parts[1:]))
    if differ:  # never a dataset whose metadata describes its first shard only
        raise RuntimeError(f"metadata {differ} differ between the shards of {path}: name the keys that hold one entry "
                           f"per episode in per_episode=")
    meta["episodes"] = int(episodes)
    if "seed" in job and "seed" in meta:
        meta["seed"] = job["seed"]
    for key in per_episode:
        meta[key] = [v for p in parts for v in p.metadata[key]]
    data = merge_episodes(parts, meta)
    data.save(path)
    shutil.rmtree(shard_dir)  # only after the artefact is saved: an interruption before it keeps the shards
    return data


def evaluate_jobs(fn: Callable[[Dict[str, Any]], Dict[str, Any]], jobs: Sequence[Dict[str, Any]], path: Path, *,
                  stage_key: Mapping[str, Any], workers: int, engine: str = "process",
                  desc: str = "evaluate") -> Dict[str, Dict[str, Any]]:
    """``{job name: fn(job)}`` with the jobs run by :func:`~.common.run_jobs`, their results kept in
    ``<path>.jobs/`` under keys that include ``stage_key`` (see :func:`collect_episodes`): an
    interrupted stage resumes with its missing jobs."""
    stage = job_key(stage_key)
    jobs = [{**j, "stage": stage} for j in jobs]
    runs = run_jobs(fn, jobs, Path(path).with_name(Path(path).name + ".jobs"), workers=workers, desc=desc, engine=engine)
    return {j["name"]: {k: v for k, v in r.items() if k != "job_key"} for j, r in zip(jobs, runs)}
