"""KKT backward passes: the active-set solution as a differentiable function of the QP data.

With the active set held fixed the solution is that of one linear (KKT) system, so the backward
pass is implicit differentiation of the KKT conditions (exact, no unrolled iterations).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .problem import _mv, _sym


def kkt_matrix(Q: Tensor, G: Tensor, A: Tensor, active: Tensor) -> Tensor:
    """Masked KKT matrix ``(B, n+m+me, n+m+me)`` of the QP with the ``active`` rows of G binding.

    Inactive inequality rows are replaced by ``mu_i = 0`` (a unit diagonal entry), so one
    batched system serves members with different active sets.
    """
    B = Q.shape[0]
    a = active.to(Q.dtype)
    C = torch.cat([G * a[..., None], A], 1)
    inactive = torch.cat([1.0 - a, torch.zeros(B, A.shape[1], dtype=Q.dtype, device=Q.device)], 1)
    top = torch.cat([Q, C.transpose(1, 2)], 2)
    bottom = torch.cat([C, torch.diag_embed(inactive)], 2)
    return torch.cat([top, bottom], 1)


def refined_solve(K: Tensor, rhs: Tensor, n: int, steps: int = 3) -> Tensor:
    """``K^{-1} rhs (B, k)`` for KKT matrices that may be singular (duplicated or dependent rows).

    Factorises the quasi-definite ``K + diag(eps I_n, -eps I)`` once and refines against ``K``
    itself (a proximal-point iteration): exact for regular ``K``, and for a singular but
    consistent system it converges to a solution whose ``x`` part is the unique one whenever
    ``Q`` is positive definite on the null space of the active rows.
    """
    eps = 1e-10 * (1.0 + K[:, :n, :n].abs().amax((-1, -2)))
    d = torch.cat([eps[:, None].expand(-1, n), -eps[:, None].expand(-1, K.shape[1] - n)], 1)
    LU, piv, _ = torch.linalg.lu_factor_ex(K + torch.diag_embed(d))
    b = rhs.unsqueeze(-1)
    z = torch.linalg.lu_solve(LU, piv, b)
    scale = 1e-15 * (1.0 + b.abs().amax((-1, -2)))
    for _ in range(steps):
        r = b - K @ z
        if not bool((r.abs().amax((-1, -2)) > scale).any()):  # every member is solved to round-off
            break
        z = z + torch.linalg.lu_solve(LU, piv, r)
    return z.squeeze(-1)


class BoxKKT(torch.autograd.Function):
    """``x`` of a box QP with a known active set; backward = implicit differentiation of its KKT.

    Free entries satisfy ``(Q x + p)_F = 0``, active ones equal their bound. With
    ``u = M^{-1} g`` restricted to the free entries (``M`` = the masked reduced Hessian),
    ``dL/dp = -u``, ``dL/dQ = -(u x' + x u') / 2`` and ``dL/d(bound_i) = (g - Q u)_i`` for the
    active entries. ``Qs`` is the symmetric part of ``Q`` (not differentiated through).
    """

    @staticmethod
    def forward(ctx, Q: Tensor, p: Tensor, lower: Tensor, upper: Tensor, x: Tensor, Qs: Tensor, act_lo: Tensor, act_hi: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(Qs, x, act_lo, act_hi)
        return x.clone()

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        Qs, x, act_lo, act_hi = ctx.saved_tensors
        Qs = Qs.to(g.dtype)
        free = ~(act_lo | act_hi)
        eye = torch.eye(x.shape[1], dtype=g.dtype, device=g.device)
        M = torch.where(free.unsqueeze(-1) & free.unsqueeze(-2), Qs, eye)
        w, info = torch.linalg.solve_ex(M, g)
        u = torch.where(free & (info == 0).unsqueeze(-1), w, 0.0)
        need = ctx.needs_input_grad
        grad_Q = grad_lo = grad_hi = None
        if need[0]:
            outer = u.unsqueeze(-1) * x.unsqueeze(-2)
            grad_Q = -0.5 * (outer + outer.transpose(-1, -2))
        if need[2] or need[3]:
            r = g - _mv(Qs, u)
            grad_lo, grad_hi = torch.where(act_lo, r, 0.0), torch.where(act_hi, r, 0.0)
        return grad_Q, -u if need[1] else None, grad_lo, grad_hi, None, None, None, None


class GeneralKKT(torch.autograd.Function):
    """``x`` of a QP with a known active set of ``G x <= h`` (plus ``A x = b``); exact backward.

    With ``K`` the masked KKT matrix (:func:`kkt_matrix`), multipliers ``lam = (mu, y)`` and
    ``(w_x, w_mu, w_y) = K^{-1} (g, 0, 0)``: ``dL/dp = -w_x``, ``dL/dQ = -(w_x x' + x w_x')/2``,
    ``dL/dG = -(mu w_x' + w_mu x')`` on active rows, ``dL/dh = w_mu``, ``dL/dA = -(y w_x' + w_y x')``,
    ``dL/db = w_y``.
    """

    @staticmethod
    def forward(ctx, Q: Tensor, p: Tensor, G: Tensor, h: Tensor, A: Tensor, b: Tensor, x: Tensor, lam: Tensor, active: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(Q, G, A, x, lam, active)
        return x.clone()

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        Q, G, A, x, lam, active = ctx.saved_tensors
        n, m = x.shape[1], G.shape[1]
        K = kkt_matrix(_sym(Q), G, A, active)
        rhs = torch.cat([g, torch.zeros(g.shape[0], K.shape[1] - n, dtype=g.dtype, device=g.device)], 1)
        w = refined_solve(K, rhs, n)  # K is singular for duplicated or dependent active rows
        w = torch.where(torch.isfinite(w).all(-1, keepdim=True), w, 0.0)
        wx, wl = w[:, :n], w[:, n:]
        outer = lambda a, c: a.unsqueeze(-1) * c.unsqueeze(-2)  # noqa: E731
        grad_Q = -0.5 * (outer(wx, x) + outer(x, wx))
        grad_C = -(outer(lam, wx) + outer(wl, x))
        act = active.to(g.dtype)
        return (grad_Q, -wx, grad_C[:, :m] * act.unsqueeze(-1), wl[:, :m] * act, grad_C[:, m:], wl[:, m:],
                None, None, None)
