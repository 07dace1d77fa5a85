"""Experiment stages on Ray: :func:`~ohio_layers.experiments.common.run_jobs` with Ray core tasks instead of a process pool.

Same contract and files: ``fn(job)`` runs for every job whose ``<out_dir>/<job["name"]>.json``
is missing, and the driver writes each result atomically as soon as it arrives. An
interrupted stage therefore resumes with the missing jobs only. The tasks themselves write
nothing. When Ray re-runs a job whose worker died, only the driver's single write of its
result counts, so each job appears exactly once. The jobs are seeded, so a re-run computes
the same result. Jobs run with one torch thread, as in ``run_jobs``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from .._ray import map_tasks
from .common import write_json


def _run_job(fn: Callable[[Dict[str, Any]], Dict[str, Any]], job: Dict[str, Any]) -> Dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    return fn(job)


def run_jobs_ray(fn: Callable[[Dict[str, Any]], Dict[str, Any]], jobs: Sequence[Dict[str, Any]], out_dir: Path,
                 workers: int = 2, desc: str = "jobs", *, address: Optional[str] = None,
                 max_retries: int = 3) -> List[Dict[str, Any]]:
    """``run_jobs(fn, jobs, out_dir, workers, desc)`` on ``workers`` Ray tasks (local on 127.0.0.1 unless ``address``).

    ``fn`` must be importable by the workers (a module-level function).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [j for j in jobs if not (out_dir / f"{j['name']}.json").exists()]
    if todo:
        map_tasks(_run_job, len(todo), lambda i: (fn, todo[i]), workers, address=address, max_retries=max_retries,
                  desc=desc, on_result=lambda i, result: write_json(out_dir / f"{todo[i]['name']}.json", result))
    return [json.loads((out_dir / f"{j['name']}.json").read_text()) for j in jobs]
