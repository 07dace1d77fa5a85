"""Batched Mehrotra interior point and active-set polish for general constraints (float64, no gradient)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Tuple

import torch
from torch import Tensor

from .kkt import kkt_matrix, refined_solve
from .problem import QPStatus


def kkt_active_set(
    Q: Tensor, p: Tensor, G: Tensor, h: Tensor, A: Tensor, b: Tensor, active: Tensor, tol: float, max_iter: int,
    residual: Callable[[Tensor, Tensor], Tensor],
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Primal-dual active-set polishing for general constraints (float64, no gradient).

    From an initial guess ``active (B, m)``: solve the masked KKT system (:func:`refined_solve`),
    accept the member if ``residual(x, lam) <= tol`` (the KKT check of the caller), otherwise
    mark row ``i`` active iff ``mu_i + c_i (G_i x - h_i) > 0`` and repeat. Acceptance by the
    check rather than by a repeated set keeps degenerate members (weakly active or duplicated
    rows, more than ``n`` active rows) exact.

    Returns:
        ``(active (B, m), x (B, n), lam (B, m + me), exact (B,), iterations (B,), residual (B,))``
        for each member's best iterate; ``exact`` marks those that passed the check.
    """
    B, n = p.shape
    m = G.shape[1]
    iterations = torch.zeros(B, dtype=torch.int64, device=p.device)
    best_res = torch.full((B,), float("inf"), dtype=p.dtype, device=p.device)
    best_sol = torch.zeros(B, n + m + A.shape[1], dtype=p.dtype, device=p.device)
    best_active = active
    scale_c = 1.0 / (G.pow(2).sum(-1) + 1e-300)
    with torch.no_grad():
        for _ in range(max_iter):
            K = kkt_matrix(Q, G, A, active)
            rhs = torch.cat([-p, h * active.to(p.dtype), b], 1)
            sol = refined_solve(K, rhs, n)
            x, mu = sol[:, :n], sol[:, n:n + m]
            res = residual(x, sol[:, n:])
            running = best_res > tol
            iterations += running.to(torch.int64)
            better = running & (res < best_res)
            best_res = torch.where(better, res, best_res)
            best_sol = torch.where(better[:, None], sol, best_sol)
            best_active = torch.where(better[:, None], active, best_active)
            if not bool((best_res > tol).any()) or m == 0:
                break
            viol = (G @ x.unsqueeze(-1)).squeeze(-1) - h
            new_active = (mu + scale_c * viol) > 0
            stuck = (new_active == active).all(-1)
            if bool((stuck | (best_res <= tol)).all()):
                break
            active = new_active
    return best_active, best_sol[:, :n], best_sol[:, n:], best_res <= tol, iterations, best_res


@dataclass
class _IPMResult:
    x: Tensor
    s: Tensor
    z: Tensor
    y: Tensor
    status: Tensor
    iterations: Tensor


