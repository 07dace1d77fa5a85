"""A batched, exact, differentiable quadratic-programming layer.

Solves, for every member of a batch::

    minimise    0.5 x'Qx + p'x
    subject to  lower <= x <= upper,   G x <= h,   A x = b

with ``x`` of size ``n``. Every argument is either batched (leading dimension ``B``) or shared by
the whole batch (no leading dimension); the solution is always ``(B, n)``, with ``B = 1`` when
no argument is batched. Gradients of shared arguments are *summed* over the batch (ordinary
autograd broadcasting semantics), never averaged. ``Q`` is used through its symmetric part
``(Q + Q') / 2`` and must be positive semidefinite.

How it works (``backend="native"``, the default):

1. *Find the active set, without gradients, in float64.*
   Box constraints only: a batched primal-dual active-set method (Hintermueller, Ito & Kunisch
   2002), usually exact after 2-5 masked linear solves. Members where it does not converge
   (cycling, a singular reduced Hessian) and every problem with general constraints go to a
   batched Mehrotra primal-dual interior-point method, followed by primal-dual active-set
   polishing started from the interior-point active set.
2. *Solve the KKT system of the active constraints, differentiably, in the caller's dtype.*
   With the active set held fixed the solution is the solution of one linear (KKT) system, so
   autograd through that one solve *is* implicit differentiation of the KKT conditions: exact
   (no unrolled iterations), valid wherever strict complementarity holds (almost everywhere).

Small CPU box problems (at most ``SMALL_BATCH_LOOP`` members, positive definite ``Q``, float32 or
float64) skip the torch machinery: the same active-set search runs member by member with LAPACK
Cholesky solves in float64 numpy (the first factorisation doubles as the positive-definiteness
check), and the backward pass reuses the factor of each final reduced Hessian. Anything else --
including every invalid argument, so the error messages are those of the general path -- takes
the path above.

Every member carries a status (:class:`QPStatus`): ``OPTIMAL``, ``INFEASIBLE`` (a Farkas
certificate was found: no ``x`` satisfies the constraints) or ``MAX_ITER``. A member that is not
``OPTIMAL`` never fails the rest of the batch: its ``x`` is the solver's last iterate (non-finite
entries set to 0), detached (zero gradient), and must not be used as a solution — check
``solution.ok``.

``backend="qpth"`` and ``backend="cvxpylayers"`` run the same problem through those libraries
(optional extras, for cross-checking); see :mod:`ohio_layers.lowlevel.qp_backends`.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.autograd import forward_ad
from torch.autograd.function import once_differentiable

from .._validate import check_tensor

ArrayLike = Union[Tensor, float, None]
BACKENDS = ("native", "qpth", "cvxpylayers")


class QPStatus(enum.IntEnum):
    """Per-member outcome of a QP solve."""

    OPTIMAL = 0
    INFEASIBLE = 1
    MAX_ITER = 2


@dataclass
class QPSolution:
    """Result of :func:`solve_qp`.

    Attributes:
        x: ``(B, n)`` solutions (differentiable for ``OPTIMAL`` members; the last iterate,
            detached, for the others).
        status: ``(B,)`` int64 codes of :class:`QPStatus`.
        iterations: ``(B,)`` int64 iterations used (active-set plus interior-point).
    """

    x: Tensor
    status: Tensor
    iterations: Tensor

    @property
    def ok(self) -> Tensor:
        """``(B,)`` bool, the member was solved to optimality."""
        return self.status == QPStatus.OPTIMAL


@dataclass
class QPProblem:
    """A validated QP with every argument expanded to the batch (caller's dtype, autograd intact).

    ``lower``/``upper`` are ``(B, n)`` with ``-inf``/``inf`` for absent bounds; ``G``/``h`` and
    ``A``/``b`` have zero rows when absent.
    """

    Q: Tensor
    p: Tensor
    lower: Tensor
    upper: Tensor
    G: Tensor
    h: Tensor
    A: Tensor
    b: Tensor

    @property
    def batch(self) -> int:
        return self.p.shape[0]

    @property
    def n(self) -> int:
        return self.p.shape[1]

    @property
    def box_only(self) -> bool:
        return self.G.shape[1] == 0 and self.A.shape[1] == 0

    def detached64(self) -> "QPProblem":
        return QPProblem(*(t.detach().to(torch.float64) for t in self._tensors()))

    def index(self, idx: Tensor) -> "QPProblem":
        return QPProblem(*(t[idx] for t in self._tensors()))

    def _tensors(self) -> Tuple[Tensor, ...]:
        return (self.Q, self.p, self.lower, self.upper, self.G, self.h, self.A, self.b)


# ---------------------------------------------------------------------------------- public API
def solve_qp(
    Q: Tensor,
    p: Tensor,
    lower: ArrayLike = None,
    upper: ArrayLike = None,
    G: Optional[Tensor] = None,
    h: Optional[Tensor] = None,
    A: Optional[Tensor] = None,
    b: Optional[Tensor] = None,
    *,
    backend: str = "native",
    tol: float = 1e-9,
    max_iter: int = 50,
    check_psd: bool = True,
) -> QPSolution:
    """Solve a batch of convex QPs ``min 0.5 x'Qx + p'x`` s.t. bounds, ``Gx <= h``, ``Ax = b``.

    Args:
        Q: ``(B, n, n)`` or ``(n, n)`` positive semidefinite (symmetrised internally).
        p: ``(B, n)`` or ``(n,)``.
        lower, upper: ``(B, n)``, ``(n,)`` or a scalar; ``-inf``/``inf`` entries (or ``None``)
            mean unbounded. ``lower > upper`` raises.
        G, h: ``(B, m, n)``/``(m, n)`` and ``(B, m)``/``(m,)`` inequalities ``G x <= h``.
        A, b: ``(B, me, n)``/``(me, n)`` and ``(B, me)``/``(me,)`` equalities (``A`` of full
            row rank).
        backend: ``"native"`` (this module), ``"qpth"`` or ``"cvxpylayers"``.
        tol: relative tolerance of the interior-point stopping test and of the optimality
            verification (float64 internally; the final solve is exact for the active set).
        max_iter: iteration limit of the interior-point method (the active-set phases use
            ``2 n + 10``).
        check_psd: raise if the symmetric part of ``Q`` has a clearly negative eigenvalue.

    Returns:
        :class:`QPSolution` with ``x (B, n)``, ``status (B,)``, ``iterations (B,)``.
    """
    if backend == "native" and G is None and h is None and A is None and b is None:
        fast = _solve_box_small(Q, p, lower, upper)  # None: not a small, valid, positive definite CPU box QP
        if fast is not None:
            return fast
    problem = make_problem(Q, p, lower, upper, G, h, A, b)
    P64 = problem.detached64()
    P64.Q = _sym(P64.Q)
    if check_psd:
        _check_psd(P64.Q)
    if backend == "native":
        return _solve_native(problem, P64, tol, max_iter)
    if backend in ("qpth", "cvxpylayers"):
        from . import qp_backends

        return qp_backends.solve(problem, backend, tol=tol, max_iter=max_iter)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def make_problem(
    Q: Tensor,
    p: Tensor,
    lower: ArrayLike = None,
    upper: ArrayLike = None,
    G: Optional[Tensor] = None,
    h: Optional[Tensor] = None,
    A: Optional[Tensor] = None,
    b: Optional[Tensor] = None,
) -> QPProblem:
    """Validate the arguments of :func:`solve_qp` and expand them to a :class:`QPProblem`."""
    if not isinstance(p, Tensor):
        raise TypeError(f"p must be a torch.Tensor of shape (B, n) or (n,), got {type(p).__name__}")
    if p.dim() not in (1, 2):
        raise ValueError(f"p must have shape (B, n) or (n,), got {tuple(p.shape)}")
    n = p.shape[-1]
    dtype, device = p.dtype, p.device
    if not p.is_floating_point():
        raise TypeError(f"p must be a floating-point tensor, got {p.dtype}")
    for name, pair in (("G", (G, h)), ("A", (A, b))):
        if (pair[0] is None) != (pair[1] is None):
            other = "h" if name == "G" else "b"
            raise ValueError(f"{name} and {other} must be given together")
    m = 0 if G is None else _rows("G", G, n)
    me = 0 if A is None else _rows("A", A, n)
    args = {
        "Q": (Q, (n, n)), "p": (p, (n,)), "lower": (lower, (n,)), "upper": (upper, (n,)),
        "G": (G, (m, n)), "h": (h, (m,)), "A": (A, (me, n)), "b": (b, (me,)),
    }
    checked, sizes = {}, {}
    for name, (value, tail) in args.items():
        if value is None:
            continue
        if name in ("lower", "upper") and not isinstance(value, Tensor):
            value = torch.as_tensor(value, dtype=dtype, device=device)
        if name in ("lower", "upper") and value.dim() == 0:
            value = value.expand(n)
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        batched = value.dim() == len(tail) + 1
        shape = (("B",) if batched else ()) + tail
        check_tensor(name, value, shape, finite=False)
        if value.dtype != dtype or value.device != device:
            raise TypeError(f"{name} must have the dtype and device of p ({dtype}, {device}), got {value.dtype}, {value.device}")
        checked[name] = value
        if batched:
            sizes[name] = value.shape[0]
    if len(set(sizes.values())) > 1:
        raise ValueError(f"batched arguments must share the batch size, got {sizes}")
    _check_values(checked)
    B = next(iter(sizes.values())) if sizes else 1

    def expand(name: str, fill: Optional[float], tail: Tuple[int, ...]) -> Tensor:
        t = checked.get(name)
        if t is None:
            t = torch.full(tail, fill if fill is not None else 0.0, dtype=dtype, device=device)
        return t.expand(B, *tail) if t.dim() == len(tail) else t

    inf = float("inf")
    prob = QPProblem(
        Q=expand("Q", None, (n, n)), p=expand("p", None, (n,)),
        lower=expand("lower", -inf, (n,)), upper=expand("upper", inf, (n,)),
        G=expand("G", None, (m, n)), h=expand("h", None, (m,)),
        A=expand("A", None, (me, n)), b=expand("b", None, (me,)),
    )
    bad = (prob.lower > prob.upper).any(-1)
    if bool(bad.any()):
        raise ValueError(f"lower must be <= upper (empty box) in batch members {bad.nonzero().flatten().tolist()}")
    return prob


def _check_values(args: dict) -> None:
    """No NaN anywhere, no inf except in the bounds; one test for the common (valid) case."""
    finite = [v for k, v in args.items() if k not in ("lower", "upper")]
    bounds = [v for k, v in args.items() if k in ("lower", "upper")]
    ok = torch.stack([torch.isfinite(v).all() for v in finite] + [~torch.isnan(v).any() for v in bounds]).all()
    if bool(ok):
        return
    for name, v in args.items():
        if name in ("lower", "upper") and bool(torch.isnan(v).any()):
            raise ValueError(f"{name} contains NaN")
        if name not in ("lower", "upper") and not bool(torch.isfinite(v).all()):
            raise ValueError(f"{name} contains NaN or inf")


def _rows(name: str, M: Tensor, n: int) -> int:
    if not isinstance(M, Tensor) or M.dim() not in (2, 3) or M.shape[-1] != n:
        shape = tuple(M.shape) if isinstance(M, Tensor) else type(M).__name__
        raise ValueError(f"{name} must have shape (B, rows, {n}) or (rows, {n}), got {shape}")
    return M.shape[-2]


def _check_psd(Q64: Tensor) -> None:
    """Raise if a symmetric float64 ``Q64 (B, n, n)`` has a clearly negative eigenvalue."""
    _, info = torch.linalg.cholesky_ex(Q64)
    if not bool((info != 0).any()):
        return
    suspect = (info != 0).nonzero().flatten()
    eig = torch.linalg.eigvalsh(Q64[suspect])
    neg = eig[:, 0] < -1e-8 * eig.abs().amax(-1).clamp_min(1.0)
    if bool(neg.any()):
        raise ValueError(
            f"Q must be positive semidefinite; batch members {suspect[neg].tolist()} have "
            f"smallest eigenvalues {eig[neg, 0].tolist()}"
        )


def _sym(Q: Tensor) -> Tensor:
    return 0.5 * (Q + Q.transpose(-1, -2))


def _mv(M: Tensor, v: Tensor) -> Tensor:
    """Batched matrix-vector product ``(B, r, c) x (B, c) -> (B, r)``."""
    return (M @ v.unsqueeze(-1)).squeeze(-1)


# ---------------------------------------------------------------------------------- native
def _solve_native(prob: QPProblem, P64: QPProblem, tol: float, max_iter: int) -> QPSolution:
    """Box problems: active-set search, interior point for the members it cannot finish."""
    if not prob.box_only:
        return _solve_general(prob, P64, tol, max_iter)
    n = prob.n
    search = box_active_set_small if prob.batch <= SMALL_BATCH and P64.p.device.type == "cpu" else box_active_set
    act_lo, act_hi, x64, done, iterations = search(P64.Q, P64.p, P64.lower, P64.upper, 2 * n + 10)
    status = torch.where(done, int(QPStatus.OPTIMAL), int(QPStatus.MAX_ITER))
    x64 = torch.where(done[:, None], x64, 0.0)  # unfinished members are replaced below
    x = BoxKKT.apply(prob.Q, prob.p, prob.lower, prob.upper, x64.to(prob.p.dtype), P64.Q, act_lo, act_hi)
    if bool(done.all()):
        return QPSolution(x, status, iterations)
    rest = (~done).nonzero().flatten()
    sol = _solve_general(prob.index(rest), P64.index(rest), tol, max_iter)
    return QPSolution(x.index_put((rest,), sol.x), status.index_put((rest,), sol.status),
                      iterations.index_put((rest,), sol.iterations, accumulate=True))


def _solve_general(prob: QPProblem, P64: QPProblem, tol: float, max_iter: int) -> QPSolution:
    """Interior point + active-set polish on all constraints (bounds become rows of G).

    Members whose polished active set is verified get the exact active-set solution; members
    where only the interior point converged keep its (tolerance-accurate) value and the gradient
    of the KKT system of its active set; the others keep their last iterate, detached.
    """
    G, h = bound_rows(prob)
    G64, h64 = G.detach().to(torch.float64), h.detach().to(torch.float64)
    ipm = interior_point(P64.Q, P64.p, G64, h64, P64.A, P64.b, tol, max_iter)
    active, x, lam, exact, its = kkt_active_set(P64.Q, P64.p, G64, h64, P64.A, P64.b, ipm.z > ipm.s, tol, 2 * prob.n + 10)
    status = torch.where(exact, int(QPStatus.OPTIMAL), ipm.status)
    optimal = status == QPStatus.OPTIMAL
    x = _finite_or_zero(torch.where(exact[:, None], x, ipm.x))
    lam = _finite_or_zero(torch.where(exact[:, None], lam, torch.cat([ipm.z * active, ipm.y], 1)))
    x_out = GeneralKKT.apply(prob.Q, prob.p, G, h, prob.A, prob.b, x.to(prob.p.dtype), lam.to(prob.p.dtype), active)
    if not bool(optimal.all()):  # failed members: the last iterate, no gradient
        x_out = torch.where(optimal[:, None], x_out, x_out.detach())
    return QPSolution(x_out, status, ipm.iterations + its)


def _finite_or_zero(t: Tensor) -> Tensor:
    return torch.where(torch.isfinite(t), t, 0.0)


def bound_rows(prob: QPProblem) -> Tuple[Tensor, Tensor]:
    """``(G (B, m', n), h (B, m'))``: ``G x <= h`` with the finite bounds appended as rows.

    Columns that are unbounded in every member are dropped; an infinite bound of a kept column
    becomes the trivial row ``0 x <= 1``.
    """
    n, dtype, device = prob.n, prob.p.dtype, prob.p.device
    eye = torch.eye(n, dtype=dtype, device=device)
    Gs, hs = [prob.G], [prob.h]
    for sign, bound in ((1.0, prob.upper), (-1.0, prob.lower)):
        finite = torch.isfinite(bound)
        cols = finite.any(0).nonzero().flatten()
        if cols.numel() == 0:
            continue
        f = finite[:, cols]
        rows = sign * eye[cols].expand(prob.batch, -1, -1) * f[..., None].to(dtype)
        Gs.append(rows)
        hs.append(torch.where(f, sign * bound[:, cols], torch.ones((), dtype=dtype, device=device)))
    return torch.cat(Gs, 1), torch.cat(hs, 1)


# ---------------------------------------------------------------------------------- gradients
def _solve_or_zero(K: Tensor, rhs: Tensor) -> Tensor:
    """``K^{-1} rhs`` per member, zero for members whose ``K`` is singular."""
    w, info = torch.linalg.solve_ex(K, rhs)
    good = (info == 0)[:, None] & torch.isfinite(w).all(-1, keepdim=True)
    return torch.where(good, w, torch.zeros_like(w))


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
        w = _solve_or_zero(K, rhs)
        wx, wl = w[:, :n], w[:, n:]
        outer = lambda a, c: a.unsqueeze(-1) * c.unsqueeze(-2)  # noqa: E731
        grad_Q = -0.5 * (outer(wx, x) + outer(x, wx))
        grad_C = -(outer(lam, wx) + outer(wl, x))
        act = active.to(g.dtype)
        return (grad_Q, -wx, grad_C[:, :m] * act.unsqueeze(-1), wl[:, :m] * act, grad_C[:, m:], wl[:, m:],
                None, None, None)


# ---------------------------------------------------------------------------------- box path
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


# ---------------------------------------------------------------------------------- small CPU box path
SMALL_BATCH_LOOP = 24  # up to this batch a CPU box QP is solved member by member with LAPACK (below)
_NUMPY_DTYPES = {torch.float64: np.float64, torch.float32: np.float32}
_BIG = 1e300  # infinite bounds as huge finite ones (as in box_active_set)
_LAPACK: Optional[tuple] = None


def _lapack() -> tuple:
    """``(dposv, dpotrs)`` of scipy's LAPACK wrappers (a 7x7 call costs ~3 us, numpy's ~12 us)."""
    global _LAPACK
    if _LAPACK is None:
        from scipy.linalg import lapack

        _LAPACK = (lapack.dposv, lapack.dpotrs)
    return _LAPACK


def _solve_box_small(Q: object, p: object, lower: ArrayLike, upper: ArrayLike) -> Optional[QPSolution]:
    """The box QP of at most ``SMALL_BATCH_LOOP`` CPU problems with a positive definite ``Q``, in numpy.

    Returns ``None`` -- and :func:`solve_qp` takes the general route, which also produces the
    error messages -- unless every argument is valid (the same rules as :func:`make_problem`,
    checked with a few fused numpy tests), ``Q`` passes a Cholesky factorisation (which is
    the first solve of the search, so the positive-definiteness check is free) and the search
    converges. The factor of the final reduced Hessian is kept, so the backward pass is one
    triangular solve pair per member (:class:`_SmallBoxKKT`).
    """
    if not (isinstance(p, Tensor) and isinstance(Q, Tensor)):
        return None
    dtype, device = p.dtype, p.device
    np_dtype = _NUMPY_DTYPES.get(dtype)
    if np_dtype is None or device.type != "cpu" or Q.dtype != dtype or Q.device != device:
        return None
    if p.dim() not in (1, 2) or Q.dim() not in (2, 3):
        return None
    n = p.shape[-1]
    if n == 0 or Q.shape[-2:] != (n, n):
        return None
    tensors = [Q, p]
    sizes = [Q.shape[0]] if Q.dim() == 3 else []
    if p.dim() == 2:
        sizes.append(p.shape[0])
    bounds = []
    for value, fill in ((lower, -np.inf), (upper, np.inf)):
        if value is None:
            bounds.append(np.full(n, fill))
        elif isinstance(value, Tensor):
            if value.dtype != dtype or value.device != device or value.dim() > 2:
                return None
            if value.dim() and value.shape[-1] != n:
                return None
            if value.dim() == 2:
                sizes.append(value.shape[0])
            tensors.append(value)
            bounds.append(value)
        elif type(value) in (float, int):
            bounds.append(np.full(n, value, dtype=np_dtype))  # rounded to the dtype, as torch.as_tensor does
        else:
            return None
    B = sizes[0] if sizes else 1
    if not 1 <= B <= SMALL_BATCH_LOOP or any(s != B for s in sizes):
        return None
    for t in tensors:  # forward-mode AD: let the general path raise, as it always did
        if forward_ad.unpack_dual(t).tangent is not None:
            return None
    try:  # tensors under torch.func transforms have no storage: the general path handles them
        Qn, pn, lo, hi = (_as_numpy(v) if isinstance(v, Tensor) else v for v in (Q, p, *bounds))
    except RuntimeError:
        return None
    Qs = Qn + Qn.swapaxes(-1, -2)
    Qs *= 0.5
    if np_dtype is np.float32:
        Qs, pn = Qs.astype(np.float64), pn.astype(np.float64)
    # one test for NaN/inf in Q and p; NaN in a bound, lower > upper, lower = inf or upper = -inf
    # all make (lo <= hi) fail after the clamping
    lo, hi = np.maximum(lo, -_BIG, dtype=np.float64), np.minimum(hi, _BIG, dtype=np.float64)
    if not (math.isfinite(Qs.sum() + pn.sum()) and (lo <= hi).all()):
        return None
    lo, hi = (np.full(n, v) if v.ndim == 0 else v for v in (lo, hi))  # 0-dim tensor bounds
    X = np.empty((B, n))
    up, dn = np.empty((B, n), dtype=bool), np.empty((B, n), dtype=bool)
    factors, iterations = [], []
    max_iter = 2 * n + 10
    for i in range(B):
        found = _box_search_one(Qs if Qs.ndim == 2 else Qs[i], pn if pn.ndim == 1 else pn[i],
                                lo if lo.ndim == 1 else lo[i], hi if hi.ndim == 1 else hi[i], max_iter)
        if found is None:  # not positive definite, or no convergence: the general path decides
            return None
        X[i], dn[i], up[i], factor, it = found
        factors.append(factor)
        iterations.append(it)
    x = torch.from_numpy(X.astype(np_dtype))  # a copy: X stays intact for the backward pass
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        x = _SmallBoxKKT.apply(Q, p, lower, upper, (x, Qs, X, dn, up, factors))
    return QPSolution(x, torch.zeros(B, dtype=torch.int64), torch.tensor(iterations, dtype=torch.int64))


def _as_numpy(t: Tensor) -> np.ndarray:
    return (t.detach() if t.requires_grad else t).numpy()


def _box_search_one(Q: np.ndarray, p: np.ndarray, lo: np.ndarray, hi: np.ndarray, max_iter: int) -> Optional[tuple]:
    """:func:`box_active_set` for one problem with a positive definite ``Q`` (numpy, LAPACK).

    ``lo``/``hi`` are clamped to ``+-1e300``. Every reduced system ``M`` (``Q`` on the free
    entries, the identity on the active ones) is positive definite, so each step is one
    Cholesky solve. Returns ``(x, act_lo, act_hi, factor of M, iterations)``, or ``None`` if
    ``Q`` is not positive definite or the search did not converge.
    """
    dposv, _ = _lapack()
    neg_p = -p
    factor, x, info = dposv(Q, neg_p)  # nothing active yet: the unconstrained minimiser
    if info != 0:  # Q is not positive definite
        return None
    n = p.shape[0]
    eye, neg_c = _eye(n), -1.0 / Q.diagonal()
    act_up = act_dn = np.zeros(n, dtype=bool)
    key = (act_up.tobytes(), act_dn.tobytes())
    trial = x
    for it in range(1, max_iter + 1):
        if it > 1:
            free = ~(act_up | act_dn)
            fixed = np.where(act_up, hi, np.where(act_dn, lo, 0.0))
            factor, x, info = dposv(np.where(free[:, None] & free, Q, eye), np.where(free, neg_p - Q.dot(fixed), fixed))
            if info != 0:
                return None
            trial = np.where(free, x, x + neg_c * (Q.dot(x) + p))
        new_up, new_dn = trial > hi, trial < lo
        new_key = (new_up.tobytes(), new_dn.tobytes())
        if new_key == key:  # the active set repeats: KKT conditions hold
            return (x, act_dn, act_up, factor, it) if np.isfinite(x).all() else None
        act_up, act_dn, key = new_up, new_dn, new_key
    return None


@lru_cache(maxsize=None)
def _eye(n: int) -> np.ndarray:
    eye = np.eye(n)
    eye.flags.writeable = False
    return eye


class _SmallBoxKKT(torch.autograd.Function):
    """:class:`BoxKKT` for the small CPU path: the backward works in numpy on the saved factors.

    ``data = (x, Qs, X, act_lo, act_hi, factors)``: the output tensor, the symmetric float64
    ``Q`` (``(n, n)`` or ``(B, n, n)``), the float64 solutions, the active sets and the Cholesky
    factor of each member's reduced Hessian. Gradients of unbatched arguments are summed over
    the batch here.
    """

    @staticmethod
    def forward(ctx, Q: Tensor, p: Tensor, lower: ArrayLike, upper: ArrayLike, data: tuple) -> Tensor:  # type: ignore[override]
        ctx.data = data[1:]
        ctx.shapes = tuple(t.shape if isinstance(t, Tensor) else None for t in (Q, p, lower, upper))
        ctx.dtype = p.dtype
        return data[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):  # type: ignore[override]
        Qs, X, act_lo, act_hi, factors = ctx.data
        _, dpotrs = _lapack()
        G = g.detach().numpy()
        if G.dtype != np.float64:
            G = G.astype(np.float64)
        G_free = G * ~(act_lo | act_hi)
        if len(factors) == 1:  # u = M^{-1} g on the free entries, 0 on the active ones
            U = dpotrs(factors[0], G_free[0])[0][None]
        else:
            U = np.stack([dpotrs(factor, gf)[0] for factor, gf in zip(factors, G_free)])
        need = ctx.needs_input_grad
        grads: list = [None] * 4
        if need[0]:
            outer = (-0.5 * U)[:, :, None] * X[:, None, :]
            grads[0] = outer + outer.swapaxes(1, 2)
        if need[1]:
            grads[1] = -U
        if need[2] or need[3]:
            r = G - (U @ Qs if Qs.ndim == 2 else (Qs @ U[:, :, None])[:, :, 0])  # Qs is symmetric
            if need[2]:
                grads[2] = np.where(act_lo, r, 0.0)
            if need[3]:
                grads[3] = np.where(act_hi, r, 0.0)
        out = []
        for grad, shape in zip(grads, ctx.shapes):
            if grad is not None:
                extra = grad.ndim - len(shape)  # unbatched (shared) arguments: sum over the batch
                grad = torch.from_numpy(np.asarray(grad.sum(tuple(range(extra)))) if extra else grad)
                if grad.dtype != ctx.dtype:
                    grad = grad.to(ctx.dtype)
            out.append(grad)
        return (*out, None)


# ---------------------------------------------------------------------------------- general path
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


def kkt_active_set(
    Q: Tensor, p: Tensor, G: Tensor, h: Tensor, A: Tensor, b: Tensor, active: Tensor, tol: float, max_iter: int
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Primal-dual active-set polishing for general constraints (float64, no gradient).

    From an initial guess ``active (B, m)``: solve the masked KKT system, then mark row ``i``
    active iff ``mu_i + c_i (G_i x - h_i) > 0``; stop when the set repeats and verify primal
    feasibility and dual signs to ``tol``.

    Returns:
        ``(active (B, m), x (B, n), lam (B, m + me), exact (B,), iterations (B,))``; ``exact``
        marks members whose final active set satisfies the KKT conditions (``x``, ``lam`` are
        its solution and multipliers).
    """
    B, n = p.shape
    m = G.shape[1]
    iterations = torch.zeros(B, dtype=torch.int64, device=p.device)
    exact = torch.zeros(B, dtype=torch.bool, device=p.device)
    scale_c = 1.0 / (G.pow(2).sum(-1) + 1e-300)
    feas_scale = 1.0 + h.abs().amax(-1, keepdim=True) if m else None
    with torch.no_grad():
        for _ in range(max_iter):
            K = kkt_matrix(Q, G, A, active)
            rhs = torch.cat([-p, h * active.to(p.dtype), b], 1)
            sol, info = torch.linalg.solve_ex(K, rhs)
            x, mu = sol[:, :n], sol[:, n:n + m]
            healthy = (info == 0) & torch.isfinite(sol).all(-1)
            viol = (G @ x.unsqueeze(-1)).squeeze(-1) - h
            new_active = (mu + scale_c * viol) > 0
            same = (new_active == active).all(-1)
            iterations += (~exact).to(torch.int64)
            if m:
                feasible = (viol <= tol * feas_scale).all(-1) & (mu >= -tol * (1 + mu.abs().amax(-1, keepdim=True))).all(-1)
            else:
                feasible = torch.ones_like(same)
            exact = same & healthy & feasible
            active = torch.where(exact[:, None], active, new_active)
            if bool(exact.all()) or m == 0:
                break
    return active, sol[:, :n], sol[:, n:], exact, iterations


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
