"""Differentiable quadratically regularised transport (the backward pass of the flow controller).

``min_x sum_ij C_ij x_ij + reg/2 sum_ij x_ij^2`` over ``x >= 0`` on an allowed mask, with given
row and column sums, solved *exactly* in its dual by a batched semi-smooth Newton method and
differentiated by the implicit function theorem on its active set (closed form, one
``(2n, 2n)`` pseudo-inverse per problem). Used by :class:`~ohio_layers.lowlevel.min_cost_flow.
MinCostFlowController` for its gradients (``mode="lp"``) or its flows (``mode="qp"``).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import Tensor

__all__ = ["regularized_transport", "dense_costs"]


def _dual_newton(a: Tensor, t: Tensor, C: Tensor, mask: Tensor, reg: float, tol: float, max_iter: int
                 ) -> Tuple[Tensor, Tensor, Tensor]:
    """Solve ``min_x <C, x> + reg/2 ||x||^2, x >= 0 on mask, row sums a, column sums t``.

    Dual: ``max_{u, v} u.a + v.t - (1 / 2 reg) sum_mask relu(u_i + v_j - C_ij)^2``; the primal is
    ``x_ij = relu(u_i + v_j - C_ij) / reg``. Regularised semi-smooth Newton with Armijo line
    search (all float64, batched). Returns ``x (B, n, n)``, active mask, converged ``(B,)``.
    """
    B, n = a.shape
    m = mask.to(C.dtype).expand(B, n, n)
    big = torch.finfo(C.dtype).max / 4
    Cm = torch.where(m > 0, C, torch.full_like(C, big))
    # start with every allowed edge active and total flow ~ N
    cnt = m.sum((1, 2))
    cmax = torch.where(m > 0, C, torch.full_like(C, -big)).amax((1, 2))
    two_s = torch.maximum(cmax + reg, (reg * a.sum(1) + (C * m).sum((1, 2))) / cnt)
    u = (two_s / 2)[:, None].expand(B, n).clone()
    v = u.clone()
    scale = 1.0 + torch.maximum(a.abs().amax(1), t.abs().amax(1))
    converged = torch.zeros(B, dtype=torch.bool, device=C.device)

    def dual(u: Tensor, v: Tensor) -> Tensor:
        r = torch.relu(u[:, :, None] + v[:, None, :] - Cm)
        return (u * a).sum(1) + (v * t).sum(1) - 0.5 / reg * (r * r).sum((1, 2))

    for _ in range(max_iter):
        r = u[:, :, None] + v[:, None, :] - Cm
        A = (r > 0).to(C.dtype)
        x = torch.relu(r) / reg
        gu, gv = a - x.sum(2), t - x.sum(1)  # ascent direction of the dual
        gn = torch.maximum(gu.abs().amax(1), gv.abs().amax(1))
        converged = gn <= tol * scale
        if bool(converged.all()):
            break
        # Newton system (K + mu I) d = reg g with K = [[diag(A 1), A], [A', diag(A' 1)]]; the dual is
        # invariant along (1, -1), so v[-1] is pinned (d_v[-1] = 0) and u eliminated (Schur complement)
        mu = (1e-3 * gn.clamp_max(1.0) + 1e-10)[:, None]
        dr = A.sum(2) + mu
        S = torch.diag_embed(A.sum(1) + mu) - A.transpose(1, 2) @ (A / dr[:, :, None])
        rhs = reg * gv - ((reg * gu / dr)[:, :, None] * A).sum(1)
        L, info = torch.linalg.cholesky_ex(S[:, :-1, :-1])
        dv = torch.zeros_like(v)
        dv[:, :-1] = torch.cholesky_solve(rhs[:, :-1, None], L)[:, :, 0]
        du = (reg * gu - (A * dv[:, None, :]).sum(2)) / dr
        d0 = dual(u, v)
        slope = (gu * du).sum(1) + (gv * dv).sum(1)
        alpha = torch.ones(B, dtype=C.dtype, device=C.device)
        done = converged | (info != 0)
        for _ls in range(40):
            ok = dual(u + alpha[:, None] * du, v + alpha[:, None] * dv) >= d0 + 1e-4 * alpha * slope - 1e-13 * d0.abs()
            done = done | ok
            if bool(done.all()):
                break
            alpha = torch.where(done, alpha, alpha * 0.5)
        upd = (~converged & (info == 0))[:, None]
        u = torch.where(upd, u + alpha[:, None] * du, u)
        v = torch.where(upd, v + alpha[:, None] * dv, v)
    r = u[:, :, None] + v[:, None, :] - Cm
    return torch.relu(r) / reg, (r > 0) & (m > 0), converged


class _RegTransport(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, t: Tensor, C: Tensor, mask: Tensor, reg: float, tol: float, max_iter: int
                ) -> Tuple[Tensor, Tensor]:
        dt = a.dtype
        a64, t64 = a.detach().double(), t.detach().double()
        t64 = t64 * (a64.sum(1, keepdim=True) / t64.sum(1, keepdim=True).clamp_min(1e-300))  # exact balance
        x, act, conv = _dual_newton(a64, t64, C.detach().double(), mask, reg, tol, max_iter)
        ctx.save_for_backward(act)
        ctx.reg = reg
        ctx.mark_non_differentiable(conv)
        return x.to(dt), conv

    @staticmethod
    def backward(ctx: Any, gx: Tensor, _gconv: Any) -> Tuple[Optional[Tensor], ...]:
        (act,) = ctx.saved_tensors
        reg = ctx.reg
        dt = gx.dtype
        A = act.double()
        G = gx.double() * A
        B, n, _ = A.shape
        K = torch.zeros(B, 2 * n, 2 * n, dtype=torch.float64, device=A.device)
        K[:, :n, :n] = torch.diag_embed(A.sum(2))
        K[:, n:, n:] = torch.diag_embed(A.sum(1))
        K[:, :n, n:] = A
        K[:, n:, :n] = A.transpose(1, 2)
        rhs = torch.cat([G.sum(2), G.sum(1)], 1)
        w = (torch.linalg.pinv(K, hermitian=True, rtol=1e-10) @ rhs[:, :, None])[:, :, 0]
        wu, wv = w[:, :n], w[:, n:]
        gC = A * (wu[:, :, None] + wv[:, None, :] - G) / reg
        return wu.to(dt), wv.to(dt), gC.to(dt), None, None, None, None


def regularized_transport(supply: Tensor, demand: Tensor, cost: Tensor, mask: Tensor, reg: float = 0.1,
                          tol: float = 1e-12, max_iter: int = 100) -> Tuple[Tensor, Tensor]:
    """Differentiable quadratically regularised transport, batched.

    ``min_x sum_ij C_ij x_ij + reg/2 sum_ij x_ij^2`` over ``x >= 0`` supported on ``mask``, with row
    sums ``supply`` and column sums ``demand`` (``sum(supply) == sum(demand)`` per problem).

    Args:
        supply: ``(B, n)``; demand: ``(B, n)``; cost: ``(B, n, n)`` (entries off the mask ignored);
        mask: ``(n, n)`` bool allowed pairs (include the diagonal for "stay").
    Returns:
        ``x (B, n, n)`` (differentiable w.r.t. supply, demand and cost by implicit
        differentiation; derivatives w.r.t. supply and demand are along perturbations that keep
        the sums equal) and ``converged (B,)`` bool.
    """
    gap = (supply.detach().sum(1) - demand.detach().sum(1)).abs()
    if bool((gap > 1e-9 * (1.0 + supply.detach().abs().sum(1))).any()):
        raise ValueError(f"supply and demand must have equal sums per problem; differences {gap.tolist()[:10]}")
    return _RegTransport.apply(supply, demand, cost, mask, float(reg), float(tol), int(max_iter))



def dense_costs(cost: Tensor, src: Tensor, dst: Tensor, n: int) -> Tensor:
    """``(b, E)`` edge costs -> ``(b, n, n)`` (zeros elsewhere, stays cost 0), differentiable."""
    b = cost.shape[0]
    flat = torch.zeros(b, n * n, dtype=cost.dtype, device=cost.device)
    flat = flat.index_add(1, src * n + dst, cost)
    return flat.view(b, n, n)
