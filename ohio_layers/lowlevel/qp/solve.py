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
(optional extras, for cross-checking); see :mod:`ohio_layers.lowlevel.qp.backends`.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .box import SMALL_BATCH, box_active_set, box_active_set_small
from .interior import interior_point, kkt_active_set
from .kkt import BoxKKT, GeneralKKT
from .problem import BACKENDS, ArrayLike, QPProblem, QPSolution, QPStatus, _check_psd, _finite_or_zero, _sym, bound_rows, make_problem
from .small import _solve_box_small


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
        from . import backends as qp_backends

        return qp_backends.solve(problem, backend, tol=tol, max_iter=max_iter)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")



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
