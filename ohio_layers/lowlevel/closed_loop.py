"""Roll a controller and a dynamics model forward for the k steps of one high-level decision."""
from __future__ import annotations

from typing import Optional, Tuple

from torch import Tensor
import torch

from .base import Context, LowLevelController
from .dynamics import Dynamics


def rollout(
    controller: LowLevelController,
    dynamics: Dynamics,
    state0: Tensor,
    z: Tensor,
    context: Optional[Context] = None,
    steps: Optional[int] = None,
    saturate: bool = True,
) -> Tuple[Tensor, Tensor]:
    """Closed-loop rollout.

    Args:
        state0: ``(B, ds)`` state at the start of the decision.
        z: ``(B, dz)`` high-level action, held for all steps.
        context: from ``controller.context(state0)`` if not given.
        steps: number of low-level steps (default ``controller.horizon``).
        saturate: apply the controller's action bounds.

    Returns:
        states ``(B, steps + 1, ds)`` (``states[:, 0] = state0``) and actions ``(B, steps, da)``.
    """
    ctx = controller.context(state0) if context is None else context
    k = controller.horizon if steps is None else steps
    states, actions = [state0], []
    x = state0
    for l in range(k):
        u = controller.act(x, z, ctx, step=l, saturate=saturate)
        x = dynamics(x, u, ctx)
        states.append(x)
        actions.append(u)
    return torch.stack(states, 1), torch.stack(actions, 1)
