"""The exact Jacobian of an inverse problem's residual with respect to z, batched (solvers and convergence tests share it)."""
from __future__ import annotations

import torch
from torch import Tensor

from .problem import InverseProblem, WindowBatch

__all__ = ["residual_jacobian"]


def residual_jacobian(problem: InverseProblem, z: Tensor, batch: WindowBatch, saturate: bool = True) -> tuple:
    """``(r (B, m), J (B, m, dz))`` of the residual at ``z (B, dz)``, exact by automatic differentiation.

    Samples are independent, so forward mode with the unit tangent ``e_i`` given to every
    sample yields column ``i`` of every sample's Jacobian; the ``dz`` tangents are vmapped.
    Layers without forward-mode support (custom autograd functions with only a backward)
    fall back to ``m`` reverse-mode passes.
    """
    n, dz = z.shape
    f = lambda zz: problem.residual(zz, batch, saturate)  # noqa: E731
    tangents = torch.eye(dz, dtype=z.dtype, device=z.device)[:, None, :].expand(dz, n, dz)
    try:
        r, jv = torch.func.vmap(lambda t: torch.func.jvp(f, (z,), (t,)), out_dims=(None, 0))(tangents)
        return r, jv.permute(1, 2, 0)
    except (RuntimeError, NotImplementedError):
        pass
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        r = f(zz)
        rows = [torch.autograd.grad(r[:, j].sum(), zz, retain_graph=j < r.shape[1] - 1)[0] for j in range(r.shape[1])]
    return r.detach(), torch.stack(rows, 1)
