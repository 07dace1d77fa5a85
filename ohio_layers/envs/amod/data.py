"""AMoD data: roll a behaviour policy out and record a low-level :class:`Dataset` (:func:`collect`), and evaluate
any decider on seeded episodes with the constraint violations of the flows it requests (:func:`evaluate`)."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
from tqdm.auto import tqdm

from ...data.dataset import Dataset, EpisodeRecorder
from .env import AMoDEnv
from .policies import BehaviourPolicy, make_policy

__all__ = ["collect", "evaluate", "run_episode", "flow_violations", "heuristic_decider"]


def collect(
    policy: Union[BehaviourPolicy, str],
    episodes: int,
    seed: int = 0,
    env: Optional[AMoDEnv] = None,
    progress: bool = True,
    first: int = 0,
    **env_kwargs: Any,
) -> Dataset:
    """Roll out a behaviour policy and record a low-level :class:`Dataset` (one row per decision).

    Episode ``e`` is reset with ``seed + e`` and the policy draws from ``default_rng([seed, e])``,
    so the same arguments give the same dataset. Arrays (``n`` regions, ``E`` edges)::

        observations, next_observations (N, n * F) float32   the env's observation
        states, next_states (N, n) float64                    idle vehicles when deciding
        actions (N, E) float64                                executed rebalancing flows
        rewards (N,), terminals (N,) False, timeouts (N,) True at each episode's last step,
        episode_ids (N,), served (N,), lost_demand (N,), rebalancing_cost (N,)
        z_true (N, n) float64                                 only for hierarchical policies

    ``metadata`` records the policy, seed, scenario name, ``edge_index`` and ``n_regions``.

    Args:
        policy: a :class:`BehaviourPolicy` or its name.
        episodes: number of episodes (``horizon`` rows each).
        env: an ``action_mode="flows"`` environment; built from ``env_kwargs`` if omitted.
        first: index of the first episode (episodes ``first .. first + episodes - 1``, seeded as above;
            ``episode_ids`` still count from 0): a shard of a larger collection.
    """
    if isinstance(policy, str):
        policy = make_policy(policy)
    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive int, got {episodes!r}")
    if not isinstance(first, int) or first < 0:
        raise ValueError(f"first must be an int >= 0, got {first!r}")
    if env is None:
        env = AMoDEnv(action_mode="flows", **env_kwargs)
    elif env_kwargs:
        raise ValueError(f"pass either env or env_kwargs, not both (got {sorted(env_kwargs)})")
    env = getattr(env, "unwrapped", env)
    if not isinstance(env, AMoDEnv) or env.action_mode != "flows":
        raise ValueError("env must be an AMoDEnv with action_mode='flows' (behaviour data records flows)")
    rec = EpisodeRecorder()
    for e in tqdm(range(first, first + episodes), desc=f"collect {policy.name}", disable=not progress):
        rng = np.random.default_rng([seed, e])
        obs, _ = env.reset(seed=seed + e)
        done = False
        while not done:
            state = env.idle.astype(np.float64)
            flows, z = policy(env, rng)
            nobs, reward, term, trunc, info = env.step(flows.astype(np.float64))
            if not np.array_equal(info["flows"], flows):
                raise RuntimeError(f"policy {policy.name} produced infeasible flows")  # pragma: no cover
            row: Dict[str, Any] = dict(
                observations=obs, states=state, actions=info["flows"], rewards=np.float64(reward),
                next_observations=nobs, next_states=env.idle.astype(np.float64), terminals=bool(term),
                timeouts=bool(trunc), served=np.int64(info["served"]), lost_demand=np.int64(info["lost_demand"]),
                rebalancing_cost=np.float64(info["rebalancing_cost"]))
            if policy.hierarchical:
                row["z_true"] = np.asarray(z, dtype=np.float64)
            rec.add(**row)
            obs, done = nobs, term or trunc
        rec.end_episode()
    meta = {"domain": "amod", "policy": policy.name, "hierarchical": policy.hierarchical, "seed": seed,
            "episodes": episodes, "scenario": env.scenario.name, "n_regions": env.n_regions,
            "edge_index": env.edge_index.tolist(), "horizon": env.scenario.horizon,
            "state": "idle vehicles per region after matching", "action": "rebalancing flows per edge"}
    return rec.to_dataset(meta)


# ------------------------------------------------------------------------------ evaluation
def flow_violations(idle: np.ndarray, flows: np.ndarray, src: np.ndarray, tol: float = 1e-6) -> Dict[str, float]:
    """Constraint violations of requested flows ``(E,)`` given idle vehicles ``(n,)`` and edge origins ``src (E,)``.

    Returns ``{"violations": edge entries that are negative, fractional or leave an over-committed
    region, "negative", "fractional", "over_regions": regions asked for more than their idle
    vehicles, "excess": vehicles requested beyond the idle ones}``.
    """
    a = np.asarray(flows, dtype=np.float64)
    neg = a < -tol
    frac = np.abs(a - np.round(a)) > tol
    out = np.bincount(src, np.clip(a, 0.0, None), minlength=len(idle))
    over = out > idle + tol
    bad = neg | frac | ((a > tol) & over[src])
    return {"violations": float(bad.sum()), "negative": float(neg.sum()), "fractional": float(frac.sum()),
            "over_regions": float(over.sum()), "excess": float(np.clip(out - idle, 0.0, None).sum())}


def run_episode(env: Any, decide: Any, seed: int) -> Dict[str, float]:
    """One episode with ``decide(obs, env) -> action``; return, served, rebalancing cost and violations.

    In ``action_mode="flows"`` the requested action is checked; in ``"distribution"`` the LP's flows.
    """
    u = env.unwrapped
    obs, _ = env.reset(seed=seed)
    stats = {"return": 0.0, "served": 0.0, "requests": 0.0, "rebalancing_cost": 0.0, "violations": 0.0,
             "negative": 0.0, "fractional": 0.0, "over_regions": 0.0, "excess": 0.0}
    done = False
    while not done:
        idle = u.idle.astype(np.float64)
        action = np.asarray(decide(obs, env), dtype=np.float64)
        obs, r, term, trunc, info = env.step(action)
        requested = action if u.action_mode == "flows" else info["flows"]
        for k, v in flow_violations(idle, requested, u.edge_index[0]).items():
            stats[k] += v
        stats["return"] += float(r)
        stats["served"] += float(info["served"])
        stats["requests"] += float(info["requests"])
        stats["rebalancing_cost"] += float(info["rebalancing_cost"])
        done = term or trunc
    return stats


def evaluate(env: Any, decide: Any, seeds: Sequence[int]) -> Dict[str, Any]:
    """:func:`run_episode` on each seed; per-episode lists plus means."""
    eps = [run_episode(env, decide, int(s)) for s in seeds]
    out: Dict[str, Any] = {k: [e[k] for e in eps] for k in eps[0]}
    out.update({f"mean_{k}": float(np.mean(v)) for k, v in list(out.items())})
    return out


def heuristic_decider(name: str, seed: int):
    policy = make_policy(name)
    rng = np.random.default_rng([seed, 7])
    return lambda obs, env: policy(env.unwrapped, rng)[0].astype(np.float64)
