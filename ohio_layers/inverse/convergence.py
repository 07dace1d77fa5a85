"""One meaning of ``converged`` for every inverse solver (see :class:`~.result.InverseResult`).

Every solver stops on its own rule, but the ``converged`` flag it returns is computed here, by
the same test, at the returned ``z``:

* ``r (B, m)``, ``J (B, m, dz)``: the saturated residual and its exact Jacobian at ``z``;
* projected gradient ``pg = z - clamp(z - J'r, z_low, z_high)`` (``= J'r`` inside the bounds);
* ``rtol = sqrt(eps)`` of the dtype (1.5e-8 float64, 3.5e-4 float32);
* ``converged = finite(r, J, z) and (||r|| <= rtol * scale  or  (||pg|| <= rtol ||J|| ||r|| and ||J|| > 0))``
  with ``scale = 1 + ||observed data||`` (the target state or the recorded actions).

The first alternative: the residual is at rounding-noise level of the data (an exact answer,
whatever the direction of the noise). The second: first-order stationarity of the bounded least
squares problem, as a cosine between the residual and the range of ``J`` (scale-free, the
MINPACK ``gtol`` test). A flat region (``J = 0``, e.g. every action saturated) is not
stationary-converged: the solver learnt nothing there.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from .jacobian import residual_jacobian
from .problem import InverseProblem, WindowBatch
from .result import InverseResult

__all__ = ["stationarity_tolerance", "data_scale", "assess", "converged_test", "finish"]


def stationarity_tolerance(dtype: torch.dtype) -> float:
    """``sqrt(eps)`` of ``dtype``: the relative tolerance of the ``converged`` test."""
    return float(torch.finfo(dtype).eps) ** 0.5


def data_scale(problem: InverseProblem, batch: WindowBatch) -> Tensor:
    """``(B,)`` ``1 + ||observed data||``: the size of what the residual compares against."""
    if problem.match == "next_state":
        d = batch.target
    else:
        d = batch.actions.reshape(len(batch), -1)
    return 1.0 + torch.nan_to_num(d, nan=0.0, posinf=0.0, neginf=0.0).norm(dim=-1)


def assess(problem: InverseProblem, batch: WindowBatch, z: Tensor) -> Tuple[Tensor, Tensor]:
    """``(residual (B,), converged (B,))`` at ``z (B, dz)`` by the common test (module docstring)."""
    n = z.shape[0]
    if n == 0:
        return z.new_zeros(0), torch.zeros(0, dtype=torch.bool, device=z.device)
    with torch.no_grad():
        r, J = residual_jacobian(problem, z.detach(), batch)
        c = problem.controller
        return converged_test(z, r, J, c.z_low.to(z), c.z_high.to(z), data_scale(problem, batch).to(r))


def converged_test(z: Tensor, r: Tensor, J: Tensor, z_low: Tensor, z_high: Tensor, scale: Tensor) -> Tuple[Tensor, Tensor]:
    """The common test from a residual ``r (B, m)`` and its Jacobian ``J (B, m, dz)`` at ``z (B, dz)``.

    For solvers that have the exact Jacobian at hand (the OSC inverse); returns ``(residual, converged)``.
    """
    rtol = stationarity_tolerance(z.dtype)
    g = (J.transpose(1, 2) @ r.unsqueeze(-1)).squeeze(-1)
    pg = z - torch.clamp(z - g, z_low, z_high)
    rn, Jn = r.norm(dim=-1), J.flatten(1).norm(dim=-1)
    finite = torch.isfinite(r).all(-1) & torch.isfinite(J).flatten(1).all(-1) & torch.isfinite(z).all(-1)
    exact = rn <= rtol * scale
    stationary = (pg.norm(dim=-1) <= rtol * Jn * rn) & (Jn > 0)
    residual = torch.where(torch.isfinite(z).all(-1), rn, torch.full_like(rn, float("nan")))
    return residual, finite & (exact | stationary)


def finish(problem: InverseProblem, batch: WindowBatch, z: Tensor, iterations: Tensor) -> InverseResult:
    """The :class:`InverseResult` of a solver that ended at ``z`` after ``iterations (B,)``."""
    z = z.detach()
    residual, converged = assess(problem, batch, z)
    return InverseResult(z, residual, converged, iterations)
