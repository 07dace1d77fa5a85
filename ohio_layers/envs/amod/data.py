"""Offline data collection for AMoD: roll a behaviour policy out and record a low-level :class:`Dataset`."""
from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np
from tqdm.auto import tqdm

from ...data.dataset import Dataset, EpisodeRecorder
from .env import AMoDEnv
from .policies import BehaviourPolicy, make_policy

__all__ = ["collect"]


def collect(
    policy: Union[BehaviourPolicy, str],
    episodes: int,
    seed: int = 0,
    env: Optional[AMoDEnv] = None,
    progress: bool = True,
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
    """
    if isinstance(policy, str):
        policy = make_policy(policy)
    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive int, got {episodes!r}")
    if env is None:
        env = AMoDEnv(action_mode="flows", **env_kwargs)
    elif env_kwargs:
        raise ValueError(f"pass either env or env_kwargs, not both (got {sorted(env_kwargs)})")
    env = getattr(env, "unwrapped", env)
    if not isinstance(env, AMoDEnv) or env.action_mode != "flows":
        raise ValueError("env must be an AMoDEnv with action_mode='flows' (behaviour data records flows)")
    rec = EpisodeRecorder()
    for e in tqdm(range(episodes), desc=f"collect {policy.name}", disable=not progress):
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
