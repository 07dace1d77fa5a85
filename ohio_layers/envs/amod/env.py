"""Autonomous mobility-on-demand (AMoD) vehicle rebalancing as a gymnasium environment.

One decision per step ``t`` (``horizon`` = 20 decisions per episode by default)::

    reset:   idle = initial fleet; requests d ~ Poisson(demand_rate) for every step (seeded);
             match at t = 0                                  -> observation o_0
    step(a): 1. rebalance the idle vehicles with flows x (from ``a``, see ``action_mode``);
                cost beta * sum_ij reb_time_ij x_ij; vehicles arrive at t + reb_time_ij
             2. t <- t + 1; vehicles arriving at t become idle
             3. match requests at t (per origin, a fractional knapsack: serve destinations in
                order of decreasing fare -- ties: lower index -- until the idle vehicles run
                out; equal to the matching LP's optimum); unserved requests are lost;
                served trips earn price - beta * trip_time and arrive at t + trip_time
             -> observation o_{t}, reward = matching profit at t - rebalancing cost of step 1,
                truncated when t == horizon (never terminated).

Differences from the reference simulator (digest §1.3, §8), all deliberate: vehicles arriving at
``t`` are idle at ``t`` (the reference adds one step); the matching profit is not clipped at 0;
infeasible flows are clipped per origin in edge order only in ``action_mode="flows"``; the RNG is
the environment's own (``reset(seed=...)``).

Observation: ``(n * F,)`` float32, the row-major flattening of node features ``(n, F)`` with
``F = 1 + 2 K`` (``K = lookahead``), all multiplied by ``obs_scale``::

    [idle_i(t)] + [idle_i(t) + vehicles arriving at i in t+1..t+k, k = 1..K]
                + [sum_j demand_rate_ij(t+k) * price_ij(t+k), k = 1..K]

(:meth:`AMoDEnv.node_features` reshapes; ``env.unwrapped.topology`` is the GNN ``edge_index``.)

Actions (``action_mode``):

* ``"distribution"`` (default, the high level): ``z`` in ``Box(0, 1, (n,))``, normalised to the
  simplex (all-zero -> uniform) and executed by the :class:`MinCostFlowController` (exact LP).
* ``"flows"`` (the low level / end-to-end): vehicles per rebalancing edge ``Box(0, fleet, (E,))``
  in ``env.unwrapped.edges`` order, floored and clipped greedily per origin to the idle vehicles.

``info`` carries ``state`` (idle vehicles the decision saw, ``(n,)``), ``flows (E,)`` executed,
``served``, ``lost_demand``, ``revenue``, ``operating_cost``, ``rebalancing_cost``, ``time_step``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from ...lowlevel.min_cost_flow import MinCostFlowController
from .scenario import Scenario, load_scenario_json, synthetic_city

__all__ = ["AMoDEnv", "match_requests"]


def match_requests(idle: np.ndarray, requests: np.ndarray, price: np.ndarray) -> np.ndarray:
    """Served trips ``(n, n)`` int: per origin, serve destinations by decreasing price until idle runs out.

    Exact solution of ``max sum p_ij f_ij s.t. sum_j f_ij <= idle_i, 0 <= f_ij <= requests_ij`` (it
    decouples into one fractional knapsack per origin with unit weights). Ties in price: lower
    destination index first.
    """
    order = np.argsort(-price, axis=1, kind="stable")
    d = np.take_along_axis(requests, order, 1)
    before = np.cumsum(d, 1) - d
    f_sorted = np.clip(idle[:, None] - before, 0, d)
    served = np.empty_like(f_sorted)
    np.put_along_axis(served, order, f_sorted, 1)
    return served


class AMoDEnv(gym.Env):
    """Vehicle rebalancing on a city (see the module docstring for the step semantics).

    Args:
        scenario: a :class:`Scenario`, a path to a reference-schema JSON file, or ``None`` for
            :func:`synthetic_city` (built from ``scenario_kwargs``).
        scenario_kwargs: keyword arguments of :func:`synthetic_city` / :func:`load_scenario_json`.
        action_mode: ``"distribution"`` or ``"flows"``.
        lookahead: ``K``, steps of forecast in the observation.
        obs_scale: multiplies every observation feature (reference: 0.01).
        demand: ``"poisson"`` (sampled per episode) or ``"mean"`` (rounded means, deterministic).
        controller_kwargs: extra arguments of the :class:`MinCostFlowController`.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        scenario: Union[Scenario, str, Path, None] = None,
        scenario_kwargs: Optional[Dict[str, Any]] = None,
        action_mode: str = "distribution",
        lookahead: int = 6,
        obs_scale: float = 0.01,
        demand: str = "poisson",
        controller_kwargs: Optional[Dict[str, Any]] = None,
        render_mode: Optional[str] = None,
    ) -> None:
        super().__init__()
        kw = dict(scenario_kwargs or {})
        if scenario is None:
            scenario = synthetic_city(**kw)
        elif isinstance(scenario, (str, Path)):
            scenario = load_scenario_json(scenario, **kw)
        elif not isinstance(scenario, Scenario):
            raise TypeError(f"scenario must be a Scenario, a JSON path or None, got {type(scenario).__name__}")
        if action_mode not in ("distribution", "flows"):
            raise ValueError(f"action_mode must be 'distribution' or 'flows', got {action_mode!r}")
        if demand not in ("poisson", "mean"):
            raise ValueError(f"demand must be 'poisson' or 'mean', got {demand!r}")
        if not isinstance(lookahead, int) or lookahead < 1:
            raise ValueError(f"lookahead must be a positive int, got {lookahead!r}")
        if render_mode is not None:
            raise ValueError(f"render_mode must be None (no rendering), got {render_mode!r}")
        self.scenario = scenario
        self.action_mode, self.lookahead, self.obs_scale, self.demand_mode = action_mode, lookahead, float(obs_scale), demand
        self.render_mode = render_mode
        self.controller = MinCostFlowController(scenario.graph(), cost_key="time", **(controller_kwargs or {}))
        n = scenario.n_regions
        self.n_regions = n
        self.edge_index = self.controller.edge_index.numpy().copy()  # (2, E) rebalancing edges
        self.edges = [tuple(e) for e in self.edge_index.T.tolist()]
        self.n_edges = len(self.edges)
        self.reb_steps = scenario.reb_time[self.edge_index[0], self.edge_index[1]].astype(np.int64)
        self.topology = scenario.topology.copy()
        self.n_features = 1 + 2 * lookahead
        value_max = float((scenario.demand_rate * np.maximum(scenario.price, 0.0)).sum(2).max())
        high = np.float32(self.obs_scale * max(float(scenario.fleet_size), value_max) * (1 + 1e-6) + 1e-6)
        self.observation_space = spaces.Box(0.0, high, (n * self.n_features,), np.float32)
        if action_mode == "distribution":
            self.action_space = spaces.Box(0.0, 1.0, (n,), np.float32)
        else:
            self.action_space = spaces.Box(0.0, float(max(scenario.fleet_size, 1)), (self.n_edges,), np.float32)
        self._max_delay = int(max(scenario.trip_time.max(), scenario.reb_time.max())) + 1
        self._t = 0
        self._idle = scenario.initial_idle.copy()
        self._arrivals = np.zeros((scenario.n_steps + self._max_delay + 1, n), dtype=np.int64)
        self._requests = np.zeros_like(scenario.demand_rate, dtype=np.int64)
        self._needs_reset = True

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: Optional[int] = None, options: Optional[Dict[str, Any]] = None
              ) -> Tuple[np.ndarray, Dict[str, Any]]:
        super().reset(seed=seed)
        sc = self.scenario
        if self.demand_mode == "poisson":
            self._requests = self.np_random.poisson(sc.demand_rate).astype(np.int64)
        else:
            self._requests = np.round(sc.demand_rate).astype(np.int64)
        self._t = 0
        self._idle = sc.initial_idle.copy()
        self._arrivals[:] = 0
        self._needs_reset = False
        match = self._match()
        info = {"time_step": 0, "state": self._idle.astype(np.float64), **match}
        return self._observation(), info

    def step(self, action: Any) -> Tuple[np.ndarray, float, bool, bool, Dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError("call reset() before step() (the episode has ended or never started)")
        sc = self.scenario
        state = self._idle.copy()
        if self.action_mode == "distribution":
            z = self.normalize_distribution(action)
            flows = self.flows_from_distribution(state, z)
        else:
            z = None
            flows = self.clip_flows(state, action)
        # 1. rebalancing
        out = np.bincount(self.edge_index[0], flows, self.n_regions).astype(np.int64)
        self._idle = self._idle - out
        np.add.at(self._arrivals, (self._t + self.reb_steps, self.edge_index[1]), flows)
        reb_cost = float(sc.beta * (self.reb_steps * flows).sum())
        # 2. advance time, arrivals become idle
        self._t += 1
        self._idle = self._idle + self._arrivals[self._t]
        # 3. matching
        match = self._match()
        reward = match["profit"] - reb_cost
        truncated = self._t >= sc.horizon
        self._needs_reset = truncated
        info = {"time_step": self._t, "state": state.astype(np.float64), "flows": flows.astype(np.float64),
                "rebalancing_cost": reb_cost, **match}
        if z is not None:
            info["z"] = z
        return self._observation(), float(reward), False, bool(truncated), info

    # ------------------------------------------------------------------ pieces
    def normalize_distribution(self, action: Any) -> np.ndarray:
        """``(n,)`` -> point of the simplex (negatives clipped; all-zero -> uniform; NaN/inf raise)."""
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (self.n_regions,):
            raise ValueError(f"action must have shape ({self.n_regions},) in action_mode='distribution', got {np.shape(action)}")
        if not np.isfinite(a).all():
            raise ValueError(f"action (distribution z) contains NaN or inf at regions {np.flatnonzero(~np.isfinite(a)).tolist()}")
        a = np.clip(a, 0.0, None)
        s = a.sum()
        return a / s if s > 0 else np.full(self.n_regions, 1.0 / self.n_regions)

    def flows_from_distribution(self, idle: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Integer flows ``(E,)`` of the min-cost-flow controller for idle counts and a distribution."""
        sol = self.controller.solve(torch.as_tensor(idle, dtype=torch.float64)[None],
                                    torch.as_tensor(z, dtype=torch.float64)[None])
        if int(sol.status[0]) != 0:  # pragma: no cover - complete graph, non-negative counts
            raise RuntimeError(f"rebalancing failed with status {int(sol.status[0])}")
        return sol.flows[0].numpy().round().astype(np.int64)

    def clip_flows(self, idle: np.ndarray, action: Any) -> np.ndarray:
        """``(E,)`` requested vehicles -> executable integer flows: floor, >= 0, per origin in edge order."""
        x = np.asarray(action, dtype=np.float64).reshape(-1)
        if x.shape != (self.n_edges,):
            raise ValueError(f"action must have shape ({self.n_edges},) in action_mode='flows', got {np.shape(action)}")
        x = np.floor(np.where(np.isfinite(x), np.clip(x, 0.0, None), 0.0)).astype(np.int64)
        src = self.edge_index[0]
        order = np.argsort(src, kind="stable")
        xs = x[order]
        cum = np.cumsum(xs)
        start = np.r_[0, np.flatnonzero(np.diff(src[order])) + 1]
        group_start_cum = np.repeat(cum[start] - xs[start], np.diff(np.r_[start, len(xs)]))
        before = cum - xs - group_start_cum
        cap = idle[src[order]]
        out = np.empty_like(x)
        out[order] = np.clip(cap - before, 0, xs)
        return out

    def _match(self) -> Dict[str, Any]:
        sc, t = self.scenario, self._t
        req = self._requests[t]
        served = match_requests(self._idle, req, sc.price[t])
        self._idle = self._idle - served.sum(1)
        tt = sc.trip_time[t]
        np.add.at(self._arrivals, (t + tt, np.broadcast_to(np.arange(self.n_regions), tt.shape)), served)
        revenue = float((served * sc.price[t]).sum())
        op_cost = float(sc.beta * (served * tt).sum())
        return {"revenue": revenue, "operating_cost": op_cost, "profit": revenue - op_cost,
                "served": int(served.sum()), "requests": int(req.sum()), "lost_demand": int(req.sum() - served.sum())}

    def _observation(self) -> np.ndarray:
        sc, t, K = self.scenario, self._t, self.lookahead
        future = self._arrivals[t + 1 : t + 1 + K]
        projected = self._idle[None, :] + np.cumsum(future, 0)
        steps = np.minimum(np.arange(t + 1, t + 1 + K), sc.n_steps - 1)
        value = (sc.demand_rate[steps] * sc.price[steps]).sum(2)
        value[np.arange(t + 1, t + 1 + K) >= sc.n_steps] = 0.0
        feats = np.concatenate([self._idle[:, None], projected.T, value.T], 1).astype(np.float64)
        return (feats * self.obs_scale).astype(np.float32).reshape(-1)

    # ------------------------------------------------------------------ helpers for agents
    def node_features(self, obs: Any) -> np.ndarray:
        """``(..., n * F)`` flat observations -> ``(..., n, F)`` node features."""
        obs = np.asarray(obs)
        return obs.reshape(*obs.shape[:-1], self.n_regions, self.n_features)

    @property
    def idle(self) -> np.ndarray:
        """Idle vehicles per region now (after matching), ``(n,)`` int."""
        return self._idle.copy()

    @property
    def time_step(self) -> int:
        return self._t

    def forecast(self, steps: int = 5) -> np.ndarray:
        """Mean outgoing requests per region over the next ``steps`` steps ``(n,)`` (known to behaviour policies)."""
        return self.scenario.expected_demand(self._t + 1, steps)
