"""What every experiment pipeline shares, so a new domain reuses it without copying.

* :class:`ExperimentConfig` -- the settings base (``out_dir``, ``workers``), validated by
  :mod:`ohio_layers.config` like every other config.
* :class:`Stages` -- cached stages keyed on what produced them: the config fields a stage depends
  on, content hashes of its input files and the library version. A cached artefact is reused only
  on an exact key match; otherwise it is recomputed (and the change is said).
* :func:`run_jobs` -- independent jobs (training runs) in worker processes, each result written
  atomically with its key, so an interrupted run resumes and a changed job reruns. Workers die
  with their parent, also on ``kill -9``.
* Reporting: :func:`write_json`, :func:`format_table`, :func:`save_results`, :func:`save_figure`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
import multiprocessing as mp
import os
import re
import shutil
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar

import numpy as np
from tqdm.auto import tqdm

from .. import __version__
from ..config import Config, setting
from ..data.io import atomic_write_bytes

T = TypeVar("T")

__all__ = ["ExperimentConfig", "check_device", "Stages", "run_jobs", "job_key", "file_hash", "write_json", "format_table",
           "cpu_workers", "estimate_wall_time", "wall_time_note", "actor_bounds", "pyplot", "save_figure", "save_results",
           "identification_error_table", "AMORTIZED", "AMORTIZED_LABEL", "amortized_methods"]


@dataclasses.dataclass(kw_only=True)  # keyword-only: subclasses keep their own positional order
class ExperimentConfig(Config):
    """Settings every experiment has.

    Attributes:
        out_dir: where datasets, per-run results, ``results.json`` and plots go.
        workers: parallel training processes (one torch thread each; capped at the CPU count).
        engine: ``"process"`` (a local process pool) or ``"ray"`` (Ray tasks for the jobs and the
            relabelling, on 127.0.0.1 unless ``RAY_ADDRESS`` names a cluster; ``workers`` is then
            the number of tasks in flight and is not capped).
        device: torch device of the agents the training jobs build (``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``; ``ohio ... --device``). It is part of every training job's key: a GPU run
            may differ bitwise from a CPU one, so it never reuses a CPU result (or the reverse).
    """

    out_dir: str = "runs/experiment"
    workers: int = setting(2, ge=1)
    engine: str = setting("process", choices=("process", "ray"))
    device: str = setting("cpu")

    def check(self) -> None:
        super().check()
        check_device(self.device, f"{type(self).__name__}.device (--device)")

    @property
    def job_workers(self) -> int:
        """Training jobs run at once: ``workers`` Ray tasks (a cluster may have more CPUs than this
        driver), else ``workers`` capped at this machine's CPU count."""
        return self.workers if self.engine == "ray" else cpu_workers(self.workers)


_DEVICE = re.compile(r"cpu|cuda(:[0-9]+)?")


