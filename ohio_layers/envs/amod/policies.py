"""Behaviour policies for AMoD and offline data collection.

In the spirit of the OHIO paper's four behaviour policies (digest §4.1):

* :class:`NoRebalancing` -- nobody moves (``z`` = the current distribution).
* :class:`EqualDistribution` -- ``z`` uniform, executed by the min-cost-flow controller.
* :class:`DemandProportional` (the reference's PROP) -- ``z`` proportional to the forecast
  outgoing requests over the next ``lookahead`` steps, executed by the controller.
* :class:`RandomDistribution` (the reference's DISP) -- ``z ~ Dirichlet(alpha)``, controller.
* :class:`DispatchToDemand` (an aggregate of the reference's DTV/INF) -- an LP with a *different
  objective* that is not the controller's: send idle vehicles to forecast open requests
  ``o_j = round(mean_{k=1..lookahead} sum_l demand_rate_jl(t+k))``, maximising the number of
  matched requests first and minimising travel time second. Its flows are generally not the
  min-cost flows of any ``z`` (non-hierarchical data), which is what OHIO must cope with.

Every policy maps ``(env, rng) -> (flows (E,) int64, z (n,) or None)``; :func:`collect` rolls
them out in an ``action_mode="flows"`` :class:`AMoDEnv` and returns a :class:`Dataset`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple

import numpy as np

from .env import AMoDEnv

__all__ = ["BehaviourPolicy", "NoRebalancing", "EqualDistribution", "DemandProportional", "RandomDistribution",
           "DispatchToDemand", "POLICIES", "make_policy"]

Decision = Tuple[np.ndarray, Optional[np.ndarray]]


class BehaviourPolicy:
    """Base class: ``policy(env, rng) -> (flows (E,) int64, z (n,) or None)``."""

    name = "policy"
    hierarchical = True  # flows come from the min-cost-flow controller given some z

    def distribution(self, env: AMoDEnv, rng: np.random.Generator) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, env: AMoDEnv, rng: np.random.Generator) -> Decision:
        z = env.normalize_distribution(self.distribution(env, rng))
        return env.flows_from_distribution(env.idle, z), z


class NoRebalancing(BehaviourPolicy):
    """No vehicle moves; ``z`` = current idle distribution (uniform if no vehicle is idle)."""

    name = "none"

    def distribution(self, env: AMoDEnv, rng: np.random.Generator) -> np.ndarray:
        return env.idle.astype(np.float64)

    def __call__(self, env: AMoDEnv, rng: np.random.Generator) -> Decision:
        return np.zeros(env.n_edges, dtype=np.int64), env.normalize_distribution(self.distribution(env, rng))


class EqualDistribution(BehaviourPolicy):
    """``z`` uniform over regions."""

    name = "equal"

    def distribution(self, env: AMoDEnv, rng: np.random.Generator) -> np.ndarray:
        return np.full(env.n_regions, 1.0 / env.n_regions)


@dataclass
class DemandProportional(BehaviourPolicy):
    """``z_i`` proportional to the mean requests leaving region i over the next ``lookahead`` steps."""

    lookahead: int = 5
    floor: float = 1e-3  # share added to every region so z never vanishes
    name = "proportional"

    def distribution(self, env: AMoDEnv, rng: np.random.Generator) -> np.ndarray:
        f = env.forecast(self.lookahead)
        f = f / f.sum() if f.sum() > 0 else np.full(env.n_regions, 1.0 / env.n_regions)
        return f + self.floor


@dataclass
class RandomDistribution(BehaviourPolicy):
    """``z ~ Dirichlet(alpha * 1)`` (the reference's DISP with ``alpha = 1``)."""

    alpha: float = 1.0
    name = "random"

    def distribution(self, env: AMoDEnv, rng: np.random.Generator) -> np.ndarray:
        return rng.dirichlet(np.full(env.n_regions, self.alpha))


@dataclass
class DispatchToDemand(BehaviourPolicy):
    """Match idle vehicles to forecast open requests by an LP (max matches, then min travel time).

    ``max sum_{ij} (M - tau_ij) x_ij  s.t.  sum_j x_ij <= idle_i,  sum_i x_ij <= o_j,  x >= 0``
    over the rebalancing edges plus staying (``tau_ii = 0``), ``M = max tau + 1``; totally unimodular,
    so HiGHS returns integer flows. Vehicles not matched stay.
    """

    lookahead: int = 6
    name = "dispatch"
    hierarchical = False

    def __call__(self, env: AMoDEnv, rng: np.random.Generator) -> Decision:
        from scipy.optimize import linprog

        n, E = env.n_regions, env.n_edges
        idle = env.idle.astype(np.float64)
        open_req = np.round(env.forecast(self.lookahead) / self.lookahead)
        src = np.r_[env.edge_index[0], np.arange(n)]
        dst = np.r_[env.edge_index[1], np.arange(n)]
        tau = np.r_[env.reb_steps, np.zeros(n)].astype(np.float64)
        M = tau.max() + 1.0
        V = E + n
        A = np.zeros((2 * n, V))
        A[src, np.arange(V)] = 1.0
        A[n + dst, np.arange(V)] = 1.0
        res = linprog(-(M - tau), A_ub=A, b_ub=np.r_[idle, open_req], bounds=(0, None), method="highs-ds")
        if res.status != 0:  # pragma: no cover - always feasible (x = 0)
            raise RuntimeError(f"dispatch LP failed: {res.message}")
        return np.round(res.x[:E]).astype(np.int64), None


POLICIES = {"none": NoRebalancing, "equal": EqualDistribution, "proportional": DemandProportional,
            "random": RandomDistribution, "dispatch": DispatchToDemand}


def make_policy(name: str, **kwargs: Any) -> BehaviourPolicy:
    """Policy by name: one of ``POLICIES`` (``none``, ``equal``, ``proportional``, ``random``, ``dispatch``)."""
    if name not in POLICIES:
        raise ValueError(f"unknown behaviour policy {name!r}; choose from {sorted(POLICIES)}")
    return POLICIES[name](**kwargs)
