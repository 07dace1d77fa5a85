"""Stages 1-2 of ``ohio amod`` (kept out of :mod:`~ohio_layers.experiments.amod`, at the size limit): the
reference (oracle LP and behaviour heuristics on the evaluation episodes) and the behaviour datasets, both as
jobs on the run's engine (:mod:`~ohio_layers.experiments.shards`: same bytes as one process)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from ..data import Dataset
from ..envs.amod.data import evaluate, heuristic_decider
from .common import Stages
from .shards import collect_episodes, episode_ranges, evaluate_jobs

BEHAVIOURS = ("dispatch", "proportional", "equal", "random", "none")
"""The behaviour heuristics (their index offsets each dataset's seed)."""


def city_inputs(cfg: Any) -> List[Path]:
    """The scenario file (if any): stage keys hash its content, not only its path."""
    return [Path(cfg.scenario)] if cfg.scenario is not None else []


def make_env(cfg_city: Dict[str, Any], action_mode: str):
    from ..envs.amod import AMoDEnv

    city = dict(cfg_city)
    return AMoDEnv(city.pop("path", None), scenario_kwargs=city, action_mode=action_mode)


# ------------------------------------------------------------------------------ stages
def reference(cfg: Any, stages: Stages) -> Dict[str, Any]:
    """Oracle and behaviour heuristics on the evaluation episodes (cached; jobs on ``cfg.engine``: the oracle
    LPs in seed ranges, one job per heuristic)."""
    key = stages.key(("city", "eval_seed", "eval_episodes", "behaviours"), inputs=city_inputs(cfg))
    return stages.json(stages.out / "reference.json", key, lambda: _reference(cfg, stages.out / "reference.json", key))


def _reference(cfg: Any, path: Path, key: Dict[str, Any]) -> Dict[str, Any]:
    seeds = [cfg.eval_seed + i for i in range(cfg.eval_episodes)]
    ranges = episode_ranges(len(seeds), 2 * cfg.job_workers)
    jobs = [{"name": f"oracle_{j}", "city": cfg.city, "seeds": seeds[lo:hi]} for j, (lo, hi) in enumerate(ranges)]
    jobs += [{"name": name, "city": cfg.city, "seeds": seeds, "eval_seed": cfg.eval_seed} for name in cfg.behaviours]
    done = evaluate_jobs(_reference_job, jobs, path, stage_key=key, workers=cfg.job_workers, engine=cfg.engine,
                         desc="reference")
    oracle = [o for j in range(len(ranges)) for o in done[f"oracle_{j}"]["oracle"]]
    ref: Dict[str, Any] = {"seeds": seeds, "oracle": {"returns": [o["value"] for o in oracle],
                                                      "served": [o["served"] for o in oracle],
                                                      "rebalancing_cost": [o["rebalancing_cost"] for o in oracle]},
                           "heuristics": {name: done[name] for name in cfg.behaviours}}
    ref["oracle"]["mean_return"] = float(np.mean(ref["oracle"]["returns"]))
    return ref


def _reference_job(job: Dict[str, Any]) -> Dict[str, Any]:
    """Oracle LPs of a seed range, or one heuristic on every evaluation seed (a job of :func:`reference`)."""
    env = make_env(job["city"], "flows")
    if job["name"].startswith("oracle_"):
        from ..envs.amod.oracle import oracle_returns

        return {"oracle": [{k: r.to_dict()[k] for k in ("value", "served", "rebalancing_cost")}
                           for r in oracle_returns(job["seeds"], env=env)]}
    return evaluate(env, heuristic_decider(job["name"], job["eval_seed"]), job["seeds"])


def collect_dataset(name: str, cfg: Any, stages: Stages) -> Path:
    """The behaviour dataset of heuristic ``name`` (cached; episode-range jobs on ``cfg.engine``); returns its path."""
    path = stages.out / "data" / f"{name}.npz"
    key = stages.key(("city", "episodes", "data_seed"), inputs=city_inputs(cfg), behaviour=name)

    def compute() -> Dataset:
        job = {"behaviour": name, "city": cfg.city, "seed": cfg.data_seed + 100_000 * BEHAVIOURS.index(name)}
        return collect_episodes(_collect_range, job, cfg.episodes, path, stage_key=key, workers=cfg.job_workers,
                                engine=cfg.engine, desc=f"collect {name}")

    stages.cached(path, key, compute, Dataset.load)
    return path


def _collect_range(job: Dict[str, Any]) -> Dataset:
    """Episodes ``first .. first + count - 1`` of a behaviour dataset (a job of :func:`collect_dataset`)."""
    from ..envs.amod import collect

    return collect(job["behaviour"], job["count"], job["seed"], env=make_env(job["city"], "flows"), progress=False,
                   first=job["first"])


