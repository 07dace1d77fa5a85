"""Collect low-level datasets and evaluate policies on the goal-reaching reacher.

Episode ``i`` of a call with ``seed`` is seeded ``seed + i`` (env ``reset(seed=seed + i)`` for the
arm start and every target, ``policy.reset(seed + i)`` for the policy's noise, from a separate
stream), so any episode can be reproduced alone.

Recorded arrays (``ohio_layers.data.dataset`` format): ``observations (N, 10)``, ``states (N, 4)``
(unwrapped x = (q1, q2, qdot1, qdot2)), ``actions (N, 2)``, ``rewards (N,)``,
``next_observations``, ``next_states``, ``terminals`` (always False: the task never terminates),
``timeouts`` (True on each episode's last step), ``episode_ids``; and for hierarchical behaviour
policies (anything with a ``current_z`` attribute) ``z_true (N, 4)``, the z behind each step
(constant over each k-step window, positions relative to the window-start state).
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Union

import numpy as np
from tqdm.auto import tqdm

from ...data.dataset import Dataset, EpisodeRecorder
from .env import GoalReacherEnv
from .settings import ENV_ID, GoalReacherConfig
from .policies import LQRHierarchicalPolicy, ReacherPolicy

EnvConfig = Union[GoalReacherConfig, Mapping[str, Any], None]


def make_env(config: EnvConfig = None) -> GoalReacherEnv:
    """A bare :class:`GoalReacherEnv` (no gymnasium wrappers: the fast path for data/evaluation)."""
    return GoalReacherEnv(**_config(config).to_dict())


def _config(config: EnvConfig) -> GoalReacherConfig:
    if config is None:
        return GoalReacherConfig()
    if isinstance(config, GoalReacherConfig):
        return config
    if isinstance(config, Mapping):
        from ..._validate import check_config_keys

        check_config_keys(GoalReacherConfig, dict(config))
        return GoalReacherConfig(**dict(config))
    raise TypeError(f"env_config must be a GoalReacherConfig, a mapping or None, got {type(config).__name__}")


def _check_policy(policy: Any, cfg: GoalReacherConfig) -> None:
    if not isinstance(policy, ReacherPolicy):
        raise TypeError(f"policy must have reset(seed), act(observation, state) and config(), got {type(policy).__name__}")
    k = getattr(policy, "k", None)
    if k is not None and cfg.goal_period is not None and cfg.goal_period % int(k):
        raise ValueError(f"policy k={k} must divide the env's goal_period={cfg.goal_period}")


def _check_run(episodes: int, seed: int) -> None:
    if not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise ValueError(f"episodes must be a positive int, got {episodes!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")


def collect(
    policy: ReacherPolicy,
    episodes: int,
    seed: int,
    env_config: EnvConfig = None,
    progress: bool = True,
    metadata: Optional[Mapping[str, Any]] = None,
) -> Dataset:
    """Roll ``policy`` for ``episodes`` episodes (seeds ``seed + i``) and record every step.

    Args:
        policy: a :class:`~ohio_layers.envs.reacher_policies.ReacherPolicy`.
        episodes: number of episodes.
        seed: base seed.
        env_config: :class:`GoalReacherConfig` or its keys (default: multi-goal T 500, G 100, r 0.015).
        progress: show a tqdm bar (one tick per episode).
        metadata: extra entries merged into the dataset metadata.

    Returns:
        a :class:`~ohio_layers.data.Dataset` with ``episodes * T`` rows (see the module doc);
        metadata: ``domain``, ``env_id``, ``env_config``, ``policy``, ``seed``, ``episodes``, ``k``,
        ``state_layout``, ``returns`` (per episode).
    """
    cfg = _config(env_config)
    _check_policy(policy, cfg)
    _check_run(episodes, seed)
    env = make_env(cfg)
    hierarchical = hasattr(policy, "current_z")
    rec = EpisodeRecorder()
    returns = []
    try:
        for i in tqdm(range(episodes), desc=f"reacher collect ({policy.config().get('name', 'policy')})",
                      disable=not progress, unit="ep"):
            obs, info = env.reset(seed=int(seed) + i)
            policy.reset(int(seed) + i)
            state = info["state"]
            ret, done = 0.0, False
            while not done:
                action = np.asarray(policy.act(obs, state), dtype=np.float64)
                nobs, r, term, trunc, ninfo = env.step(action)
                row: Dict[str, Any] = dict(
                    observations=obs, states=state, actions=np.clip(action, -1.0, 1.0), rewards=np.float64(r),
                    next_observations=nobs, next_states=ninfo["state"], terminals=bool(term), timeouts=bool(trunc),
                )
                if hierarchical:
                    row["z_true"] = np.asarray(policy.current_z, dtype=np.float64)  # type: ignore[attr-defined]
                rec.add(**row)
                ret += r
                obs, state, done = nobs, ninfo["state"], term or trunc
            rec.end_episode()
            returns.append(ret)
    finally:
        env.close()
    meta: Dict[str, Any] = {
        "domain": "reacher", "env_id": ENV_ID, "env_config": cfg.to_dict(), "policy": policy.config(),
        "seed": int(seed), "episodes": int(episodes), "k": int(getattr(policy, "k", cfg.k)),
        "state_layout": ["q1 (unwrapped)", "q2", "qdot1", "qdot2"],
        "z_layout": "z = (q1*, q2* relative to the window-start state, qdot1*, qdot2*)" if hierarchical else None,
        "returns": [float(r) for r in returns],
    }
    meta.update(dict(metadata or {}))
    ds = rec.to_dataset(meta)
    ds.arrays["episode_ids"] = ds.arrays["episode_ids"].astype(np.int64)
    ds.arrays["terminals"] = ds.arrays["terminals"].astype(bool)
    ds.arrays["timeouts"] = ds.arrays["timeouts"].astype(bool)
    return ds


def evaluate_stats(
    policy: ReacherPolicy,
    episodes: int,
    seed: int,
    env_config: EnvConfig = None,
    progress: bool = False,
) -> Dict[str, np.ndarray]:
    """Run ``policy`` (seeds ``seed + i``) and return per-episode statistics.

    Returns:
        ``returns (episodes,)``; ``reached (episodes,)``: fraction of the episode's targets reached
        at least once; ``steps_to_reach (n_reached,)``: steps from each target's appearance to the
        first success, over all reached targets.
    """
    cfg = _config(env_config)
    _check_policy(policy, cfg)
    _check_run(episodes, seed)
    env = make_env(cfg)
    returns, reached, steps_to_reach = [], [], []
    try:
        for i in tqdm(range(episodes), desc="reacher evaluate", disable=not progress, unit="ep"):
            obs, info = env.reset(seed=int(seed) + i)
            policy.reset(int(seed) + i)
            state, ret, done = info["state"], 0.0, False
            first: Dict[int, int] = {}
            goal_start, goal, t = {0: 0}, 0, 0
            while not done:
                obs, r, term, trunc, info = env.step(np.asarray(policy.act(obs, state), dtype=np.float64))
                t += 1
                if r > 0 and goal not in first:
                    first[goal] = t - goal_start[goal]
                ret += r
                state, done = info["state"], term or trunc
                if info["goal_index"] != goal:
                    goal = info["goal_index"]
                    goal_start[goal] = t
            returns.append(ret)
            reached.append(len(first) / len(goal_start))
            steps_to_reach.extend(first.values())
    finally:
        env.close()
    return {"returns": np.asarray(returns, dtype=np.float64), "reached": np.asarray(reached, dtype=np.float64),
            "steps_to_reach": np.asarray(steps_to_reach, dtype=np.int64)}


def evaluate(policy: ReacherPolicy, episodes: int, seed: int, env_config: EnvConfig = None,
             progress: bool = False) -> np.ndarray:
    """Returns ``(episodes,)`` of ``policy`` on episodes seeded ``seed + i``.

    A hierarchical agent is evaluated by wrapping its high level, e.g.
    ``evaluate(LQRHierarchicalPolicy.from_torch_actor(actor), 30, seed)`` (z every k steps, LQR
    gains from the window-start state); see :func:`evaluate_actor`.
    """
    return evaluate_stats(policy, episodes, seed, env_config, progress)["returns"]


def evaluate_actor(actor: Any, episodes: int, seed: int, env_config: EnvConfig = None, controller: Any = None,
                   use_state: bool = False, progress: bool = False) -> np.ndarray:
    """Returns ``(episodes,)`` of a high-level actor ``(1, 10) obs tensor -> z (1, 4)`` driving the
    reacher LQR (default :func:`~ohio_layers.envs.reacher_policies.make_reacher_lqr`)."""
    policy = LQRHierarchicalPolicy.from_torch_actor(actor, controller, use_state=use_state)
    return evaluate(policy, episodes, seed, env_config, progress)


def normalized_score(returns: np.ndarray, random_return: float, expert_return: float) -> float:
    """``100 (mean R - R_random) / (R_expert - R_random)``."""
    if expert_return == random_return:
        raise ValueError("expert_return must differ from random_return")
    return float(100.0 * (np.mean(returns) - random_return) / (expert_return - random_return))


__all__ = ["make_env", "collect", "evaluate", "evaluate_stats", "evaluate_actor", "normalized_score"]
