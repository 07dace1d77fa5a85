"""Offline data of the supply chain: roll a behaviour policy out and record a low-level :class:`Dataset`; evaluate
any decider on seeded episodes (return, capacity violations, overflow)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import numpy as np
from tqdm.auto import tqdm

from ...data.dataset import Dataset
from ...data.io import PathLike
from .env import SupplyChainEnv
from .policies import BehaviourPolicy, make_policy
from .scenario import Scenario, get_scenario

__all__ = ["collect", "make_env", "observe_as", "run_episode", "evaluate", "policy_decider"]


def _episode(env: SupplyChainEnv, policy: BehaviourPolicy, seed: int, e: int) -> Dict[str, List[Any]]:
    rng = np.random.default_rng([seed, e])
    rows: Dict[str, List[Any]] = {}
    obs, _ = env.reset(seed=seed + e)
    done = False
    while not done:
        state = env.controller_state()
        action, _ = policy(env, rng)
        nobs, reward, term, trunc, info = env.step(action)
        executed = np.r_[info["shipments"], info["production"]]
        for k, v in dict(observations=obs, states=state, actions=executed, rewards=np.float64(reward), next_observations=nobs,
                         next_states=env.controller_state(), terminals=bool(term), timeouts=bool(trunc),
                         episode_ids=np.int64(e), capacity_violations=np.float64(info["capacity_violations"]),
                         overflow=np.float64(info["overflow"]), over_order=np.float64(info["over_order"])).items():
            rows.setdefault(k, []).append(np.asarray(v))
        obs, done = nobs, term or trunc
    return rows


def collect(policy: Union[BehaviourPolicy, str], episodes: int, seed: int = 0, scenario: Union[str, Scenario] = "1w3s",
            path: Optional[PathLike] = None, progress: bool = True, chunk: int = 10, first: int = 0) -> Dataset:
    """Roll out a behaviour policy on ``SupplyChainEnv(scenario, "shipments")``; one row per decision.

    Episode ``e`` is reset with ``seed + e`` and the policy draws from ``default_rng([seed, e])``,
    so equal arguments give equal datasets. With ``path``, every ``chunk`` episodes are written
    atomically to ``<path>.parts/``; a rerun resumes from them (identical result) and the final
    dataset is written atomically to ``path`` (an existing ``path`` is loaded, not recomputed).
    ``first``: index of the first episode (episodes ``first .. first + episodes - 1``, seeded as
    above, ``episode_ids`` as well): a shard of a larger collection.
    Arrays (``N`` = nodes, ``F`` features, ``S`` stores)::

        observations, next_observations (rows, N * F) float32
        states, next_states (rows, 3S + 2)        the controller's state (see SupplyChainController)
        actions (rows, S + 1)                     executed shipments per store, then production
        rewards, terminals, timeouts (True at each episode's last row), episode_ids,
        capacity_violations, overflow, over_order (rows,)
    """
    if isinstance(policy, str):
        policy = make_policy(policy)
    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive int, got {episodes!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if not isinstance(first, int) or first < 0:
        raise ValueError(f"first must be an int >= 0, got {first!r}")
    env = SupplyChainEnv(scenario, "shipments")
    sc = env.scenario
    meta = {"domain": "supply_chain", "policy": policy.name, "seed": seed, "episodes": episodes, "scenario": sc.name,
            "n_stores": sc.n_stores, "graph_edges": env.graph_edges.tolist(), "edge_attr": env.edge_attr.tolist(),
            "flow_edges": env.flow_edges.tolist(), "state": "[stock, demand_hat, arrivals, factory stock, pending production]",
            "action": "[shipments per store, production]"}
    final = Path(path) if path is not None else None
    if final is not None and final.exists():
        return Dataset.load(final)
    parts_dir = final.with_name(final.name + ".parts") if final is not None else None
    parts: List[Dataset] = []
    bar = tqdm(total=episodes, desc=f"collect {policy.name} {sc.name}", disable=not progress, unit="ep")
    for start in range(first, first + episodes, chunk):
        stop = min(start + chunk, first + episodes)
        part_path = parts_dir / f"{start:06d}_{stop:06d}_{policy.name}_{seed}.npz" if parts_dir is not None else None
        if part_path is not None and part_path.exists():
            parts.append(Dataset.load(part_path))
        else:
            rows: Dict[str, List[Any]] = {}
            for e in range(start, stop):
                for k, v in _episode(env, policy, seed, e).items():
                    rows.setdefault(k, []).extend(v)
            part = Dataset({k: np.stack(v) for k, v in rows.items()}, meta)
            if part_path is not None:
                part.save(part_path)
            parts.append(part)
        bar.update(stop - start)
    bar.close()
    data = Dataset.concatenate(parts, meta)
    if final is not None:
        data.save(final)
        shutil.rmtree(parts_dir, ignore_errors=True)
    return data


def make_env(scenario: str, kind: str) -> SupplyChainEnv:
    """The env of ``scenario`` taking an OHIO agent's z (``kind="ohio"``) or shipments (any other kind)."""
    return SupplyChainEnv(scenario, "ohio" if kind == "ohio" else "shipments")


def observe_as(train_scenario: str, env: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Observation map that shows ``train_scenario``'s capacities (the policies do not see a capacity change)."""
    u, sc = env.unwrapped, get_scenario(train_scenario)
    col = 15 + u.scenario.lead_time
    caps = np.r_[sc.store_capacity, sc.factory_capacity].astype(np.float32)

    def view(obs: np.ndarray) -> np.ndarray:
        x = np.array(obs, dtype=np.float32).reshape(u.n_nodes, u.n_features)
        x[:, col] = caps
        return x.reshape(-1)

    return view


def run_episode(env: Any, decide: Callable[[np.ndarray], np.ndarray], seed: int, view: Optional[Callable] = None) -> Dict[str, float]:
    """One episode; return, capacity violations, overflow and over-orders (sums over the episode)."""
    obs, _ = env.reset(seed=seed)
    stats = {"return": 0.0, "capacity_violations": 0.0, "overflow": 0.0, "over_order": 0.0}
    done = False
    while not done:
        obs, r, term, trunc, info = env.step(np.asarray(decide(view(obs) if view else obs), dtype=np.float64))
        stats["return"] += float(r)
        for k in ("capacity_violations", "overflow", "over_order"):
            stats[k] += float(info[k])
        done = term or trunc
    return stats


def evaluate(env: Any, decide: Callable, seeds: List[int], view: Optional[Callable] = None) -> Dict[str, Any]:
    """:func:`run_episode` on every seed: per-episode lists and their ``mean_<stat>``."""
    eps = [run_episode(env, decide, int(s), view) for s in seeds]
    out: Dict[str, Any] = {k: [e[k] for e in eps] for k in eps[0]}
    out.update({f"mean_{k}": float(np.mean(v)) for k, v in list(out.items())})
    return out


def policy_decider(name: str, env: Any, seed: int) -> Callable:
    """Behaviour policy ``name`` as ``obs -> action`` on ``env`` (its noise from a stream of ``seed``)."""
    policy, rng = make_policy(name), np.random.default_rng([seed, 7])
    return lambda obs: policy(env.unwrapped, rng)[0]
