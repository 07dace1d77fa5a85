"""The low-level controller contract.

A controller maps ``(state (B, ds), z (B, dz)) -> action (B, da)``. Controllers that act for
several low-level steps per high-level decision (``horizon`` k > 1: an LQR with k time-varying
gains, an OSC held over k physics sub-steps) compute a *context* once from the state at the
start of the decision (gains, the end-effector pose the goal is set from, ...) and then act at
every step ``l = 0..k-1`` with it::

    ctx = controller.context(state_0)                 # dict of batch-first tensors
    a_l = controller.act(state_l, z, ctx, step=l)     # saturated action
    a_0 = controller(state_0, z)                      # shorthand for step 0, with input checks

The context is a plain ``dict[str, Tensor]`` whose tensors all have the batch as their first
dimension, so a batch of contexts can be indexed, repeated or concatenated like data. Nothing
is stored on the module between calls: controllers are stateless.

A controller that cannot produce an action for a batch member (an infeasible flow target, a
singular mass matrix, ...) returns **NaN** for that member's action instead of failing the
batch or returning a plausible-looking value; :func:`check_actions` turns such members into a
:class:`ControllerFailure` where an action must be executed (agents, env wrappers).

Subclasses implement :meth:`law` (the unsaturated control law); :meth:`saturate` applies the
action bounds (clipping by default). Controllers whose law is affine in ``z``,
``law = G(state) z + h(state)``, also implement :meth:`affine`; the analytic inverse uses it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .._validate import check_in_bounds, check_same_batch, check_tensor

Context = Dict[str, Tensor]
Bound = Union[float, Sequence[float], Tensor, None]


def _bound_tensor(value: Bound, dim: int, fill: float, name: str) -> Tensor:
    if value is None:
        return torch.full((dim,), fill, dtype=torch.float64)
    t = torch.as_tensor(value, dtype=torch.float64)
    if t.dim() == 0:
        t = t.expand(dim).clone()
    if t.shape != (dim,):
        raise ValueError(f"{name} must be a scalar or have shape ({dim},), got {tuple(t.shape)}")
    return t


class LowLevelController(nn.Module, ABC):
    """Abstract batched, differentiable low-level controller ``pi_lo(state, z) -> action``.

    Args:
        state_dim: ``ds``, size of the controller's state.
        z_dim: ``dz``, size of the high-level action.
        action_dim: ``da``, size of the low-level action.
        horizon: ``k``, low-level steps per high-level decision.
        z_low, z_high: bounds of ``z`` (scalars or ``(dz,)``; ``None`` = unbounded).
        action_low, action_high: bounds of the action, applied by :meth:`saturate`.
    """

    def __init__(
        self,
        state_dim: int,
        z_dim: int,
        action_dim: int,
        horizon: int = 1,
        z_low: Bound = None,
        z_high: Bound = None,
        action_low: Bound = None,
        action_high: Bound = None,
    ) -> None:
        super().__init__()
        for name, v in (("state_dim", state_dim), ("z_dim", z_dim), ("action_dim", action_dim), ("horizon", horizon)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.state_dim, self.z_dim, self.action_dim, self.horizon = state_dim, z_dim, action_dim, horizon
        inf = float("inf")
        self.register_buffer("z_low", _bound_tensor(z_low, z_dim, -inf, "z_low"), persistent=False)
        self.register_buffer("z_high", _bound_tensor(z_high, z_dim, inf, "z_high"), persistent=False)
        self.register_buffer("action_low", _bound_tensor(action_low, action_dim, -inf, "action_low"), persistent=False)
        self.register_buffer("action_high", _bound_tensor(action_high, action_dim, inf, "action_high"), persistent=False)
        if bool((self.z_low > self.z_high).any()) or bool((self.action_low > self.action_high).any()):
            raise ValueError("every lower bound must be <= its upper bound")

    # ------------------------------------------------------------------ contract
    def context(self, state0: Tensor) -> Context:
        """Quantities fixed for one high-level decision, from the state ``(B, ds)`` at its start."""
        return {"state0": state0}

    @abstractmethod
    def law(self, state: Tensor, z: Tensor, context: Context, step: int) -> Tensor:
        """Unsaturated action ``(B, da)`` at low-level step ``step`` of the decision."""

    def saturate(self, action: Tensor, state: Tensor, context: Context) -> Tensor:
        """Apply the action bounds (clip). ``(B, da) -> (B, da)``."""
        low, high = self.action_low.to(action), self.action_high.to(action)
        if bool(torch.isinf(low).all()) and bool(torch.isinf(high).all()):
            return action
        return torch.clamp(action, low, high)

    def affine(self, state: Tensor, context: Context, step: int) -> Tuple[Tensor, Tensor]:
        """``(G (B, da, dz), h (B, da))`` with ``law(state, z) = G z + h``, for controllers affine in z."""
        raise NotImplementedError(f"{type(self).__name__} is not affine in z")

    @property
    def is_affine(self) -> bool:
        """Whether :meth:`affine` is implemented (enables the analytic inverse)."""
        return type(self).affine is not LowLevelController.affine

    # ------------------------------------------------------------------ use
    def act(self, state: Tensor, z: Tensor, context: Context, step: int = 0, saturate: bool = True) -> Tensor:
        """Action ``(B, da)`` at step ``step``; no input checks (the hot path of the solvers)."""
        a = self.law(state, z, context, step)
        return self.saturate(a, state, context) if saturate else a

    def forward(self, state: Tensor, z: Tensor, context: Optional[Context] = None, step: int = 0) -> Tensor:
        """Checked action ``(B, da)`` for ``state (B, ds)`` and ``z (B, dz)``."""
        self.check_inputs(state, z)
        if not 0 <= step < self.horizon:
            raise ValueError(f"step must be in [0, {self.horizon}), got {step}")
        ctx = self.context(state) if context is None else context
        return self.act(state, z, ctx, step)

    def check_inputs(self, state: Tensor, z: Tensor) -> None:
        """Shapes ``(B, ds)`` / ``(B, dz)``, finite values, z within bounds, same dtype/device."""
        check_tensor("state", state, ("B", self.state_dim))
        check_tensor("z", z, ("B", self.z_dim))
        check_same_batch(state=state, z=z)
        if state.dtype != z.dtype or state.device != z.device:
            raise TypeError(f"state and z must share dtype and device, got {state.dtype}/{state.device} and {z.dtype}/{z.device}")
        check_in_bounds("z", z, self.z_low, self.z_high)

    def clamp_z(self, z: Tensor) -> Tensor:
        """Project ``z (B, dz)`` onto its bounds."""
        return torch.clamp(z, self.z_low.to(z), self.z_high.to(z))

    def extra_repr(self) -> str:
        return f"state_dim={self.state_dim}, z_dim={self.z_dim}, action_dim={self.action_dim}, horizon={self.horizon}"


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first buffer or parameter (CPU if it has none): where data built from numpy
    for it should go, so that moving a controller to a GPU moves the work that feeds it."""
    for t in (*module.buffers(), *module.parameters()):
        return t.device
    return torch.device("cpu")