def interior_point(Q: Tensor, p: Tensor, G: Tensor, h: Tensor, A: Tensor, b: Tensor, tol: float, max_iter: int) -> _IPMResult:
    """Batched Mehrotra predictor-corrector interior-point method (float64, no gradient).

    Variables: ``x``, slacks ``s >= 0`` with ``Gx + s = h``, multipliers ``z >= 0`` (``G``) and
    ``y`` (``A``). Each iteration factorises the reduced KKT matrix
    ``[[Q + G' diag(z/s) G, A'], [A, -delta I]]`` once and solves it twice. A member stops as
    ``OPTIMAL`` when the relative residuals and the duality measure are below ``tol``, as
    ``INFEASIBLE`` when the scaled multipliers ``(z, y) / -(h'z + b'y)`` form a Farkas
    certificate (``||G'z + A'y||_inf <= 1e-7``), and otherwise after ``max_iter`` as ``MAX_ITER``.
    """
    B, n = p.shape
    m, me = G.shape[1], A.shape[1]
    dtype, device = p.dtype, p.device
    Gt, At = G.transpose(1, 2), A.transpose(1, 2)
    delta = 1e-13
    reg = torch.zeros(n + me, dtype=dtype, device=device)
    reg[n:] = -delta
    reg = torch.diag(reg)
    status = torch.full((B,), int(QPStatus.MAX_ITER), dtype=torch.int64, device=device)
    iterations = torch.zeros(B, dtype=torch.int64, device=device)

    def mv(M: Tensor, v: Tensor) -> Tensor:
        return (M @ v.unsqueeze(-1)).squeeze(-1)

    def factor(W: Tensor) -> Tuple[Tensor, Tensor]:
        H = Q + Gt @ (W[..., None] * G)
        K = torch.cat([torch.cat([H, At], 2), torch.cat([A, torch.zeros(B, me, me, dtype=dtype, device=device)], 2)], 1) + reg
        LU, piv, _ = torch.linalg.lu_factor_ex(K)
        return LU, piv

    def solve(LU: Tensor, piv: Tensor, rx: Tensor, ry: Tensor) -> Tuple[Tensor, Tensor]:
        sol = torch.linalg.lu_solve(LU, piv, torch.cat([rx, ry], 1).unsqueeze(-1)).squeeze(-1)
        return sol[:, :n], sol[:, n:]

    with torch.no_grad():
        # start: least squares of the constraints plus the objective (CVXOPT's initial point)
        LU, piv = factor(torch.ones(B, m, dtype=dtype, device=device))
        x, y = solve(LU, piv, -p + mv(Gt, h), b)
        r = mv(G, x) - h
        s, z = -r, r.clone()
        if m:
            s = s + (1.0 - s.amin(-1, keepdim=True)).clamp_min(0.0) * (s.amin(-1, keepdim=True) < 1e-8)
            z = z + (1.0 - z.amin(-1, keepdim=True)).clamp_min(0.0) * (z.amin(-1, keepdim=True) < 1e-8)
        p_scale = 1.0 + p.abs().amax(-1)
        h_scale = 1.0 + (h.abs().amax(-1) if m else 0.0)
        b_scale = 1.0 + (b.abs().amax(-1) if me else 0.0)
        running = torch.ones(B, dtype=torch.bool, device=device)
        for _ in range(max_iter + 1):
            rd = mv(Q, x) + p + mv(Gt, z) + mv(At, y)
            rp = mv(G, x) + s - h
            re = mv(A, x) - b
            mu = (s * z).sum(-1) / max(m, 1)
            small = lambda t, sc: (t.abs().amax(-1) if t.shape[-1] else torch.zeros(B, dtype=dtype, device=device)) <= tol * sc  # noqa: E731
            optimal = small(rd, p_scale) & small(rp, h_scale) & small(re, b_scale) & (mu <= tol * p_scale * h_scale)
            cert = -((h * z).sum(-1) + (b * y).sum(-1))
            ray = (mv(Gt, z) + mv(At, y)) / cert.clamp_min(1e-300)[:, None]
            infeasible = (cert > 0) & (ray.abs().amax(-1) <= 1e-7) & ~optimal
            status[running & optimal] = int(QPStatus.OPTIMAL)
            status[running & infeasible] = int(QPStatus.INFEASIBLE)
            running = running & ~optimal & ~infeasible
            if not bool(running.any()) or int(iterations.max()) >= max_iter:
                break
            iterations += running.to(torch.int64)
            W = z / s
            LU, piv = factor(W)

            def direction(rc: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
                dx, dy = solve(LU, piv, -rd - mv(Gt, W * rp - rc / s), -re)
                dz = W * (mv(G, dx) + rp) - rc / s
                ds = -rp - mv(G, dx)
                return dx, ds, dz, dy

            dx, ds, dz, dy = direction(s * z)
            if m:
                alpha = torch.minimum(_max_step(s, ds), _max_step(z, dz)).clamp_max(1.0)
                mu_aff = ((s + alpha[:, None] * ds) * (z + alpha[:, None] * dz)).sum(-1) / m
                sigma = (mu_aff / mu.clamp_min(1e-300)).clamp(0.0, 1.0) ** 3
                dx, ds, dz, dy = direction(s * z + ds * dz - (sigma * mu)[:, None])
                alpha = (0.99 * torch.minimum(_max_step(s, ds), _max_step(z, dz))).clamp_max(1.0)
            else:
                alpha = torch.ones(B, dtype=dtype, device=device)
            alpha = torch.where(running, alpha, torch.zeros_like(alpha))[:, None]
            x, s, z, y = x + alpha * dx, s + alpha * ds, z + alpha * dz, y + alpha * dy
    return _IPMResult(x, s, z, y, status, iterations)


def _max_step(v: Tensor, dv: Tensor) -> Tensor:
    """Largest ``alpha`` (capped at ``1e300``) with ``v + alpha dv >= 0``, per member ``(B,)``."""
    ratio = torch.where(dv < 0, -v / dv, torch.full_like(v, float("inf")))
    return ratio.amin(-1).clamp_max(1e300)
