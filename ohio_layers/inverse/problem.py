"""Inverse problems: which z makes the low-level controller reproduce the data?

An :class:`InverseProblem` turns a batch of k-step windows into a residual function
``r(z) (B, m)`` whose least-squares minimiser is the relabelled high-level action:

* ``match="next_state"``: roll controller + approximate dynamics k steps from the observed
  ``s_t`` and compare with the observed ``s_{t+k}`` (OHIO's next-state matching).
* ``match="actions"``: feed the observed intermediate states (teacher forcing) and compare the
  controller's actions with the observed low-level actions (no dynamics model needed).

An optional Tikhonov term ``sqrt(reg) * (z - z_ref)`` is appended to the residual vector, so
every solver minimises ``||r(z)||^2 + reg ||z - z_ref||^2`` without knowing about it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from .._validate import check_tensor
from ..data.dataset import Dataset
from ..lowlevel.base import Context, LowLevelController, module_device, repeat_context
from ..lowlevel.closed_loop import rollout
from ..lowlevel.dynamics import Dynamics

MATCHES = ("next_state", "actions")


@dataclass
class WindowBatch:
    """The observed data of ``B`` windows of ``k`` low-level steps.

    Attributes:
        state0: ``(B, ds)`` state at the window start ``s_t``.
        target: ``(B, ds)`` observed state after k steps ``s_{t+k}``.
        states: ``(B, k, ds)`` observed states ``s_t .. s_{t+k-1}`` (for action matching).
        actions: ``(B, k, da)`` observed low-level actions (for action matching).
        context: controller context at ``s_t`` (computed by :meth:`InverseProblem.batch`).
    """

    state0: Tensor
    target: Optional[Tensor] = None
    states: Optional[Tensor] = None
    actions: Optional[Tensor] = None
    context: Optional[Context] = None

    def __len__(self) -> int:
        return self.state0.shape[0]

    def repeat(self, n: int) -> "WindowBatch":
        """Tile every member ``n`` times along the batch (``Tensor.repeat`` order)."""
        def rep(t: Optional[Tensor]) -> Optional[Tensor]:
            return None if t is None else t.repeat(n, *([1] * (t.dim() - 1)))
        return WindowBatch(rep(self.state0), rep(self.target), rep(self.states), rep(self.actions),
                           None if self.context is None else repeat_context(self.context, n))


class InverseProblem:
    """Residual of a batch of windows as a function of z.

    Args:
        controller: the low-level controller to invert.
        dynamics: approximate dynamics (required for ``match="next_state"``).
        match: ``"next_state"`` or ``"actions"``.
        steps: window length k (default ``controller.horizon``).
        regularization: Tikhonov weight ``reg >= 0`` on ``||z - z_ref||^2``.
        z_ref: ``(dz,)`` reference for the regulariser (default 0).
    """

    def __init__(
        self,
        controller: LowLevelController,
        dynamics: Optional[Dynamics] = None,
        match: str = "next_state",
        steps: Optional[int] = None,
        regularization: float = 0.0,
        z_ref: Optional[Tensor] = None,
    ) -> None:
        if match not in MATCHES:
            raise ValueError(f"match must be one of {MATCHES}, got {match!r}")
        if match == "next_state" and dynamics is None:
            raise ValueError("dynamics is required for match='next_state'")
        if regularization < 0 or not np.isfinite(regularization):
            raise ValueError(f"regularization must be a finite number >= 0, got {regularization}")
        self.controller, self.dynamics, self.match = controller, dynamics, match
        if steps is not None and (not isinstance(steps, (int, np.integer)) or isinstance(steps, bool)):
            raise TypeError(f"steps must be an int, got {type(steps).__name__}")
        self.steps = controller.horizon if steps is None else int(steps)
        if not 1 <= self.steps <= controller.horizon:
            raise ValueError(f"steps must be in [1, controller.horizon = {controller.horizon}] (the controller's "
                             f"context holds {controller.horizon} steps per decision), got {steps}")
        self.regularization = float(regularization)
        self.z_ref = None
        if z_ref is not None:
            self.z_ref = torch.as_tensor(z_ref, dtype=torch.float64)
            check_tensor("z_ref", self.z_ref, (controller.z_dim,))

    # ------------------------------------------------------------------ data
    def batch(
        self,
        state0: Tensor,
        target: Optional[Tensor] = None,
        states: Optional[Tensor] = None,
        actions: Optional[Tensor] = None,
        context: Optional[Context] = None,
        with_context: bool = True,
    ) -> WindowBatch:
        """Check the observed data and compute the controller context at ``state0``.

        ``with_context=False`` skips the context (no residual can then be evaluated): for
        methods that read only the observed data, such as an amortised inverse network.
        """
        c, k = self.controller, self.steps
        check_tensor("state0", state0, ("B", c.state_dim))
        n = state0.shape[0]
        if self.match == "next_state":
            if target is None:
                raise ValueError("target (B, ds), the observed state after k steps, is required for match='next_state'")
            check_tensor("target", target, (n, c.state_dim))
        else:
            if states is None or actions is None:
                raise ValueError("states (B, k, ds) and actions (B, k, da) are required for match='actions'")
            check_tensor("states", states, (n, k, c.state_dim))
            check_tensor("actions", actions, (n, k, c.action_dim))
        ctx = context if context is not None or not with_context else c.context(state0)
        if ctx is not None and self.match == "next_state" and hasattr(self.dynamics, "check_context"):
            self.dynamics.check_context(ctx)
        return WindowBatch(state0, target, states, actions, ctx)

    def batch_from_dataset(self, dataset: Dataset, starts: np.ndarray, dtype: torch.dtype = torch.float64,
                           state_key: str = "states", with_context: bool = True) -> WindowBatch:
        """Windows starting at rows ``starts`` of a low-level dataset (see ``data.window_starts``)."""
        k = self.steps
        rows = starts[:, None] + np.arange(k)[None, :]
        as_t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=self.device)  # noqa: E731
        states = as_t(dataset[state_key][rows])
        state0 = states[:, 0]
        if self.match == "next_state":
            return self.batch(state0, target=as_t(dataset["next_" + state_key][rows[:, -1]]), with_context=with_context)
        return self.batch(state0, states=states, actions=as_t(dataset["actions"][rows]), with_context=with_context)

    # ------------------------------------------------------------------ residual
    @property
    def device(self) -> torch.device:
        """The controller's device (of its first buffer or parameter; CPU if it has none).

        Batches built from numpy data go there, so moving the controller to a GPU moves relabelling with it.
        """
        return module_device(self.controller)

    @property
    def z_dim(self) -> int:
        return self.controller.z_dim

    def residual(self, z: Tensor, batch: WindowBatch, saturate: bool = True) -> Tensor:
        """Residual vector ``(B, m)`` at ``z (B, dz)``; ``saturate=False`` drops the action bounds."""
        c = self.controller
        if self.match == "next_state":
            traj, _ = rollout(c, self.dynamics, batch.state0, z, batch.context, self.steps, saturate=saturate)
            r = traj[:, -1] - batch.target
        else:
            r = torch.cat([c.act(batch.states[:, l], z, batch.context, l, saturate=saturate) - batch.actions[:, l]
                           for l in range(self.steps)], dim=-1)
        if self.regularization > 0:
            ref = torch.zeros_like(z) if self.z_ref is None else self.z_ref.to(z).expand_as(z)
            r = torch.cat([r, (self.regularization ** 0.5) * (z - ref)], dim=-1)
        return r
