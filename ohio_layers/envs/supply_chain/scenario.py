"""Supply-chain scenarios as config objects: one factory/warehouse and ``S`` stores (a star).

Published parameters of the OHIO reference (digest §2.3; or-gym ``NetInvMgmt``, backlog variant):

============================  =========================  =========================
parameter                     ``1w3s``                   ``1w10s``
============================  =========================  =========================
stores: I0, holding h, Cap    10, 0.5, 15                5, 2, 15
factory: I0, C, o, v, h, Cap  0, 25, 5, 1, 0.1, 50       0, 60, 5, 1, 0.005, 80
price p, backlog cost b       15, 1.0                    15, 1.5
lead time L, pipeline cost g  1, 0.5                     1, 0.5
============================  =========================  =========================

Node order everywhere (observations, shares, graph): stores ``0..S-1``, factory ``S``.
Demand of store ``i`` in period ``t`` (``t = 0..T-1``)::

    lambda_i(t) = dmax_i / 2 + dmax_i / 2 * cos(f_i * pi * (2 r_i + t) / 31)   (exact mean, the forecast)
    D_i(t)      = max(0, round(lambda_i(t) + xi)),  xi uniform on {-2, -1, 0, 1}

``1w10s-cap`` is ``1w10s`` with every store's storage capacity changed 15 -> 10 (the transfer
scenario: agents trained on ``1w10s`` data are deployed there without retraining).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

import numpy as np

__all__ = ["Scenario", "SCENARIOS", "get_scenario", "CAPACITY_PENALTY", "OVER_ORDER_PENALTY"]

CAPACITY_PENALTY = 22.5  # reward per unit stored above capacity (1.5 x the retail price; reference constant)
OVER_ORDER_PENALTY = 6.0  # reward per unit of shipment requested beyond the factory's stock (reference constant)


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One factory ``S`` stores, lead time ``L`` on every factory -> store link.

    Attributes:
        name: scenario key.
        store_init, store_holding, store_capacity: ``(S,)`` initial stock, holding cost per unit, storage capacity.
        factory_init, production_capacity, operating_cost, yield_, factory_holding, factory_capacity: the factory
            (``C``, ``o``, ``v``; production costs ``o / v`` per unit).
        price, backlog_cost: retail price and backlog cost per unit (all stores).
        lead_time, pipeline_cost: ``L`` and ``g`` (cost ``g L`` per unit shipped).
        demand_max, demand_phase, demand_frequency: ``(S,)`` ``dmax``, ``r``, ``f`` of the demand curve.
        periods: decisions per episode (reference: 31 periods -> 30 decisions).
        noise: integer demand noise range ``[low, high)``.
        s_levels: ``(S + 1,)`` published order-up-to levels, stores then factory.
    """

    name: str
    store_init: Tuple[float, ...]
    store_holding: Tuple[float, ...]
    store_capacity: Tuple[float, ...]
    factory_init: float
    production_capacity: float
    operating_cost: float
    yield_: float
    factory_holding: float
    factory_capacity: float
    price: float
    backlog_cost: float
    lead_time: int
    pipeline_cost: float
    demand_max: Tuple[float, ...]
    demand_phase: Tuple[float, ...]
    demand_frequency: Tuple[float, ...]
    s_levels: Tuple[float, ...]
    periods: int = 30
    noise: Tuple[int, int] = (-2, 2)

    def __post_init__(self) -> None:
        S = len(self.store_capacity)
        for f in ("store_init", "store_holding", "demand_max", "demand_phase", "demand_frequency"):
            if len(getattr(self, f)) != S:
                raise ValueError(f"{f} must have one entry per store ({S}), got {len(getattr(self, f))}")
        if len(self.s_levels) != S + 1:
            raise ValueError(f"s_levels must have S + 1 = {S + 1} entries (stores, factory), got {len(self.s_levels)}")
        if not isinstance(self.lead_time, int) or self.lead_time < 1:
            raise ValueError(f"lead_time must be a positive int, got {self.lead_time!r}")
        if self.production_capacity <= 0 or self.factory_capacity <= 0 or min(self.store_capacity) <= 0:
            raise ValueError("capacities must be > 0")
        if self.periods < 1:
            raise ValueError(f"periods must be >= 1, got {self.periods}")

    @property
    def n_stores(self) -> int:
        return len(self.store_capacity)

    @property
    def n_nodes(self) -> int:
        """Stores + factory."""
        return self.n_stores + 1

    def mean_demand(self, t: np.ndarray | int) -> np.ndarray:
        """Exact mean demand ``(..., S)`` at periods ``t`` (0 at or beyond ``periods``)."""
        t = np.asarray(t, dtype=np.float64)
        dmax, r, f = (np.asarray(getattr(self, k), dtype=np.float64) for k in ("demand_max", "demand_phase", "demand_frequency"))
        lam = dmax / 2 + dmax / 2 * np.cos(f * np.pi * (2 * r + t[..., None]) / 31.0)
        return np.where(t[..., None] < self.periods, lam, 0.0)

    def sample_demand(self, rng: np.random.Generator) -> np.ndarray:
        """Integer demand ``(periods, S)`` of one episode from ``rng``."""
        lam = self.mean_demand(np.arange(self.periods))
        xi = rng.integers(self.noise[0], self.noise[1], size=lam.shape)
        return np.maximum(0.0, np.round(lam + xi))

    def graph_edges(self) -> np.ndarray:
        """``(2, 2 S)`` directed GNN edges: factory -> store ``i`` then store ``i`` -> factory."""
        s, f = np.arange(self.n_stores), np.full(self.n_stores, self.n_stores)
        return np.stack([np.r_[f, s], np.r_[s, f]]).astype(np.int64)

    def with_capacity(self, name: str, store_capacity: float) -> "Scenario":
        """A copy with every store's capacity set to ``store_capacity``."""
        return dataclasses.replace(self, name=name, store_capacity=(float(store_capacity),) * self.n_stores)


