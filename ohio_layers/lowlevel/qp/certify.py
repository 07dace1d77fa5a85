"""Certificates behind every status: the KKT check, per-member PSD test, empty boxes, and the
infeasibility / unboundedness classification of members the solvers could not finish.

A status is only as good as its check, so every status of :func:`~ohio_layers.lowlevel.qp.solve_qp`
comes from here:

* ``OPTIMAL`` -- :func:`kkt_residual` at the returned ``x`` and multipliers is ``<= tol``;
* ``INFEASIBLE`` -- an empty box (``lower > upper``, ``lower = +inf`` or ``upper = -inf``), a
  Farkas certificate of the interior point, or an infeasible phase-1 LP (HiGHS);
* ``UNBOUNDED`` -- the problem is feasible and a verified direction ``d`` exists with
  ``Q d = 0``, ``p'd < 0`` and ``d`` in the recession cone of the constraints;
* ``NONCONVEX`` -- the symmetric part of ``Q`` has a clearly negative eigenvalue;
* ``MAX_ITER`` -- anything else.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from torch import Tensor

from .problem import QPProblem, QPStatus, _mv

Duals = Tuple[Tensor, Tensor, Tensor, Tensor]  # (lower (B, n), upper (B, n), inequality (B, m), equality (B, me))


def _amax(t: Tensor) -> Tensor:
    """``max |t|`` over the last dimension, 0 for an empty one: ``(B, k) -> (B,)``."""
    if t.shape[-1] == 0:
        return torch.zeros(t.shape[:-1], dtype=t.dtype, device=t.device)
    return t.abs().amax(-1)


def kkt_residual(P: QPProblem, x: Tensor, duals: Duals) -> Tensor:
    """Relative KKT residual ``(B,)`` of ``x (B, n)`` with multipliers ``duals`` for the float64 problem ``P``.

    Lagrangian ``0.5 x'Qx + p'x + zu'(x - upper) + zl'(lower - x) + mu'(Gx - h) + y'(Ax - b)``
    (``Q`` symmetric). The residual is the largest of

    * stationarity ``||Qx + p - zl + zu + G'mu + A'y||_inf / s_d``,
    * primal infeasibility (bounds, ``Gx <= h``, ``Ax = b``) ``/ s_p``,
    * negative multipliers, and multipliers of infinite bounds, ``/ s_d``,
    * complementarity ``max_i z_i slack_i / (s_d s_p)``,

    with ``s_d = 1 + max(|p|, |Qx|, |zl|, |zu|, |G'mu|, |A'y|)`` and
    ``s_p = 1 + max(|finite bounds|, |h|, |b|)`` (data only, so that a huge ``x`` cannot dilute the
    primal and complementarity terms). Non-finite ``x`` gives ``inf``.
    """
    zl, zu, mu, y = duals
    Qx = _mv(P.Q, x)
    Gmu, Ay = _mv(P.G.transpose(1, 2), mu), _mv(P.A.transpose(1, 2), y)
    stat = _amax(Qx + P.p - zl + zu + Gmu + Ay)
    s_d = 1.0 + torch.stack([_amax(P.p), _amax(Qx), _amax(zl), _amax(zu), _amax(Gmu), _amax(Ay)]).amax(0)
    fin_lo, fin_hi = torch.isfinite(P.lower), torch.isfinite(P.upper)
    slack_lo = torch.where(fin_lo, x - P.lower, 0.0)
    slack_hi = torch.where(fin_hi, P.upper - x, 0.0)
    Gx, Ax = _mv(P.G, x), _mv(P.A, x)
    slack_g = P.h - Gx
    prim = torch.stack([_amax(slack_lo.clamp_max(0.0)), _amax(slack_hi.clamp_max(0.0)),
                        _amax(slack_g.clamp_max(0.0)), _amax(Ax - P.b)]).amax(0)
    # data only: scaling by |Gx| would let a huge garbage x (a near-singular polish) pass the test
    s_p = 1.0 + torch.stack([_amax(torch.where(fin_lo, P.lower, 0.0)), _amax(torch.where(fin_hi, P.upper, 0.0)),
                             _amax(P.h), _amax(P.b)]).amax(0)
    sign = torch.stack([_amax(zl.clamp_max(0.0)), _amax(zu.clamp_max(0.0)), _amax(mu.clamp_max(0.0)),
                        _amax(torch.where(fin_lo, 0.0, zl)), _amax(torch.where(fin_hi, 0.0, zu))]).amax(0)
    comp = torch.stack([_amax(zl * slack_lo), _amax(zu * slack_hi), _amax(mu * slack_g)]).amax(0)
    res = torch.stack([stat / s_d, prim / s_p, sign / s_d, comp / (s_d * s_p)]).amax(0)
    return torch.where(torch.isfinite(x).all(-1), res.nan_to_num(nan=float("inf")), float("inf"))


def box_certificate(P: QPProblem, x: Tensor, act_lo: Tensor, act_hi: Tensor) -> Tuple[Tensor, Duals]:
    """``(residual (B,), duals)`` of a box QP at ``x`` with the active sets of a repeated search.

    The multipliers are ``-(Qx + p)`` split by the active sets. This is :func:`kkt_residual`
    minus the terms that vanish at a repeated active set by the very comparisons that ended the
    search (free entries inside their bounds, no multiplier on a free entry, and thus no
    complementarity gap): stationarity on the free entries, the distance of active entries
    from their bound, and the multiplier signs. Non-finite ``x`` gives ``inf``.
    """
    g = _mv(P.Q, x) + P.p
    zl, zu = torch.where(act_lo, g, 0.0), torch.where(act_hi, -g, 0.0)
    active = act_lo | act_hi
    stat = torch.where(active, 0.0, g).abs().amax(-1)
    s_d = 1.0 + torch.maximum(torch.maximum(P.p.abs(), (g - P.p).abs()), g.abs() * active).amax(-1)
    bound = torch.where(act_lo, P.lower, torch.where(act_hi, P.upper, x))  # infinite if an infinite bound is active
    off = (x - bound).abs().amax(-1) / (1.0 + torch.where(active, bound, 0.0).abs().amax(-1))
    sign = (-torch.minimum(zl, zu).amin(-1)).clamp_min(0.0)
    res = torch.maximum(torch.maximum(stat, sign) / s_d, off)
    empty = P.p.new_zeros(P.batch, 0)
    return res.nan_to_num(nan=float("inf")), (zl, zu, empty, empty)


def empty_box(P: QPProblem) -> Tensor:
    """``(B,)`` bool: a bound pair admits no ``x`` (``lower > upper``, ``lower = +inf``, ``upper = -inf``)."""
    inf = float("inf")
    return ((P.lower > P.upper) | (P.lower == inf) | (P.upper == -inf)).any(-1)


def nonconvex_members(Q: Tensor) -> Tuple[Tensor, Tensor]:
    """``(mask (B,), smallest eigenvalue (B,))`` of members whose symmetric ``Q`` has a clearly negative eigenvalue.

    "Clearly": below ``-1e-8 max(1, |eig|_max)``; a Cholesky test clears the positive definite
    members first, so only the others pay for an eigendecomposition.
    """
    B = Q.shape[0]
    mask = torch.zeros(B, dtype=torch.bool, device=Q.device)
    smallest = torch.zeros(B, dtype=Q.dtype, device=Q.device)
    _, info = torch.linalg.cholesky_ex(Q)
    suspect = (info != 0).nonzero().flatten()
    if suspect.numel():
        eig = torch.linalg.eigvalsh(Q[suspect])
        mask[suspect] = eig[:, 0] < -1e-8 * eig.abs().amax(-1).clamp_min(1.0)
        smallest[suspect] = eig[:, 0]
    return mask, smallest


def classify_unsolved(P: QPProblem) -> Tensor:
    """Statuses ``(B,)`` of members no solver finished: ``INFEASIBLE``, ``UNBOUNDED`` or ``MAX_ITER``.

    Per member with HiGHS (``scipy.optimize.linprog``), which is exact on these small LPs:
    first a phase-1 LP (is there a feasible ``x``?), then the recession LP
    ``min p'd`` s.t. ``d`` in the null space of ``Q``, ``G d <= 0``, ``A d = 0``, ``d_i >= 0``
    (``<= 0``) where ``lower_i`` (``upper_i``) is finite, ``|d| <= 1``. ``UNBOUNDED`` only when
    the direction found passes :func:`_is_recession_direction`.

    A failure path only: the members are copied to the host once (HiGHS solves there), the
    statuses come back on the problem's device.
    """
    from scipy.optimize import linprog

    out = torch.full((P.batch,), int(QPStatus.MAX_ITER), dtype=torch.int64)
    host = [t.detach().cpu().numpy() for t in (P.Q, P.p, P.lower, P.upper, P.G, P.h, P.A, P.b)]
    for i in range(P.batch):
        Q, p, lo, hi, G, h, A, b = (a[i] for a in host)
        n = p.shape[0]
        bounds = [(None if not np.isfinite(l) else l, None if not np.isfinite(u) else u) for l, u in zip(lo, hi)]
        eq = {"A_eq": A, "b_eq": b} if A.shape[0] else {}
        ineq = {"A_ub": G, "b_ub": h} if G.shape[0] else {}
        feas = linprog(np.zeros(n), bounds=bounds, method="highs", **ineq, **eq)
        if feas.status == 2:
            out[i] = int(QPStatus.INFEASIBLE)
            continue
        if feas.status != 0:
            continue
        eig, V = np.linalg.eigh(Q)
        rng = V[:, eig > 1e-10 * max(1.0, float(np.abs(eig).max(initial=0.0)))].T  # d must be orthogonal to these
        dbounds = [(0.0 if np.isfinite(l) else -1.0, 0.0 if np.isfinite(u) else 1.0) for l, u in zip(lo, hi)]
        A_eq = np.vstack([A, rng]) if (A.shape[0] or rng.shape[0]) else None
        rec = linprog(p, A_ub=G if G.shape[0] else None, b_ub=np.zeros(G.shape[0]) if G.shape[0] else None,
                      A_eq=A_eq, b_eq=np.zeros(A_eq.shape[0]) if A_eq is not None else None, bounds=dbounds, method="highs")
        if rec.status == 0 and _is_recession_direction(Q, p, lo, hi, G, A, rec.x):
            out[i] = int(QPStatus.UNBOUNDED)
    return out.to(P.p.device)


def _is_recession_direction(Q: np.ndarray, p: np.ndarray, lo: np.ndarray, hi: np.ndarray, G: np.ndarray, A: np.ndarray,
                            d: np.ndarray, tol: float = 1e-9) -> bool:
    """``d`` certifies unboundedness: ``p'd < -tol s``, ``|Qd|, Gd^+, |Ad|, sign violations <= tol s |d|``."""
    size = np.abs(d).max(initial=0.0)
    if not np.isfinite(d).all() or size == 0.0:
        return False
    d = d / size
    s = 1.0 + np.abs(p).max(initial=0.0)
    bad = [np.abs(Q @ d).max(initial=0.0) / (1.0 + np.abs(Q).max(initial=0.0)),
           (G @ d).max(initial=0.0) / (1.0 + np.abs(G).max(initial=0.0)), np.abs(A @ d).max(initial=0.0),
           np.where(np.isfinite(lo), -d, 0.0).max(initial=0.0), np.where(np.isfinite(hi), d, 0.0).max(initial=0.0)]
    return bool(p @ d < -tol * s and max(bad) <= tol)