def check_device(device: str, where: str = "device") -> None:
    """Refuse a device this machine cannot run on, at config build (not in a worker after data collection).

    ``device`` must be ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; a CUDA device needs
    ``torch.cuda.is_available()`` and, for ``cuda:N``, at least ``N + 1`` visible GPUs.
    """
    if not _DEVICE.fullmatch(device):
        raise ValueError(f"{where} must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device == "cpu":
        return
    import torch

    if not torch.cuda.is_available():
        raise ValueError(f"{where} is {device!r} but torch.cuda.is_available() is False on this machine "
                         f"(no CUDA GPU, or a CPU-only torch build); use 'cpu'")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise ValueError(f"{where} is {device!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")


# ------------------------------------------------------------------------------ JSON
def _plain(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    return str(x)


def _canonical(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, default=_plain)


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write JSON atomically (never a half-written result file)."""
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True, default=_plain) + "\n").encode())


# ------------------------------------------------------------------------------ stage cache
_HASHES: Dict[Any, str] = {}


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes (memoised on path, size and mtime)."""
    path = Path(path)
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASHES[memo] = h.hexdigest()
    return _HASHES[memo]


class Stages:
    """Cached stages of one experiment run under ``out``, each keyed on what produced it.

    A stage's key is ``{"fields": the config fields it reads, "inputs": {name: sha256 of each input
    file}, "extra": anything else it depends on, "version": ohio_layers.__version__}``; it is stored
    next to the artefact as ``<artefact>.key.json``. :meth:`cached` reuses the artefact only when
    both exist and the stored key equals the current one; otherwise it removes the stale artefact
    (and a relabel's ``<artefact>.parts`` folder), recomputes and says what changed.
    """

    def __init__(self, out: Path, cfg: Config, verbose: bool = True) -> None:
        self.out, self.cfg, self.verbose = Path(out), cfg, verbose

    def key(self, fields: Sequence[str] = (), inputs: Sequence[Path] = (), **extra: Any) -> Dict[str, Any]:
        """The key of a stage reading ``fields`` of the config and the files ``inputs``."""
        values = self.cfg.to_dict()
        missing = [f for f in fields if f not in values]
        if missing:
            raise KeyError(f"stage key names unknown config fields {missing}")
        return {"fields": {f: values[f] for f in fields}, "inputs": {Path(p).name: file_hash(Path(p)) for p in inputs},
                "extra": extra, "version": __version__}

    @staticmethod
    def _key_path(path: Path) -> Path:
        return path.with_name(path.name + ".key.json")

    def fresh(self, path: Path, key: Mapping[str, Any]) -> bool:
        """Whether ``path`` exists and was produced under exactly ``key``."""
        kp = self._key_path(path)
        if not (path.exists() and kp.exists()):
            return False
        try:
            old = json.loads(kp.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        if _canonical(old) == _canonical(key):
            return True
        if self.verbose:
            changed = sorted({f"fields.{k}" for k in set(old.get("fields", {})) | set(key["fields"])
                              if _canonical(old.get("fields", {}).get(k)) != _canonical(key["fields"].get(k))}
                             | {f"inputs.{k}" for k in set(old.get("inputs", {})) | set(key["inputs"])
                                if old.get("inputs", {}).get(k) != key["inputs"].get(k)}
                             | ({"extra"} if _canonical(old.get("extra")) != _canonical(key["extra"]) else set())
                             | ({"version"} if old.get("version") != key["version"] else set()))
            print(f"  {path.relative_to(self.out) if path.is_relative_to(self.out) else path}: "
                  f"{', '.join(changed) or 'key'} changed since it was made; recomputing")
        return False

    def invalidate(self, path: Path) -> None:
        """Remove an artefact, its key and a relabel's chunk folder."""
        for p in (path, self._key_path(path), path.with_name(path.name + ".parts")):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    def mark(self, path: Path, key: Mapping[str, Any]) -> None:
        """Record that ``path`` was produced under ``key`` (after the artefact is written)."""
        write_json(self._key_path(path), dict(key))

    def cached(self, path: Path, key: Mapping[str, Any], compute: Callable[[], T], load: Callable[[Path], T],
               save: Optional[Callable[[T, Path], None]] = None, also: Sequence[Path] = ()) -> T:
        """``load(path)`` if fresh under ``key``; else ``compute()``, ``save`` it (if given), mark it, return it.

        ``also``: further files the same computation writes (e.g. a relabelled dataset next to its
        statistics); the stage is fresh only if they exist too, and they are removed with it."""
        path = Path(path)
        if self.fresh(path, key) and all(Path(p).exists() for p in also):
            return load(path)
        for p in (path, *also):
            self.invalidate(Path(p))
        value = compute()
        if save is not None:
            save(value, path)
        if not path.exists():
            raise RuntimeError(f"stage did not write its artefact {path}")
        self.mark(path, key)
        return value

    def json(self, path: Path, key: Mapping[str, Any], compute: Callable[[], Dict[str, Any]],
             also: Sequence[Path] = ()) -> Dict[str, Any]:
        """A cached JSON artefact (``also``: see :meth:`cached`)."""
        return self.cached(path, key, compute, lambda p: json.loads(p.read_text()), lambda v, p: write_json(p, v), also)


def start_run(cfg: ExperimentConfig) -> "tuple[Path, Stages]":
    """Create ``cfg.out_dir``, write ``config.json`` (what this invocation ran with) and return ``(out, stages)``.

    Also gives this (driver) process ``cpu_count // workers`` torch threads: its in-process stages
    (relabelling) share the cores with the worker processes, and an oversubscribed driver was
    measured 15-25x slower on a loaded 2-core machine.
    """
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // cpu_workers(cfg.workers)))
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", cfg.to_dict())
    return out, Stages(out, cfg)


# ------------------------------------------------------------------------------ jobs
def job_key(job: Mapping[str, Any]) -> str:
    """Hash of a job's description (every setting it reads, input hashes included) and the library version."""
    return hashlib.sha256((_canonical(dict(job)) + "|" + __version__).encode()).hexdigest()


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:  # re-parented: the experiment process died (e.g. kill -9)
            os._exit(1)
        time.sleep(0.5)


def _init_worker(parent: int) -> None:
    import torch

    torch.set_num_threads(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def run_jobs(fn: Callable[[Dict[str, Any]], Dict[str, Any]], jobs: Sequence[Dict[str, Any]], out_dir: Path,
             workers: int = 2, desc: str = "jobs", engine: str = "process") -> List[Dict[str, Any]]:
    """Run ``fn(job)`` for every job without a current result ``<out_dir>/<job["name"]>.json``.

    A result is current when it was written for the same job (same :func:`job_key`: every value in
    the job dict, so put input-file hashes in it); a stale one is rerun. Each result is written
    atomically as soon as it finishes, so an interrupted experiment resumes with the missing jobs
    only. Jobs run in ``workers`` processes with one torch thread each (on 2 cores, two 1-thread
    processes beat one 2-thread process by 4-9x); the workers exit when their parent dies.
    ``engine="ray"`` runs them as Ray tasks instead (``workers`` in flight, 127.0.0.1 unless
    ``RAY_ADDRESS`` names a cluster). Only this driver writes the results, so a job that Ray
    re-runs after its worker died still has one result.
    """
    if engine not in ("process", "ray"):
        raise ValueError(f"engine must be 'process' or 'ray', got {engine!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [j["name"] for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError("job names must be unique")

    def current(job: Dict[str, Any]) -> bool:
        path = out_dir / f"{job['name']}.json"
        if not path.exists():
            return False
        try:
            return json.loads(path.read_text()).get("job_key") == job_key(job)
        except (OSError, json.JSONDecodeError):
            return False

    def finish(job: Dict[str, Any], result: Dict[str, Any]) -> None:
        write_json(out_dir / f"{job['name']}.json", {**result, "job_key": job_key(job)})

    todo = [j for j in jobs if not current(j)]
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=desc, unit="job")
    if todo:
        if engine == "ray":
            from .._ray import call_single_threaded, map_tasks

            map_tasks(call_single_threaded, len(todo), lambda i: (fn, todo[i]), workers, desc=desc, progress=False,
                      on_result=lambda i, result: (finish(todo[i], result), bar.update()))
        elif workers <= 1:
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # as the workers run: results do not depend on the engine
            try:
                for job in todo:
                    finish(job, fn(job))
                    bar.update()
            finally:
                torch.set_num_threads(threads)  # the driver's own stages keep the threads start_run gave them
        else:
            ctx = mp.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(os.getpid(),)) as pool:
                futures = {pool.submit(fn, job): job for job in todo}
                for fut in as_completed(futures):
                    finish(futures[fut], fut.result())
                    bar.update()
    bar.close()
    return [json.loads((out_dir / f"{j['name']}.json").read_text()) for j in jobs]


def estimate_wall_time(jobs: Sequence[Mapping[str, float]], seconds_per_unit: Mapping[str, float], workers: int) -> float:
    """Estimated wall seconds of ``jobs`` run on ``workers`` parallel workers.

    Each job is a mapping ``unit -> count`` (e.g. ``{"iql_step": 8000, "eval_env_step": 7500}``) and
    costs ``sum(count * seconds_per_unit[unit])`` (the per-unit costs a module states with their
    source). Jobs are placed longest first on the least loaded worker, as a pool that starts the next
    job whenever one finishes does; the result is that schedule's length: about ``total / workers``
    for many similar jobs, never below the longest job.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    costs = []
    for i, job in enumerate(jobs):
        unknown = sorted(set(job) - set(seconds_per_unit))
        if unknown:
            raise KeyError(f"job {i} has units {unknown} without a cost; known units: {sorted(seconds_per_unit)}")
        bad = {u: n for u, n in job.items() if not (float(n) >= 0)}
        if bad:
            raise ValueError(f"job {i} has negative or NaN unit counts {bad}")
        costs.append(sum(float(n) * float(seconds_per_unit[u]) for u, n in job.items()))
    loads = [0.0] * min(workers, max(len(costs), 1))
    for c in sorted(costs, reverse=True):
        heapq.heapreplace(loads, loads[0] + c)  # loads stays a heap: loads[0] is the least loaded worker
    return max(loads)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def wall_time_note(phases: Sequence["tuple[str, float]"], workers: int, source: str) -> str:
    """The line a run prints before it starts: the estimated total of ``phases`` (name, seconds on
    ``workers`` workers), each phase, and where the per-unit costs come from."""
    total = sum(s for _, s in phases)
    parts = ", ".join(f"{name} {_duration(s)}" for name, s in phases)
    return (f"estimated wall time on {workers} worker{'s' if workers != 1 else ''}: {_duration(total)} ({parts}); "
            f"from CPU costs per unit ({source}); stages already cached are skipped")


def cpu_workers(requested: int) -> int:
    """``requested`` capped at the CPU count (at least 1)."""
    return max(1, min(int(requested), os.cpu_count() or 1))


# ------------------------------------------------------------------------------ labels
AMORTIZED = {"amortized": "ohio_amortized", "amortized+fallback": "ohio_amortized_fallback"}
"""``inverse=`` values of an experiment -> the methods relabelled by an ``AmortizedInverse`` (network alone /
with the exact solver on the windows above the tolerance)."""
AMORTIZED_LABEL = {"ohio_amortized": "OHIO amortised (network)", "ohio_amortized_fallback": "OHIO amortised + fallback"}


def amortized_methods(inverse: Sequence[str], methods: Sequence[str]) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """``(inverse, methods)`` of a config with ``inverse=`` given as a list or comma-separated: the
    checked inverse names and the methods with their amortised methods appended."""
    inverse = tuple(p.strip() for entry in inverse for p in str(entry).split(",") if p.strip())
    if not set(inverse) <= set(AMORTIZED):
        raise ValueError(f"inverse must be a subset of {tuple(AMORTIZED)}, got {inverse}")
    return inverse, tuple(methods) + tuple(AMORTIZED[i] for i in inverse if AMORTIZED[i] not in methods)


def actor_bounds(labels: np.ndarray, limit: Any, quantile: float = 0.005, widen: float = 0.25,
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


# ------------------------------------------------------------------------------ reporting
def format_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain-text table with right-aligned numeric columns."""
    cells = [[str(h) for h in header]] + [[c if isinstance(c, str) else f"{c:.1f}" for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def pyplot() -> Any:
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
    """Write ``results.json`` atomically, draw ``png`` with ``plot`` and say where both went; the
    training histories of the runs under ``out/runs`` go to ``curves.png`` next to them."""
    write_json(out / "results.json", results)
    plot(results, out / png)
    curves = _learning_curves(out)
    print(f"wrote {out / 'results.json'}, {out / png}" + (f" and {curves}" if curves else ""))


def _learning_curves(out: Path) -> Optional[Path]:
    """``curves.png`` from the ``history`` of every run result in ``out/runs`` (None if there is none)."""
    from ..logging import plot_histories

    histories = {}
    for path in sorted((out / "runs").glob("*.json")):
        history = json.loads(path.read_text()).get("history") if not path.name.endswith(".key.json") else None
        if history:
            histories[path.stem] = history
    if not histories or not plot_histories(histories, out / "curves.png"):
        return None
    return out / "curves.png"


def identification_error_table(settings: Sequence[str], found: Sequence[Mapping[str, Any]], truth: Mapping[str, str],
                               rel_error: Callable[[Mapping[str, Any], str], np.ndarray], names: Sequence[str],
                               tolerance: float) -> "tuple[str, Dict[str, Any]]":
    """Per true setting of per-episode identification summaries (``found``, ``truth[str(group)]``): the share
    of episodes with every parameter within ``tolerance`` (and identifiable), median / max relative error
    per parameter (``rel_error(summary, setting) -> (p,)``, ``names`` ``(p,)``), flagged share, seconds."""
    rows, stats = [], {}
    for name in settings:
        mine = [f for f in found if truth[str(f["group"])] == name]
        if not mine:
            continue
        err = np.stack([rel_error(f, name) for f in mine])
        ok = np.array([all(f["identifiable"].values()) for f in mine])
        within = (err.max(1) <= tolerance) & ok
        stats[name] = {"episodes": len(mine), "within_share": float(within.mean()), "flagged_share": float(1 - ok.mean()),
                       "median_rel_error": dict(zip(names, np.median(err, 0).tolist())),
                       "max_rel_error": dict(zip(names, err.max(0).tolist())),
                       "seconds_median": float(np.median([f["seconds"] for f in mine]))}
        rows.append([name, str(len(mine)), f"{100 * within.mean():.1f}%", f"{100 * (1 - ok.mean()):.1f}%"]
                    + [f"{m:.1e} / {x:.1e}" for m, x in zip(np.median(err, 0), err.max(0))]
                    + [f"{stats[name]['seconds_median']:.1f}"])
    header = ["true setting", "episodes", f"all {len(names)} within {100 * tolerance:g}%", "flagged"] + \
        [f"{g} rel. err median / max" for g in names] + ["s / episode"]
    return format_table(rows, header), stats
