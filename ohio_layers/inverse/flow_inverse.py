"""Analytic inverse of the min-cost-flow controller: observed flows -> desired distribution z*.

For idle counts ``a (B, n)`` and observed rebalancing flows ``x (B, E)`` the counts after
rebalancing are ``after = a + inflow(x) - outflow(x)`` and ``z* = after / sum(after)``
(uniform when no vehicle is idle). This is the OHIO reference's ``flow_to_dist`` (digest §3.1),
batched and without its lossy parts:

* **Rounding.** The controller turns ``z`` into counts by largest-remainder rounding of
  ``N z`` (``N = sum(a)``), which returns ``after`` exactly whenever every ``|N z_i - after_i| <
  1/2``. So replaying ``z*`` reproduces the observed *counts* exactly, also after storing ``z*``
  in float32 or after the optional reference-style smoothing ``eps`` (zeros -> ``eps``, taken
  from the non-zero entries) as long as ``N * n * eps < 1/2``. Larger perturbations move at most
  one vehicle per region whose ``|N z_i - after_i|`` exceeds 1/2; :class:`FlowReplay` reports the
  mismatch in vehicles. (The reference's ``floor`` lost up to ``n - 1`` vehicles per replay.)
* **Flows.** Replaying reproduces the observed *flows* only when they were min-cost flows for
  their targets (data from a hierarchical behaviour policy with this controller). Other flows
  reach the same counts at a cost ``>=`` the controller's; :class:`FlowReplay` reports both
  costs and the L1 flow difference.

Use :class:`FlowInverter` as the ``inverter`` of :func:`ohio_layers.inverse.relabel` with ``k=1``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .._validate import check_tensor
from ..data.dataset import Dataset
from ..lowlevel.base import module_device
from ..lowlevel.min_cost_flow import FlowStatus, MinCostFlowController
from .result import InverseResult

__all__ = ["counts_after_flows", "flows_to_distribution", "FlowReplay", "replay_flows", "invert_flows", "FlowInverter"]


def counts_after_flows(idle: Tensor, flows: Tensor, edge_index: Tensor) -> Tensor:
    """``idle + inflow - outflow``, ``(B, n)``, for ``idle (B, n)``, ``flows (B, E)``, ``edge_index (2, E)``."""
    src, dst = edge_index[0].long(), edge_index[1].long()
    out = torch.zeros_like(idle).index_add(1, src, flows)
    inn = torch.zeros_like(idle).index_add(1, dst, flows)
    return idle - out + inn


def flows_to_distribution(idle: Tensor, flows: Tensor, edge_index: Tensor, eps: float = 0.0) -> Tuple[Tensor, Tensor]:
    """Desired distribution ``z* (B, n)`` implied by observed flows, and a ``valid (B,)`` mask.

    Rows whose flows move more vehicles out of a region than it has (negative counts after
    rebalancing) are not executable: they are marked invalid and their negative counts clipped
    to 0 before normalising. ``eps > 0`` applies the reference's smoothing (no exact zeros).

    Args:
        idle: ``(B, n)`` idle vehicles when the flows were chosen.
        flows: ``(B, E)`` observed flows on the edges ``edge_index (2, E)``.
        eps: smoothing (0 = exact).
    """
    n = idle.shape[1]
    check_tensor("idle", idle, ("B", n))
    check_tensor("flows", flows, (idle.shape[0], edge_index.shape[1]))
    if bool((idle < 0).any()):
        raise ValueError(f"idle contains negative counts at rows {(idle < 0).any(1).nonzero()[:, 0].tolist()[:10]}")
    if bool((flows < 0).any()):
        raise ValueError(f"flows contains negative entries at rows {(flows < 0).any(1).nonzero()[:, 0].tolist()[:10]}")
    if eps < 0 or eps * n >= 1:
        raise ValueError(f"eps must be in [0, 1/n) = [0, {1 / n:.3g}), got {eps}")
    after = counts_after_flows(idle, flows, edge_index)
    valid = (after >= -1e-9).all(1)
    after = after.clamp_min(0.0)
    total = after.sum(1, keepdim=True)
    z = torch.where(total > 0, after / total.clamp_min(1e-300), torch.full_like(after, 1.0 / n))
    if eps > 0:
        zero = z <= 0
        nz = (~zero).sum(1, keepdim=True).to(z.dtype)
        take = eps * zero.sum(1, keepdim=True).to(z.dtype) / nz
        z = torch.where(zero, torch.full_like(z, eps), z - take)
    return z, valid


@dataclass
class FlowReplay:
    """Verification of ``z*``: replay it through the controller and compare with the data.

    Attributes (all ``(B,)``):
        counts_l1: ``sum_i |replayed after_i - observed after_i|`` in vehicles (rounding mismatch).
        counts_l2: Euclidean norm of the same difference.
        flows_l1: ``sum_e |replayed x_e - observed x_e|``.
        replay_cost, observed_cost: ``sum_e c_e x_e`` of the replayed and the observed flows.
        status: the controller's :class:`FlowStatus` of the replay.
    """

    counts_l1: Tensor
    counts_l2: Tensor
    flows_l1: Tensor
    replay_cost: Tensor
    observed_cost: Tensor
    status: Tensor

    @property
    def counts_reproduced(self) -> Tensor:
        return self.counts_l1 == 0

    @property
    def flows_reproduced(self) -> Tensor:
        return self.flows_l1 == 0

    def summary(self) -> str:
        B = max(len(self.counts_l1), 1)
        return (f"{len(self.counts_l1)} decisions: counts reproduced {100 * float(self.counts_reproduced.sum()) / B:.1f}% "
                f"(max mismatch {float(self.counts_l1.max()) if len(self.counts_l1) else 0:.0f} vehicles), "
                f"flows reproduced {100 * float(self.flows_reproduced.sum()) / B:.1f}%, "
                f"replay/observed cost {float(self.replay_cost.sum()) / max(float(self.observed_cost.sum()), 1e-12):.3f}")


def replay_flows(controller: MinCostFlowController, idle: Tensor, flows: Tensor, z: Tensor) -> FlowReplay:
    """Run ``z (B, n)`` through ``controller`` (LP mode) and compare with the observed ``flows (B, E)``."""
    with torch.no_grad():
        sol = controller.solve(idle, z, mode="lp")
        observed_after = counts_after_flows(idle, flows, controller.edge_index)
        replay_after = counts_after_flows(idle, sol.flows, controller.edge_index)
        cost = controller.edge_cost.to(flows)
        diff = replay_after - observed_after
        return FlowReplay(
            counts_l1=diff.abs().sum(1).round(), counts_l2=diff.norm(dim=1),
            flows_l1=(sol.flows - flows).abs().sum(1).round(),
            replay_cost=(sol.flows * cost).sum(1), observed_cost=(flows * cost).sum(1), status=sol.status)


def invert_flows(controller: MinCostFlowController, idle: Tensor, flows: Tensor, eps: float = 0.0,
                 verify: bool = True) -> Tuple[InverseResult, Optional[FlowReplay]]:
    """Analytic inverse for a batch: ``z*`` with the controller's edges, and its verification.

    Returns:
        ``InverseResult`` with ``z (B, n)``, ``residual (B,)`` = Euclidean norm of replayed minus
        observed counts after rebalancing (vehicles; 0 when verification is off),
        ``converged (B,)`` = the flows were executable (and the replay solved), ``iterations`` 0;
        and the :class:`FlowReplay` (``None`` if ``verify`` is false).
    """
    z, valid = flows_to_distribution(idle, flows, controller.edge_index, eps)
    residual = torch.zeros(idle.shape[0], dtype=idle.dtype, device=idle.device)
    replay = None
    if verify:
        replay = replay_flows(controller, idle, flows, z)
        residual = replay.counts_l2.to(idle.dtype)
        valid = valid & (replay.status == FlowStatus.OK)
    return InverseResult(z, residual, valid, torch.zeros(idle.shape[0], dtype=torch.int64, device=idle.device)), replay


@dataclass
class FlowInverter:
    """An ``Inverter`` for :func:`ohio_layers.inverse.relabel` (use ``k=1``).

    Reads idle counts from ``dataset[state_key]`` and flows from ``dataset[action_key]`` at the
    window starts and returns :func:`invert_flows`' result.
    """

    controller: MinCostFlowController
    eps: float = 0.0
    verify: bool = True
    state_key: str = "states"
    action_key: str = "actions"

    def __call__(self, dataset: Dataset, starts: np.ndarray) -> InverseResult:
        dataset.require([self.state_key, self.action_key])
        dev = module_device(self.controller)  # the controller's device: relabelling moves with it
        idle = torch.as_tensor(np.asarray(dataset[self.state_key][starts], dtype=np.float64), device=dev)
        flows = torch.as_tensor(np.asarray(dataset[self.action_key][starts], dtype=np.float64), device=dev)
        return invert_flows(self.controller, idle, flows, self.eps, self.verify)[0]

    def describe(self) -> str:
        return f"FlowInverter(eps={self.eps}, verify={self.verify})"
