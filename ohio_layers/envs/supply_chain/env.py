"""A one-factory, ``S``-store inventory network (the OHIO supply chain) as a gymnasium environment.

Period ``t = 0..T-1`` (``T = scenario.periods``, one decision each). At the decision the demand
``D_t`` of the period is known, with the backlog ``U`` and the shipments arriving this period::

    step(a): 1. the factory receives last period's production:  X_f += P
             2. shipments x (integers) leave the factory, in store order 0..S-1, each clipped to the
                stock left (deterministic; the reference shuffles with an unseeded RNG); the
                requested surplus is the "over order"; they arrive at t + L
             3. production p in [0, C] (integer) is ordered; it arrives at t + 1
             4. stores receive the shipments due now; sales s = min(X_i, D_t + U_i); backlog U <- D_t + U - s
             5. reward = 15 sum s - (o / v) p - g L sum x - sum_i h_i X_i - h_f X_f - b sum U
                         - 22.5 sum_n (X_n - Cap_n)^+ - 6 over_order          (nodes n: stores and factory)
             6. t <- t + 1 (truncated at T; never terminated)

Demand is drawn at ``reset`` from the environment's own generator (``reset(seed=...)``); the
exact mean ``lambda`` is the forecast.

Observation ``(N * F,)`` float32, ``N = S + 1`` nodes (stores, then the factory), ``F = 17 + L``
features per node, unscaled (the reference's 18 for ``L = 1``)::

    0        D_t + U (stores; factory 0)
    1        holding cost h
    2        operating cost o (factory; stores 0)
    3..2+L   arrivals due in 0..L-1 periods (stores); pending production (factory, column 3)
    3+L      stock X at the decision
    4+L..13+L  mean demand lambda_{t+1..t+10} (stores; factory 0)
    14+L     retail price (stores; factory 0)
    15+L     storage capacity Cap
    16+L     production capacity C (factory; stores 0)

Edge features: ``env.edge_attr (2S, 1)`` = the lead time of each ``env.graph_edges`` edge (static).

Actions (``action_mode``):

* ``"ohio"`` (the high level): ``z = [shares over stores and factory (S + 1), production target]``
  in ``Box([0..0, 0], [1..1, C])``; shares are clipped at 0 and normalised (all zero -> everything
  stays), then :class:`~ohio_layers.lowlevel.supply_chain.SupplyChainController` (closed form,
  integer) turns ``z`` into shipments and production.
* ``"shipments"`` (the low level / end-to-end): ``[shipments per store (S), production]`` in
  ``Box(0, [Cap_f..Cap_f, C])``, rounded to integers and clipped as in step 2.

``info``: ``state`` (the controller's ``(3S + 2,)`` state at the decision), ``shipments``,
``production``, ``requested_shipments``, ``sales``, ``backlog``, ``overflow`` (units above
capacity after the step, realised), ``capacity_violations`` (units shipped above the store's room
``max(Cap - I + D_hat - A, 0)`` with the exact mean forecast ``D_hat = D_t + U + lambda_{t+1}``:
what shipping less could have avoided with the information at the decision), ``over_order``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Union

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from ...lowlevel.supply_chain import SupplyChainController
from .scenario import CAPACITY_PENALTY, OVER_ORDER_PENALTY, Scenario, get_scenario

__all__ = ["SupplyChainEnv", "FORECAST"]

FORECAST = 10  # periods of mean demand in the observation
OBS_HIGH = 1e6  # observation bound (stocks and backlogs stay far below it)


class SupplyChainEnv(gym.Env):
    """Inventory network (see the module docstring).

    Args:
        scenario: ``"1w3s"``, ``"1w10s"``, ``"1w10s-cap"`` or a :class:`Scenario`.
        action_mode: ``"ohio"`` or ``"shipments"``.
    """

    metadata = {"render_modes": []}

    def __init__(self, scenario: Union[str, Scenario] = "1w3s", action_mode: str = "ohio",
                 render_mode: Optional[str] = None) -> None:
        super().__init__()
        if action_mode not in ("ohio", "shipments"):
            raise ValueError(f"action_mode must be 'ohio' or 'shipments', got {action_mode!r}")
        if render_mode is not None:
            raise ValueError(f"render_mode must be None (no rendering), got {render_mode!r}")
        sc = get_scenario(scenario)
        self.scenario, self.action_mode, self.render_mode = sc, action_mode, render_mode
        S, L = sc.n_stores, sc.lead_time
        self.n_stores, self.n_nodes, self.n_features = S, S + 1, 17 + L
        self.store_capacity = np.asarray(sc.store_capacity, dtype=np.float64)
        self.controller = SupplyChainController(self.store_capacity, sc.factory_capacity, sc.production_capacity)
        self.graph_edges = sc.graph_edges()
        self.edge_attr = np.full((self.graph_edges.shape[1], 1), float(L))
        self.flow_edges = np.stack([np.full(S + 1, S), np.r_[np.arange(S), S]])  # factory -> stores, factory self-loop = production
        self.observation_space = spaces.Box(0.0, OBS_HIGH, (self.n_nodes * self.n_features,), np.float32)
        C = float(sc.production_capacity)
        if action_mode == "ohio":
            self.action_space = spaces.Box(np.zeros(S + 2, np.float32), np.r_[np.ones(S + 1), C].astype(np.float32))
        else:
            self.action_space = spaces.Box(np.zeros(S + 1, np.float32),
                                           np.r_[np.full(S, sc.factory_capacity), C].astype(np.float32))
        self._demand = np.zeros((sc.periods + 1, S))
        self._needs_reset = True
        self._reset_state()

    def _reset_state(self) -> None:
        sc, S, L = self.scenario, self.n_stores, self.scenario.lead_time
        self._t = 0
        self._X = np.asarray(sc.store_init, dtype=np.float64).copy()
        self._Xf = float(sc.factory_init)
        self._P = 0.0  # production ordered last period, arrives at the next step
        self._U = np.zeros(S)
        self._pipe = np.zeros((L, S))  # row k: shipments arriving k periods after the current one

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: Optional[int] = None, options: Optional[Dict[str, Any]] = None
              ) -> Tuple[np.ndarray, Dict[str, Any]]:
        super().reset(seed=seed)
        self._demand = np.r_[self.scenario.sample_demand(self.np_random), np.zeros((1, self.n_stores))]  # row T: after the end
        self._reset_state()
        self._needs_reset = False
        return self._observation(), {"time_step": 0, "state": self.controller_state()}

    def step(self, action: Any) -> Tuple[np.ndarray, float, bool, bool, Dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError("call reset() before step() (the episode has ended or never started)")
        sc, S = self.scenario, self.n_stores
        state = self.controller_state()
        info: Dict[str, Any] = {"state": state}
        if self.action_mode == "ohio":
            z = self.normalize(action)
            sol = self.controller.solve(torch.as_tensor(state)[None], torch.as_tensor(z)[None], "closed_form", True)
            if int(sol.status[0]) != 0:  # pragma: no cover - the env's own states are always valid
                raise RuntimeError(f"controller flagged the env state: status {int(sol.status[0])}")
            requested, prod = sol.shipments[0].numpy(), float(sol.production[0])
            info["z"] = z
        else:
            a = np.asarray(action, dtype=np.float64).reshape(-1)
            if a.shape != (S + 1,):
                raise ValueError(f"action must have shape ({S + 1},) in action_mode='shipments', got {np.shape(action)}")
            a = np.round(np.where(np.isfinite(a), np.clip(a, 0.0, None), 0.0))
            requested, prod = a[:S], float(min(a[S], sc.production_capacity))
        room = np.maximum(self.room(), 0.0)
        # 1-2. production arrives, shipments leave in store order
        self._Xf += self._P
        before = np.cumsum(requested) - requested
        shipped = np.clip(self._Xf - before, 0.0, requested)
        over_order = float(requested.sum() - shipped.sum())
        self._Xf -= float(shipped.sum())
        # 3. production
        self._P = prod
        # 4. arrivals (row 0 of the pipeline), then the new shipments join as due in L periods; sales, backlog
        self._X += self._pipe[0]
        self._pipe = np.r_[self._pipe[1:], shipped[None]]
        want = self._demand[self._t] + self._U
        sales = np.minimum(self._X, want)
        self._X -= sales
        self._U = want - sales
        # 5. reward
        overflow = np.maximum(self._X - self.store_capacity, 0.0).sum() + max(self._Xf - sc.factory_capacity, 0.0)
        reward = (sc.price * sales.sum() - sc.operating_cost / sc.yield_ * prod - sc.pipeline_cost * sc.lead_time * shipped.sum()
                  - float(np.dot(sc.store_holding, self._X)) - sc.factory_holding * self._Xf - sc.backlog_cost * self._U.sum()
                  - CAPACITY_PENALTY * overflow - OVER_ORDER_PENALTY * over_order)
        self._t += 1
        truncated = self._t >= sc.periods
        self._needs_reset = truncated
        info.update(time_step=self._t, shipments=shipped, production=prod, requested_shipments=requested,
                    sales=sales, backlog=self._U.copy(), overflow=float(overflow), over_order=over_order,
                    capacity_violations=float(np.maximum(shipped - room, 0.0).sum()))
        return self._observation(), float(reward), False, bool(truncated), info

    # ------------------------------------------------------------------ pieces
    def normalize(self, action: Any) -> np.ndarray:
        """``(S + 2,)`` -> ``z`` with shares on the simplex (clipped at 0; all zero -> all stay) and ``q`` in ``[0, C]``."""
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (self.n_stores + 2,):
            raise ValueError(f"action must have shape ({self.n_stores + 2},) in action_mode='ohio', got {np.shape(action)}")
        a = np.where(np.isfinite(a), a, 0.0)
        u = np.clip(a[:-1], 0.0, None)
        u = u / u.sum() if u.sum() > 0 else np.r_[np.zeros(self.n_stores), 1.0]
        return np.r_[u, np.clip(a[-1], 0.0, self.scenario.production_capacity)]

    def demand_hat(self) -> np.ndarray:
        """``D_t + U + lambda_{t+1}`` ``(S,)``: the LP's demand term (exact mean forecast)."""
        return self._demand[self._t] + self._U + self.scenario.mean_demand(self._t + 1)

    def room(self) -> np.ndarray:
        """``Cap - I + D_hat - A`` ``(S,)`` with the exact mean forecast."""
        return self.store_capacity - self._X + self.demand_hat() - self._pipe.sum(0)

    def controller_state(self) -> np.ndarray:
        """``(3S + 2,)`` = ``[I, D_hat, A (all pipeline), I_f, A_f]`` for the controller."""
        return np.r_[self._X, self.demand_hat(), self._pipe.sum(0), self._Xf, self._P].astype(np.float64)

    def _observation(self) -> np.ndarray:
        sc, S, L, t = self.scenario, self.n_stores, self.scenario.lead_time, self._t
        x = np.zeros((self.n_nodes, self.n_features))
        x[:S, 0] = self._demand[t] + self._U
        x[:S, 1], x[S, 1] = sc.store_holding, sc.factory_holding
        x[S, 2] = sc.operating_cost
        x[:S, 3:3 + L] = self._pipe.T
        x[S, 3] = self._P
        x[:S, 3 + L], x[S, 3 + L] = self._X, self._Xf
        x[:S, 4 + L:14 + L] = sc.mean_demand(np.arange(t + 1, t + 1 + FORECAST)).T
        x[:S, 14 + L] = sc.price
        x[:S, 15 + L], x[S, 15 + L] = self.store_capacity, sc.factory_capacity
        x[S, 16 + L] = sc.production_capacity
        return x.astype(np.float32).reshape(-1)

    # ------------------------------------------------------------------ accessors for policies
    @property
    def time_step(self) -> int:
        return self._t

    @property
    def demand(self) -> np.ndarray:
        """This episode's realised demand ``(T, S)`` (the MPC sees only ``D_t``; the rest is for tests)."""
        return self._demand[:-1].copy()

    def snapshot(self) -> Dict[str, Any]:
        """The decision-time quantities a behaviour policy may use (no future demand beyond ``D_t``)."""
        return {"t": self._t, "X": self._X.copy(), "Xf": self._Xf, "P": self._P, "U": self._U.copy(),
                "pipe": self._pipe.copy(), "D": self._demand[self._t].copy()}
