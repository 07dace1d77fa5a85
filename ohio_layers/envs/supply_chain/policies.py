"""Behaviour policies of the supply chain (they act on ``action_mode="shipments"`` environments).

* :class:`STypePolicy` -- order-up-to (digest §4.2) with the published levels
  (``scenario.s_levels``): store ``i`` asks ``max(0, S_i - (X_i + arrivals_i - (D_t + U_i)))``;
  when the factory's stock (after last period's production arrives) is short, it ships
  ``floor(stock * ask_i / sum ask)``; production ``min(C, max(0, S_f - (stock - sum shipments)))``.
* :class:`MPCPolicy` -- rolling horizon (``horizon`` = 10 periods, cut at the episode's end),
  re-solved every period from the current state; the **LP relaxation** on HiGHS (not the MILP:
  first-period decisions are rounded, shipments by largest-remainder rounding of
  ``(shipments, kept stock)`` so they never exceed the stock; production rounded, then cut to the
  factory's room left after the rounded shipments). Demand: the realised ``D_t`` now,
  the exact mean ``lambda`` afterwards. Objective: the environment's reward under that forecast
  (sales, production, pipeline, holding, backlog, and the 22.5-per-unit store overflow priced in
  rather than put lexicographically first as in the reference's ``mpc_fore.mod``); the factory
  capacity is hard. Variables per period ``tau``: shipments ``r (S)``, production ``p``, sales
  ``s (S)``, backlog ``u (S)``, end stock ``E (S)``, overflow ``e (S)``, factory stock after
  shipping ``F``::

      E_tau = E_{tau-1} + arrivals_tau + r_{tau-L} - s_tau,   u_tau = u_{tau-1} + D_tau - s_tau,
      F_tau = F_{tau-1} + p_{tau-1} - sum r_tau  (F_{-1} + p_{-1} = stock now),
      F_tau + p_tau <= Cap_f,  E_tau - e_tau <= Cap,  0 <= p <= C,  all variables >= 0.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .env import SupplyChainEnv
from .scenario import CAPACITY_PENALTY

__all__ = ["BehaviourPolicy", "STypePolicy", "MPCPolicy", "make_policy", "POLICIES", "round_shipments"]


def round_shipments(x: np.ndarray, stock: float) -> np.ndarray:
    """Integer shipments ``(S,)`` close to ``x >= 0`` with ``sum <= stock``: largest-remainder rounding of
    ``(x, stock - sum x)`` (``stock`` an integer)."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, None)
    s = x.sum()
    if s > stock:
        x, s = x * stock / s, float(stock)
    v = np.r_[x, stock - s]
    fl = np.floor(v + 1e-9)
    left = int(round(stock - fl.sum()))
    order = np.argsort(-(v - fl), kind="stable")
    fl[order[:left]] += 1
    return fl[:-1]


class BehaviourPolicy:
    """``policy(env, rng) -> (action (S + 1,), None)``; ``hierarchical`` policies would also return ``z``."""

    name = "base"
    hierarchical = False

    def __call__(self, env: SupplyChainEnv, rng: np.random.Generator) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        raise NotImplementedError


class STypePolicy(BehaviourPolicy):
    """Order-up-to policy with ``levels (S + 1,)`` (stores, factory; default: the scenario's published levels)."""

    name = "s_type"

    def __init__(self, levels: Optional[np.ndarray] = None) -> None:
        self.levels = None if levels is None else np.asarray(levels, dtype=np.float64)

    def __call__(self, env: SupplyChainEnv, rng: np.random.Generator) -> Tuple[np.ndarray, None]:
        env = env.unwrapped
        sc, snap = env.scenario, env.snapshot()
        levels = np.asarray(sc.s_levels, dtype=np.float64) if self.levels is None else self.levels
        S = sc.n_stores
        position = snap["X"] + snap["pipe"].sum(0) - (snap["D"] + snap["U"])
        ask = np.maximum(0.0, levels[:S] - position)
        stock = snap["Xf"] + snap["P"]
        ship = ask if ask.sum() <= stock else np.floor(stock * ask / ask.sum())
        prod = min(sc.production_capacity, max(0.0, levels[S] - (stock - ship.sum())))
        return np.r_[ship, np.round(prod)], None