_1W3S = Scenario(
    name="1w3s", store_init=(10.0,) * 3, store_holding=(0.5,) * 3, store_capacity=(15.0,) * 3,
    factory_init=0.0, production_capacity=25.0, operating_cost=5.0, yield_=1.0, factory_holding=0.1,
    factory_capacity=50.0, price=15.0, backlog_cost=1.0, lead_time=1, pipeline_cost=0.5,
    demand_max=(5.0, 15.0, 20.0), demand_phase=(1.0, 3.0, 6.0), demand_frequency=(2.0, 4.0, 6.0),
    # the reference's list [3, 3, 9, 13] is indexed by store id 1..3, so stores get 3, 3, 9 (digest §4.2)
    s_levels=(3.0, 3.0, 9.0, 46.0))

_1W10S = Scenario(
    name="1w10s", store_init=(5.0,) * 10, store_holding=(2.0,) * 10, store_capacity=(15.0,) * 10,
    factory_init=0.0, production_capacity=60.0, operating_cost=5.0, yield_=1.0, factory_holding=0.005,
    factory_capacity=80.0, price=15.0, backlog_cost=1.5, lead_time=1, pipeline_cost=0.5,
    demand_max=(5.0,) * 4 + (10.0,) * 3 + (18.0,) * 3, demand_phase=(1, 1, 1, 3, 3, 3, 6, 6, 6, 2),
    demand_frequency=(2, 4, 6, 2, 4, 6, 2, 4, 6, 3), s_levels=(2, 2, 2, 2, 6, 6, 6, 10, 10, 10, 79))

SCENARIOS: Dict[str, Scenario] = {
    "1w3s": _1W3S,
    "1w10s": _1W10S,
    # transfer: every store's storage capacity 15 -> 10, all else as 1w10s
    "1w10s-cap": _1W10S.with_capacity("1w10s-cap", 10.0),
}


def get_scenario(name: "str | Scenario") -> Scenario:
    """The :class:`Scenario` called ``name`` (``1w3s``, ``1w10s``, ``1w10s-cap``), or ``name`` itself."""
    if isinstance(name, Scenario):
        return name
    if name not in SCENARIOS:
        raise ValueError(f"scenario must be one of {sorted(SCENARIOS)}, got {name!r}")
    return SCENARIOS[name]
