"""Pieces every experiment shares: resumable job runs, atomic JSON, tables, seeding."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..data.io import atomic_write_bytes


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write JSON atomically (never a half-written result file)."""
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True, default=_plain) + "\n").encode())


def _plain(x: Any) -> Any:
    if isinstance(x, (np.generic,)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def run_jobs(fn: Callable[[Dict[str, Any]], Dict[str, Any]], jobs: Sequence[Dict[str, Any]], out_dir: Path,
             workers: int = 2, desc: str = "jobs") -> List[Dict[str, Any]]:
    """Run ``fn(job)`` for every job whose ``<out_dir>/<job["name"]>.json`` does not exist yet.

    Each result is written atomically as soon as it finishes, so an interrupted experiment
    resumes with the missing jobs only. Jobs run in ``workers`` processes with one torch
    thread each (on 2 cores, two 1-thread processes beat one 2-thread process by 4-9x).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [j for j in jobs if not (out_dir / f"{j['name']}.json").exists()]
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=desc, unit="job")
    if todo:
        if workers <= 1:
            _init_worker()
            for job in todo:
                write_json(out_dir / f"{job['name']}.json", fn(job))
                bar.update()
        else:
            ctx = mp.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
                futures = {pool.submit(fn, job): job for job in todo}
                for fut in as_completed(futures):
                    write_json(out_dir / f"{futures[fut]['name']}.json", fut.result())
                    bar.update()
    bar.close()
    return [json.loads((out_dir / f"{j['name']}.json").read_text()) for j in jobs]


def format_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain-text table with right-aligned numeric columns."""
    cells = [[str(h) for h in header]] + [[c if isinstance(c, str) else f"{c:.1f}" for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def cpu_workers(requested: int) -> int:
    return max(1, min(requested, os.cpu_count() or 1))


def actor_bounds(labels: np.ndarray, limit, quantile: float = 0.005, widen: float = 0.25,
                 floor: float = 1e-4) -> "tuple[list, list]":
    """Per-dimension actor range for labels ``(N, d)``: the central ``1 - 2 quantile`` of the data
    widened by ``widen`` of its width, within ``[-limit, limit]`` (scalar or ``(d,)``).

    A tanh actor resolves small actions only if its range fits the data; the few extreme labels
    (badly determined windows) are clamped for the likelihood rather than stretching the range.
    """
    lim = np.broadcast_to(np.asarray(limit, dtype=np.float64), (labels.shape[1],))
    lo, hi = np.quantile(labels, quantile, axis=0), np.quantile(labels, 1 - quantile, axis=0)
    pad = widen * (hi - lo) + floor
    return np.maximum(lo - pad, -lim).tolist(), np.minimum(hi + pad, lim).tolist()


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend, or ``None`` without the ``plots`` extra
    (the JSON and the printed table carry the numbers)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig: Any, path: Path) -> None:
    """Lay out ``fig``, write it to ``path`` atomically (PNG, 120 dpi) and close it."""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def save_results(out: Path, results: Mapping[str, Any], plot: Callable[[Mapping[str, Any], Path], None], png: str) -> None:
    """Write ``results.json`` atomically, draw ``png`` with ``plot`` and say where both went."""
    write_json(out / "results.json", results)
    plot(results, out / png)
    print(f"wrote {out / 'results.json'} and {out / png}")
