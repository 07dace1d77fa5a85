"""Batched primal-dual active-set search for box-constrained QPs (float64, no gradient)."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .problem import _mv


def box_active_set(Q: Tensor, p: Tensor, lower: Tensor, upper: Tensor, max_iter: int) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Primal-dual active-set search for the box QP (float64, no gradient).

    Iterates ``x = solve(active set)``, ``mu = -(Qx + p)`` on the active entries, then
    ``upper active <=> x + mu / Q_ii > upper`` and ``lower active <=> x + mu / Q_ii < lower``
    until the sets repeat, which certifies the KKT conditions exactly (free entries lie inside
    their bounds, active ones have multipliers of the right sign). Once a quarter of the
    working batch has finished, the finished members are dropped from it.

    Returns:
        ``(act_lo (B, n), act_hi (B, n), x (B, n), converged (B,), iterations (B,))``.
    """
    B, n = p.shape
    device = p.device
    # the active set of member b is one int8 vector: +1 upper bound, -1 lower bound, 0 free
    out_state = torch.zeros(B, n, dtype=torch.int8, device=device)
    out_x = torch.zeros(B, n, dtype=p.dtype, device=device)
    out_ok = torch.zeros(B, dtype=torch.bool, device=device)
    out_it = torch.full((B,), max_iter, dtype=torch.int64, device=device)
    big = 1e300  # infinite bounds as huge finite ones, so that 0 * bound = 0
    lower, upper = lower.clamp_min(-big), upper.clamp_max(big)
    neg_c = -1.0 / Q.diagonal(dim1=-2, dim2=-1).clamp_min(1e-300)
    eye = torch.eye(n, dtype=p.dtype, device=device)
    idx: Optional[Tensor] = None  # None = the whole batch is still working
    with torch.no_grad():
        state = out_state
        for it in range(1, max_iter + 1):
            if it == 1:  # nothing active yet: the unconstrained minimiser
                free = torch.ones(state.shape, dtype=torch.bool, device=device)
                x, info = torch.linalg.solve_ex(Q, -p)
            else:
                free = state == 0
                fixed = torch.where(state > 0, upper, lower) * (~free)
                M = torch.where(free.unsqueeze(-1) & free.unsqueeze(-2), Q, eye)
                x, info = torch.linalg.solve_ex(M, torch.where(free, -p - _mv(Q, fixed), fixed))
            trial = x + neg_c * torch.where(free, 0.0, _mv(Q, x) + p)
            new_state = (trial > upper).to(torch.int8) - (trial < lower).to(torch.int8)
            finished = (new_state == state).all(-1) | (info != 0)
            state = new_state
            all_done = bool(finished.all())
            if not (all_done or it == max_iter or (finished.numel() >= 8 and 4 * int(finished.sum()) >= finished.numel())):
                continue
            # write the finished members back and drop them from the working batch
            healthy = (info == 0) & torch.isfinite(x).all(-1)
            if all_done and idx is None:
                out_state, out_x, out_ok = state, x, healthy
                out_it = torch.full((B,), it, dtype=torch.int64, device=device)
                break
            rows = finished.nonzero().flatten()
            target = rows if idx is None else idx[rows]
            out_state[target], out_x[target], out_ok[target], out_it[target] = state[rows], x[rows], healthy[rows], it
            if all_done:
                break
            keep = (~finished).nonzero().flatten()
            idx = keep if idx is None else idx[keep]
            Q, p, lower, upper, neg_c, state = Q[keep], p[keep], lower[keep], upper[keep], neg_c[keep], state[keep]
    return out_state < 0, out_state > 0, out_x, out_ok, out_it


SMALL_BATCH = 8  # below this a CPU search runs in numpy (batches the LAPACK path of _solve_box_small declines)


def box_active_set_small(Q: Tensor, p: Tensor, lower: Tensor, upper: Tensor, max_iter: int) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """:func:`box_active_set` for a few CPU problems, the same iteration written with numpy.

    Falls back to the torch version when a reduced Hessian is singular.
    """
    Qn, pn = Q.numpy(), p.numpy()
    lo, hi = np.maximum(lower.numpy(), -1e300), np.minimum(upper.numpy(), 1e300)
    neg_c = -1.0 / np.maximum(np.diagonal(Qn, axis1=-2, axis2=-1), 1e-300)
    eye = np.eye(pn.shape[1])
    state = np.zeros(pn.shape, dtype=np.int8)
    try:
        x = np.linalg.solve(Qn, -pn[..., None])[..., 0]
        for it in range(1, max_iter + 1):
            if it > 1:
                free = state == 0
                fixed = np.where(state > 0, hi, lo) * ~free
                M = np.where(free[:, :, None] & free[:, None, :], Qn, eye)
                rhs = np.where(free, -pn - (Qn @ fixed[..., None])[..., 0], fixed)
                x = np.linalg.solve(M, rhs[..., None])[..., 0]
            else:
                free = np.ones(pn.shape, dtype=bool)
            trial = x + neg_c * np.where(free, 0.0, (Qn @ x[..., None])[..., 0] + pn)
            new_state = (trial > hi).astype(np.int8) - (trial < lo).astype(np.int8)
            if (new_state == state).all() and np.isfinite(x).all():
                B = pn.shape[0]
                as_t = lambda a: torch.from_numpy(a)  # noqa: E731
                return as_t(state < 0), as_t(state > 0), as_t(x), torch.ones(B, dtype=torch.bool), torch.full((B,), it)
            state = new_state
    except np.linalg.LinAlgError:
        pass
    return box_active_set(Q, p, lower, upper, max_iter)