class MPCPolicy(BehaviourPolicy):
    """Rolling-horizon LP relaxation (module docstring). ``horizon`` periods, HiGHS via ``scipy.optimize.linprog``."""

    name = "mpc"

    def __init__(self, horizon: int = 10) -> None:
        if not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon must be a positive int, got {horizon!r}")
        self.horizon = horizon

    def plan(self, env: SupplyChainEnv) -> Tuple[np.ndarray, np.ndarray]:
        """``(shipments (H, S), production (H,))`` of the LP relaxation from the current state."""
        from scipy.optimize import linprog
        import scipy.sparse as sp

        env = env.unwrapped
        sc, snap = env.scenario, env.snapshot()
        S, L, t = sc.n_stores, sc.lead_time, snap["t"]
        H = max(1, min(self.horizon, sc.periods - t))
        D = np.r_[snap["D"][None], sc.mean_demand(np.arange(t + 1, t + H))].reshape(H, S)
        arrivals = np.zeros((H, S))
        k = min(L, H)
        arrivals[:k] = snap["pipe"][:k]
        # variable blocks (H, S) or (H,): r, s, u, E, e, then p, F
        nS, base = H * S, {}
        for i, key in enumerate(("r", "s", "u", "E", "e")):
            base[key] = i * nS
        base["p"], base["F"] = 5 * nS, 5 * nS + H
        V = 5 * nS + 2 * H
        iS = lambda key, tau, i: base[key] + tau * S + i  # noqa: E731
        rows, cols, vals, rhs_eq = [], [], [], []
        r = 0
        for tau in range(H):  # store balances and backlogs
            for i in range(S):
                entries = [(iS("E", tau, i), 1.0), (iS("s", tau, i), 1.0)]
                if tau > 0:
                    entries.append((iS("E", tau - 1, i), -1.0))
                if tau - L >= 0:
                    entries.append((iS("r", tau - L, i), -1.0))
                rhs = arrivals[tau, i] + (snap["X"][i] if tau == 0 else 0.0)
                for c, v in entries:
                    rows.append(r), cols.append(c), vals.append(v)
                rhs_eq.append(rhs)
                r += 1
                entries = [(iS("u", tau, i), 1.0), (iS("s", tau, i), 1.0)] + ([(iS("u", tau - 1, i), -1.0)] if tau > 0 else [])
                for c, v in entries:
                    rows.append(r), cols.append(c), vals.append(v)
                rhs_eq.append(D[tau, i] + (snap["U"][i] if tau == 0 else 0.0))
                r += 1
            entries = [(base["F"] + tau, 1.0)] + [(iS("r", tau, i), 1.0) for i in range(S)]
            if tau > 0:
                entries += [(base["F"] + tau - 1, -1.0), (base["p"] + tau - 1, -1.0)]
            for c, v in entries:
                rows.append(r), cols.append(c), vals.append(v)
            rhs_eq.append(snap["Xf"] + snap["P"] if tau == 0 else 0.0)
            r += 1
        A_eq = sp.csr_matrix((vals, (rows, cols)), shape=(r, V))
        rows, cols, vals, rhs_ub = [], [], [], []
        r = 0
        for tau in range(H):
            for i in range(S):
                rows += [r, r]
                cols += [iS("E", tau, i), iS("e", tau, i)]
                vals += [1.0, -1.0]
                rhs_ub.append(sc.store_capacity[i])
                r += 1
            rows += [r, r]
            cols += [base["F"] + tau, base["p"] + tau]
            vals += [1.0, 1.0]
            rhs_ub.append(sc.factory_capacity)
            r += 1
        A_ub = sp.csr_matrix((vals, (rows, cols)), shape=(r, V))
        c = np.zeros(V)
        blk = lambda key: slice(base[key], base[key] + nS)  # noqa: E731
        c[blk("s")] = -sc.price
        c[blk("r")] = sc.pipeline_cost * L
        c[blk("u")] = sc.backlog_cost
        c[blk("E")] = np.tile(sc.store_holding, H)
        c[blk("e")] = CAPACITY_PENALTY
        c[base["p"]:base["p"] + H] = sc.operating_cost / sc.yield_
        c[base["F"]:base["F"] + H] = sc.factory_holding
        upper = np.full(V, np.inf)
        upper[base["p"]:base["p"] + H] = sc.production_capacity
        res = linprog(c, A_ub=A_ub, b_ub=rhs_ub, A_eq=A_eq, b_eq=rhs_eq, bounds=np.c_[np.zeros(V), upper], method="highs")
        if res.status != 0:  # pragma: no cover - always feasible (ship nothing, produce nothing)
            raise RuntimeError(f"MPC LP failed: {res.message}")
        return res.x[blk("r")].reshape(H, S), res.x[base["p"]:base["p"] + H]

    def __call__(self, env: SupplyChainEnv, rng: np.random.Generator) -> Tuple[np.ndarray, None]:
        env = env.unwrapped
        r, p = self.plan(env)
        snap = env.snapshot()
        sc, stock = env.scenario, snap["Xf"] + snap["P"]
        ship = round_shipments(r[0], stock)
        # the LP keeps stock kept + production <= Cap_f; rounding production up (or shipping less after rounding the
        # shipments) could break that hard constraint by a unit, which the lower level then flags as infeasible
        room = max(0.0, sc.factory_capacity - (stock - ship.sum()))
        return np.r_[ship, np.clip(np.round(p[0]), 0.0, min(sc.production_capacity, np.floor(room)))], None


POLICIES = {"s_type": STypePolicy, "mpc": MPCPolicy}


def make_policy(name: str, **kwargs) -> BehaviourPolicy:
    """``"s_type"`` or ``"mpc"``."""
    if name not in POLICIES:
        raise ValueError(f"policy must be one of {sorted(POLICIES)}, got {name!r}")
    return POLICIES[name](**kwargs)
