"""Ray core tasks on loopback: start-up with safe defaults and a bounded map with at-least-once retries.

Used by :mod:`ohio_layers.inverse.sharded` (relabelling) and by
:func:`ohio_layers.experiments.common.run_jobs` (experiment stages, ``engine="ray"``). Ray
re-runs a task whose worker died, so callers make each task's side effects idempotent.
Either the task writes its result atomically to a file named for its inputs, or the task has
no side effects and the driver writes the result.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from ._extras import require
from .data.io import PathLike


def init_ray(workers: int, address: Optional[str] = None, temp_dir: Optional[PathLike] = None) -> bool:
    """Start (or connect to) Ray; returns ``True`` if this call started it (the caller shuts it down).

    Without ``address`` (and without ``RAY_ADDRESS``), a local Ray with ``workers`` CPUs is
    started on 127.0.0.1. ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` does that, but Ray reads it
    when ``ray`` is imported, so a driver that imported Ray earlier gets the constant set as
    well. ``_node_ip_address`` alone does not work. Token auth (which writes
    ``~/.ray/auth_token``) and the dashboard are off. Usage stats are always off.
    """
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read by ray's import here and in every Ray process
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray = require("ray")
    if ray.is_initialized():
        return False
    if address is None:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False  # in case ray was imported before the variable was set
        ray.init(num_cpus=int(workers), include_dashboard=False, logging_level="WARNING",
                 _temp_dir=None if temp_dir is None else str(Path(temp_dir).resolve()))
    else:
        ray.init(address=address, logging_level="WARNING")
    return True


def call_single_threaded(fn: Callable[[Any], Any], arg: Any) -> Any:
    """``fn(arg)`` with one torch thread (task body for jobs that expect a worker of their own)."""
    import torch

    torch.set_num_threads(1)
    return fn(arg)


def map_tasks(fn: Callable[..., Any], n: int, args_of: Callable[[int], Tuple[Any, ...]], workers: int, *,
              on_result: Optional[Callable[[int, Any], None]] = None, address: Optional[str] = None,
              max_retries: int = 3, temp_dir: Optional[PathLike] = None, desc: str = "tasks",
              progress: bool = True) -> Dict[int, Any]:
    """``fn(*args_of(i))`` for ``i < n`` as Ray tasks, at most ``workers`` in flight; returns ``{i: result}``.

    ``args_of`` is called just before task ``i`` is submitted, so only the arguments of the
    tasks in flight are held at once.

    ``on_result(i, result)`` runs on the driver as each task finishes (e.g. an atomic write),
    so an interrupted map keeps what finished. A task whose worker dies is re-run up to
    ``max_retries`` times. An exception raised by ``fn`` is not retried; it propagates. Ray is
    started here (and shut down at the end) unless it is already running.
    """
    from tqdm.auto import tqdm

    ray = require("ray")
    started = init_ray(workers, address, temp_dir)
    try:
        task = ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=False)(fn)
        queue, pending, done = list(range(n)), {}, {}
        bar = tqdm(total=n, desc=desc, unit="task", disable=not progress)
        while queue or pending:
            while queue and len(pending) < workers:
                i = queue.pop(0)
                pending[task.remote(*args_of(i))] = i
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i = pending.pop(ref)
                done[i] = ray.get(ref)
                if on_result is not None:
                    on_result(i, done[i])
                bar.update()
        bar.close()
    finally:
        if started:
            ray.shutdown()
    return done
