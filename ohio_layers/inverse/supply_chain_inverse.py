"""Analytic inverse of the supply-chain controller: observed shipments and production -> z*.

For the controller's state ``(B, 3S + 2)`` (stocks, demand term, arrivals, factory stock,
pending production) and an observed action ``[x (S), p]`` the factory splits ``avail = I_f + A_f``
into ``x`` and what stays, so (digest §3.2, batched)::

    u*_i = x_i / avail (stores),   u*_factory = (avail - sum x) / avail,   q* = p   (identity)

and ``u* = (0, .., 0, 1)`` when ``avail = 0``. ``eps > 0`` applies the reference's smoothing
(zeros -> ``eps``, renormalised) for a Dirichlet density; replay stays exact while
``(S + 1) * avail * eps < 1/2`` (largest-remainder rounding absorbs it).

**Replay check.** The controller reproduces ``x`` from ``z*`` unless the store's capacity room
(with the exact mean forecast) is smaller than what was shipped (``x_i > floor(room_i)^+``: the
behaviour overfilled a store, and the LP clips it) -- these rows are counted as
``capacity_clipped`` -- or, for the production, unless the hard factory capacity clips ``p``
(``factory_clipped``). :func:`replay_supply` reports all of these per row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np
import torch
from torch import Tensor

from .._validate import check_same_batch, check_tensor
from ..data.dataset import Dataset
from ..lowlevel.base import module_device
from ..lowlevel.supply_chain import SupplyChainController, SupplyStatus
from .result import InverseResult

__all__ = ["shipments_to_z", "SupplyReplay", "replay_supply", "SupplyChainInverter"]


def shipments_to_z(controller: SupplyChainController, state: Tensor, action: Tensor, eps: float = 0.0) -> Tensor:
    """``z* (B, S + 2)`` from ``state (B, 3S + 2)`` and observed ``action (B, S + 1)`` (module docstring)."""
    S = controller.n_stores
    check_tensor("state", state, ("B", controller.state_dim))
    check_tensor("action", action, ("B", S + 1))
    check_same_batch(state=state, action=action)
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    _, _, _, I_f, A_f = controller.split_state(state)
    avail = I_f + A_f
    x = action[:, :S]
    kept = avail - x.sum(1)
    u = torch.cat([x, kept[:, None]], 1) / avail.clamp_min(1e-12)[:, None]
    empty = torch.zeros_like(u)
    empty[:, S] = 1.0
    u = torch.where((avail > 0)[:, None], u.clamp_min(0.0), empty)
    u = u / u.sum(1, keepdim=True)
    if eps > 0:
        u = u.clamp_min(eps)
        u = u / u.sum(1, keepdim=True)
    return torch.cat([u, action[:, S:].clamp(0.0, controller.production_capacity)], 1)


@dataclass
class SupplyReplay:
    """Per-row replay of ``z*`` through the controller (all ``(B,)``).

    ``reproduced``: shipments and production equal the observed ones; ``capacity_clipped``: some
    observed shipment exceeds its store's room (the LP ships less); ``factory_clipped``: the
    observed production breaks the hard factory capacity; ``invalid``: the controller flags the
    state (:class:`SupplyStatus`); ``residual``: L1 distance between replayed and observed actions.
    """

    reproduced: Tensor
    capacity_clipped: Tensor
    factory_clipped: Tensor
    invalid: Tensor
    residual: Tensor

    def summary(self) -> Dict[str, int]:
        """Counts: rows, reproduced, capacity_clipped, factory_clipped, invalid, and unexplained (not reproduced, no reason)."""
        unexplained = ~self.reproduced & ~self.capacity_clipped & ~self.factory_clipped & ~self.invalid
        return {"rows": int(self.reproduced.numel()), "reproduced": int(self.reproduced.sum()),
                "capacity_clipped": int(self.capacity_clipped.sum()), "factory_clipped": int(self.factory_clipped.sum()),
                "invalid": int(self.invalid.sum()), "unexplained": int(unexplained.sum())}


def replay_supply(controller: SupplyChainController, state: Tensor, action: Tensor, z: Tensor) -> SupplyReplay:
    """Replay ``z (B, S + 2)`` from ``state`` and compare with the observed ``action (B, S + 1)``."""
    S = controller.n_stores
    sol = controller.solve(state, z)
    invalid = sol.status != SupplyStatus.OK
    replayed = torch.nan_to_num(sol.action, nan=-1.0)
    residual = (replayed - action).abs().sum(1)
    reproduced = ~invalid & (residual <= 1e-6)
    x = action[:, :S]
    capacity = (x > torch.relu(controller.room(state, integer=controller.integer)) + 1e-9).any(1)
    _, _, _, I_f, A_f = controller.split_state(state)
    factory = I_f + A_f - x.sum(1) + action[:, S] > controller.factory_capacity + 1e-9
    return SupplyReplay(reproduced, capacity & ~reproduced, factory & ~reproduced, invalid, residual)


class SupplyChainInverter:
    """The analytic inverse as an ``inverter`` of :func:`ohio_layers.inverse.relabel` (``k = 1``).

    ``residual`` = replay L1 distance, ``converged`` = the controller accepts the state.
    """

    def __init__(self, controller: SupplyChainController, eps: float = 0.0) -> None:
        self.controller, self.eps = controller, float(eps)

    def __call__(self, dataset: Dataset, starts: np.ndarray) -> InverseResult:
        dev = module_device(self.controller)  # the controller's device: relabelling moves with it
        state = torch.as_tensor(np.asarray(dataset["states"], dtype=np.float64)[starts], device=dev)
        action = torch.as_tensor(np.asarray(dataset["actions"], dtype=np.float64)[starts], device=dev)
        z = shipments_to_z(self.controller, state, action, self.eps)
        rep = replay_supply(self.controller, state, action, z)
        n = len(starts)
        return InverseResult(z, rep.residual, ~rep.invalid, torch.zeros(n, dtype=torch.long, device=dev))

    def describe(self) -> str:
        c = self.controller
        return (f"SupplyChainInverter(eps={self.eps}, cap={c.store_capacity.tolist()}, cap_f={c.factory_capacity}, "
                f"C={c.production_capacity}, integer={c.integer})")
