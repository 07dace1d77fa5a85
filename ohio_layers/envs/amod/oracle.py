"""Oracle upper bound for AMoD: one LP over the whole episode with the realised demand known.

After ``env.reset(seed=...)`` the requests of every step are fixed (drawn at reset). The oracle
plans rebalancing *and* matching for all ``H`` decisions at once (HiGHS through
``scipy.optimize.linprog``)::

    max   sum_{t=1..H} sum_ij (p_tij - beta tau_tij) f_tij  -  sum_{t=0..H-1} sum_e beta c_e x_te
    s.t.  sum_{e from i} x_te <= I_ti                                         t = 0..H-1
          I_ti = I_{t-1,i} - sum_{e from i} x_{t-1,e} + (vehicles arriving at i at t)
                 - sum_j f_tij,   I_ti >= 0                                  t = 1..H
          0 <= f_tij <= d_tij (realised requests),  x_te >= 0

with ``I_0`` the env's idle vehicles after the first matching and the arrivals at ``t`` made of
the trips/rebalancing already under way at reset plus the planned ``x_{t - c_e, e}`` and
``f_{s,kj}`` with ``s + tau_skj = t`` -- exactly the env's bookkeeping (digest §1.3 variant of
``AMoDEnv``). Every policy's episode return (sum of the ``H`` step rewards) is a feasible point
of this LP with integer flows and the env's greedy matching, so the LP value is an **upper
bound** on the return of any policy on that episode (continuous flows, matching by profit and
perfect foresight only loosen it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional

import numpy as np
import scipy.sparse as sp

from .env import AMoDEnv

__all__ = ["OracleResult", "oracle_plan", "oracle_returns"]


@dataclass
class OracleResult:
    """The oracle LP's solution for one episode.

    Attributes:
        value: optimal episode return (the upper bound).
        revenue, operating_cost, rebalancing_cost: parts of ``value`` (``value = revenue -
            operating_cost - rebalancing_cost``).
        served: trips served at ``t = 1..H`` (continuous LP count).
        flows: ``(H, E)`` planned rebalancing flows in ``env.edges`` order.
        status: HiGHS status (0 = optimal).
    """

    value: float
    revenue: float
    operating_cost: float
    rebalancing_cost: float
    served: float
    flows: np.ndarray
    status: int

    def to_dict(self) -> Dict[str, Any]:
        return {"value": self.value, "revenue": self.revenue, "operating_cost": self.operating_cost,
                "rebalancing_cost": self.rebalancing_cost, "served": self.served, "status": self.status}


def oracle_plan(env: AMoDEnv) -> OracleResult:
    """Solve the oracle LP for ``env``'s current episode; call right after ``env.reset(seed=...)``.

    Args:
        env: an :class:`AMoDEnv` (or a wrapper of one) at time step 0.
    Raises:
        ValueError if the env is not at the start of an episode; RuntimeError if HiGHS fails.
    """
    from scipy.optimize import linprog

    env = getattr(env, "unwrapped", env)
    if not isinstance(env, AMoDEnv):
        raise TypeError(f"env must be an AMoDEnv, got {type(env).__name__}")
    if env._needs_reset or env.time_step != 0:
        raise ValueError("env must be at the start of an episode (call env.reset(seed=...) first)")
    sc = env.scenario
    n, E, H = env.n_regions, env.n_edges, sc.horizon
    src, dst = env.edge_index
    c_reb = env.reb_steps.astype(np.int64)
    beta = float(sc.beta)
    req = env._requests.astype(np.float64)  # (T, n, n), realised at reset
    pre_arr = env._arrivals.astype(np.float64)  # under way after the first matching

    # variable layout: x (H, E) | f over (t, i, j) with t = 1..H and req > 0 | I (H, n) for t = 1..H
    f_t, f_i, f_j = np.nonzero(req[1 : H + 1] > 0)
    f_t = f_t + 1
    nx, nf, nI = H * E, len(f_t), H * n
    x_id = lambda t, e: t * E + e  # noqa: E731
    f_off, I_off = nx, nx + nf
    I_id = lambda t, i: I_off + (t - 1) * n + i  # noqa: E731  (t = 1..H)
    nvar = nx + nf + nI

    profit = sc.price[f_t, f_i, f_j] - beta * sc.trip_time[f_t, f_i, f_j]
    cost = np.zeros(nvar)
    cost[:nx] = np.tile(beta * c_reb, H)  # minimise -return
    cost[f_off : f_off + nf] = -profit

    # outflow <= idle: sum_{e from i} x_te - I_ti <= 0 (t >= 1); <= I_0 (t = 0)
    rows, cols, vals = [], [], []
    b_ub = np.zeros(H * n)
    t_e = np.repeat(np.arange(H), E)
    e_e = np.tile(np.arange(E), H)
    rows.append(t_e * n + src[e_e]); cols.append(x_id(t_e, e_e)); vals.append(np.ones(H * E))
    t_i = np.repeat(np.arange(1, H), n)
    i_i = np.tile(np.arange(n), H - 1)
    rows.append(t_i * n + i_i); cols.append(I_id(t_i, i_i)); vals.append(-np.ones(len(t_i)))
    b_ub[:n] = env.idle.astype(np.float64)
    A_ub = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(H * n, nvar))

    # balance for t = 1..H (row (t-1) n + i):
    #   I_ti - I_{t-1,i} + sum_{e from i} x_{t-1,e} - sum_{arrivals at t} + sum_j f_tij = pre_arr[t, i]  (+ I_0 if t = 1)
    rows, cols, vals = [], [], []
    row = lambda t, i: (t - 1) * n + i  # noqa: E731
    t_a = np.repeat(np.arange(1, H + 1), n)
    i_a = np.tile(np.arange(n), H)
    rows.append(row(t_a, i_a)); cols.append(I_id(t_a, i_a)); vals.append(np.ones(len(t_a)))
    t_b = np.repeat(np.arange(2, H + 1), n)
    i_b = np.tile(np.arange(n), H - 1)
    rows.append(row(t_b, i_b)); cols.append(I_id(t_b - 1, i_b)); vals.append(-np.ones(len(t_b)))
    # departures of rebalancing at t-1
    rows.append(row(t_e + 1, src[e_e])); cols.append(x_id(t_e, e_e)); vals.append(np.ones(H * E))
    # rebalancing arrivals at t = s + c_e <= H
    arr_t = t_e + c_reb[e_e]
    ok = arr_t <= H
    rows.append(row(arr_t[ok], dst[e_e[ok]])); cols.append(x_id(t_e[ok], e_e[ok])); vals.append(-np.ones(int(ok.sum())))
    # matching at t and passenger arrivals at t + tau
    f_ids = f_off + np.arange(nf)
    rows.append(row(f_t, f_i)); cols.append(f_ids); vals.append(np.ones(nf))
    tau = sc.trip_time[f_t, f_i, f_j]
    ok = f_t + tau <= H
    rows.append(row(f_t[ok] + tau[ok], f_j[ok])); cols.append(f_ids[ok]); vals.append(-np.ones(int(ok.sum())))
    A_eq = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(H * n, nvar))
    b_eq = pre_arr[1 : H + 1, :].reshape(-1).copy()
    b_eq[:n] += env.idle.astype(np.float64)

    bounds = np.zeros((nvar, 2))
    bounds[:, 1] = np.inf
    bounds[f_off : f_off + nf, 1] = req[f_t, f_i, f_j]
    res = linprog(cost, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=b_eq, bounds=bounds, method="highs")
    if res.status != 0:
        raise RuntimeError(f"oracle LP failed (status {res.status}): {res.message}")
    x = res.x[:nx].reshape(H, E)
    f = res.x[f_off : f_off + nf]
    revenue = float((f * sc.price[f_t, f_i, f_j]).sum())
    op = float((f * beta * tau).sum())
    reb = float((x * beta * c_reb[None]).sum())
    return OracleResult(value=float(-res.fun), revenue=revenue, operating_cost=op, rebalancing_cost=reb,
                        served=float(f.sum()), flows=x, status=int(res.status))


def oracle_returns(seeds: Iterable[int], env: Optional[AMoDEnv] = None, **env_kwargs: Any) -> List[OracleResult]:
    """:func:`oracle_plan` for the episodes ``env.reset(seed=s)``, ``s`` in ``seeds``.

    Args:
        seeds: reset seeds (the evaluation episodes of the policies being compared).
        env: the environment (any ``action_mode``; built from ``env_kwargs`` if omitted).
    """
    if env is None:
        env = AMoDEnv(**env_kwargs)
    elif env_kwargs:
        raise ValueError(f"pass either env or env_kwargs, not both (got {sorted(env_kwargs)})")
    out = []
    for s in seeds:
        env.reset(seed=int(s))
        out.append(oracle_plan(env))
    return out