class ControllerFailure(RuntimeError):
    """The controller could not produce an action for some batch members (their actions are NaN)."""


def check_actions(controller: "LowLevelController", action: Tensor, where: str = "controller") -> Tensor:
    """Return ``action (B, da)`` unchanged, or raise :class:`ControllerFailure` naming the members with NaN/inf.

    Controllers mark members they cannot serve with NaN (see the module docstring); an env
    must never execute such an action.
    """
    bad = ~torch.isfinite(action.detach()).all(-1)
    if bool(bad.any()):
        rows = bad.nonzero()[:, 0].tolist()
        hint = getattr(controller, "failure_hint", "")
        raise ControllerFailure(f"{where}: {type(controller).__name__} could not produce an action for batch members "
                                f"{rows[:10]}{' ...' if len(rows) > 10 else ''} (NaN actions){'; ' + hint if hint else ''}")
    return action


def index_context(context: Context, index: Union[Tensor, slice]) -> Context:
    """Select batch members of a context."""
    return {k: v[index] for k, v in context.items()}


def repeat_context(context: Context, repeats: int) -> Context:
    """Tile a context ``repeats`` times along the batch (``torch.Tensor.repeat`` order)."""
    return {k: v.repeat(repeats, *([1] * (v.dim() - 1))) for k, v in context.items()}
