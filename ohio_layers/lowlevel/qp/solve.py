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

0. *On CPU (float32/float64), with numba installed*, every member first goes through a compiled
   Goldfarb-Idnani dual active-set method (:mod:`.dual_active_set`): exact, a few to tens of
   microseconds a member, certified by the same KKT check. Up to ``SMALL_BATCH_LOOP`` members
   it is entered without any torch op (numpy validation; any doubt falls through). Only the
   members it does not solve (singular ``Q``, infeasible or unbounded, too many steps) take the
   batched torch path below, which is also the path on GPU.

1. *Find the active set, without gradients, in float64.*
   Box constraints only: a batched primal-dual active-set method (Hintermueller, Ito & Kunisch
   2002), usually exact after 2-5 masked linear solves. Members where it does not converge
   (cycling, a singular reduced Hessian) and every problem with general constraints go to a
   batched Mehrotra primal-dual interior-point method, followed by primal-dual active-set
   polishing started from the interior-point active set (each KKT solve regularised and
   iteratively refined, so duplicated rows, weakly active rows and vertices with more than
   ``n`` active rows stay exact; a member is accepted by the KKT check, not by a repeated set).
2. *Solve the KKT system of the active constraints, differentiably, in the caller's dtype.*
   With the active set held fixed the solution is the solution of one linear (KKT) system, so
   autograd through that one solve *is* implicit differentiation of the KKT conditions: exact
   (no unrolled iterations), valid wherever strict complementarity holds (almost everywhere).

Without numba, small CPU box problems (at most ``SMALL_BATCH_LOOP`` members, positive definite
``Q``) skip the torch machinery: the active-set search of step 1 runs member by member with
LAPACK Cholesky solves in float64 numpy, and the backward pass reuses the factor of each final
reduced Hessian. Anything else -- including every invalid argument, so the error messages are
those of the general path -- takes the path above.

Every member carries a status (:class:`QPStatus`), each backed by a check (:mod:`.certify`):
``OPTIMAL`` (KKT residual ``<= tol`` at the returned point), ``INFEASIBLE``, ``UNBOUNDED``,
``NONCONVEX`` (``check_psd=False`` only) or ``MAX_ITER``. A member's status and ``x`` do not
depend on the batch it is solved in (up to round-off in ``x``). A member that is not
``OPTIMAL`` never fails the rest of the batch: its ``x`` is the solver's last iterate (non-finite
entries set to 0), detached (zero gradient), and must not be used as a solution — check
``solution.ok``.

``backend="piqp"`` and ``backend="proxqp"`` use those dense solvers for the first phase (instead
of the interior point) under the same polish, certificate and implicit backward;
``backend="qpth"`` and ``backend="cvxpylayers"`` run the same problem through those libraries
end to end (optional extras, for cross-checking); see :mod:`ohio_layers.lowlevel.qp.backends`.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .box import SMALL_BATCH, box_active_set, box_active_set_small
from .interior import interior_point, kkt_active_set
from .kkt import BoxKKT, GeneralKKT
from .certify import box_certificate, classify_unsolved, empty_box, kkt_residual, nonconvex_members
from .problem import (BACKENDS, ArrayLike, QPProblem, QPSolution, QPStatus, _finite_or_zero, _sym, bound_rows, make_problem,
                      split_row_duals)
from .small import _solve_box_small
from .active_set_kernels import available as compiled_available
from .dual_active_set import solve_compiled, solve_lean


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
            mean unbounded. A member with ``lower > upper``, ``lower = +inf`` or ``upper = -inf``
            is flagged ``INFEASIBLE`` (the rest of the batch is solved).
        G, h: ``(B, m, n)``/``(m, n)`` and ``(B, m)``/``(m,)`` inequalities ``G x <= h``.
        A, b: ``(B, me, n)``/``(me, n)`` and ``(B, me)``/``(me,)`` equalities (``A`` of full
            row rank).
        backend: ``"native"`` (this module); ``"piqp"`` or ``"proxqp"`` (their dense solvers for the
            forward pass, then this module's polish, certificate and implicit backward; extra
            ``qpbench``); ``"qpth"`` or ``"cvxpylayers"`` (those layers end to end).
        tol: a member is ``OPTIMAL`` only if the relative KKT residual
            (:func:`~.certify.kkt_residual`, float64) at the returned ``x`` and multipliers is
            ``<= tol``; also the interior-point stopping tolerance.
        max_iter: iteration limit of the interior-point method (the active-set phases use
            ``2 n + 10``).
        check_psd: raise if the symmetric part of ``Q`` has a clearly negative eigenvalue; with
            ``False`` such members are flagged ``NONCONVEX`` instead.

    Returns:
        :class:`QPSolution` with ``x (B, n)``, ``status (B,)``, ``iterations (B,)``, the
        multipliers and ``kkt_residual (B,)``.
    """
    if backend == "native":  # None: not a small, valid CPU problem every member of which the fast paths solved
        fast = solve_lean(Q, p, lower, upper, G, h, A, b, tol)
        if fast is None and not compiled_available() and G is None and h is None and A is None and b is None:
            fast = _solve_box_small(Q, p, lower, upper, tol)  # without numba (with it, the route must not depend on the batch)
        if fast is not None:
            return fast
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    problem = make_problem(Q, p, lower, upper, G, h, A, b)
    if backend == "native":
        fast = solve_compiled(problem, tol)  # None: not a CPU float problem, or numba is missing
        if fast is not None:
            sol, solved = fast
            if bool(solved.all()):
                return sol
            rest = (~solved).nonzero().flatten()  # only these members pay for the batched torch path
            return _merge(sol, rest, _solve_validated(problem.index(rest), backend, tol, max_iter, check_psd, rest))
    return _solve_validated(problem, backend, tol, max_iter, check_psd)


def _solve_validated(problem: QPProblem, backend: str, tol: float, max_iter: int, check_psd: bool,
                     members: Optional[Tensor] = None) -> QPSolution:
    """The batched torch path (or a third-party backend) on a validated problem; ``members`` maps
    its batch to the caller's for error messages."""
    P64 = problem.detached64()
    P64.Q = _sym(P64.Q)
    nonconvex, smallest = nonconvex_members(P64.Q)
    if check_psd and bool(nonconvex.any()):
        bad = nonconvex.nonzero().flatten()
        named = bad if members is None else members[bad]
        raise ValueError(f"Q must be positive semidefinite; batch members {named.tolist()} have smallest eigenvalues "
                         f"{smallest[bad].tolist()} (pass check_psd=False to flag them NONCONVEX instead)")
    empty = empty_box(P64)
    if bool(empty.any()):  # solve the rest; these members get a harmless box and are flagged below
        problem, P64 = _defuse_empty(problem, empty), _defuse_empty(P64, empty)
    if backend in ("piqp", "proxqp"):  # their forward, our polish, certificate and backward
        sol = _solve_general(problem, P64, tol, max_iter, start=backend)
        return _finalise(sol, P64, empty, nonconvex)
    if backend != "native":
        from . import backends as qp_backends

        sol = qp_backends.solve(problem, backend, tol=tol, max_iter=max_iter)
        sol.status = torch.where(empty, int(QPStatus.INFEASIBLE), sol.status)
        return sol
    sol = _solve_native(problem, P64, tol, max_iter)
    return _finalise(sol, P64, empty, nonconvex)


def _merge(sol: QPSolution, rest: Tensor, part: QPSolution, add_iterations: bool = False) -> QPSolution:
    """``sol`` with the members ``rest`` replaced by ``part`` (``x`` differentiably)."""
    return QPSolution(
        sol.x.index_put((rest,), part.x), sol.status.index_put((rest,), part.status),
        sol.iterations.index_put((rest,), part.iterations, accumulate=add_iterations),
        *(getattr(sol, k).index_put((rest,), getattr(part, k)) for k in _DUALS),
        sol.kkt_residual.index_put((rest,), part.kkt_residual))


def _defuse_empty(prob: QPProblem, empty: Tensor) -> QPProblem:
    """``prob`` with the bounds of ``empty`` members replaced by ``[0, 0]`` (they are reported INFEASIBLE)."""
    zero = torch.zeros((), dtype=prob.p.dtype, device=prob.p.device)
    lower = torch.where(empty[:, None], zero, prob.lower)
    upper = torch.where(empty[:, None], zero, prob.upper)
    return QPProblem(prob.Q, prob.p, lower, upper, prob.G, prob.h, prob.A, prob.b)


def _finalise(sol: QPSolution, P64: QPProblem, empty: Tensor, nonconvex: Tensor) -> QPSolution:
    """Per-member overrides: empty boxes are INFEASIBLE, non-PSD ``Q`` NONCONVEX, and members no
    solver finished are classified (INFEASIBLE / UNBOUNDED / MAX_ITER, :func:`classify_unsolved`)."""
    status = sol.status
    if bool(nonconvex.any()):
        status = torch.where(nonconvex, int(QPStatus.NONCONVEX), status)
    if bool(empty.any()):
        status = torch.where(empty, int(QPStatus.INFEASIBLE), status)
        sol.kkt_residual = torch.where(empty, float("inf"), sol.kkt_residual)
        sol.x = torch.where(empty[:, None], 0.0, sol.x)
        for k in _DUALS:
            setattr(sol, k, torch.where(empty[:, None], 0.0, getattr(sol, k)))
    unsolved = (status == QPStatus.MAX_ITER).nonzero().flatten()
    if unsolved.numel():
        status = status.index_put((unsolved,), classify_unsolved(P64.index(unsolved)))
    sol.status = status
    ok = status == QPStatus.OPTIMAL
    if not bool(ok.all()):
        sol.x = torch.where(ok[:, None], sol.x, sol.x.detach())
    return sol


# ---------------------------------------------------------------------------------- native
def _solve_native(prob: QPProblem, P64: QPProblem, tol: float, max_iter: int) -> QPSolution:
    """Box problems: active-set search, interior point for the members it cannot finish or certify."""
    if not prob.box_only:
        return _solve_general(prob, P64, tol, max_iter)
    n, dtype = prob.n, prob.p.dtype
    search = box_active_set_small if prob.batch <= SMALL_BATCH and P64.p.device.type == "cpu" else box_active_set
    act_lo, act_hi, x64, done, iterations = search(P64.Q, P64.p, P64.lower, P64.upper, 2 * n + 10)
    x64 = torch.where(done[:, None], x64, 0.0)  # unfinished members are replaced below
    residual, duals = box_certificate(P64, x64, act_lo, act_hi)
    done = done & (residual <= tol)
    status = torch.where(done, int(QPStatus.OPTIMAL), int(QPStatus.MAX_ITER))
    x = BoxKKT.apply(prob.Q, prob.p, prob.lower, prob.upper, x64.to(dtype), P64.Q, act_lo, act_hi)
    sol = QPSolution(x, status, iterations, *(d.to(dtype) for d in duals), residual)
    if bool(done.all()):
        return sol
    rest = (~done).nonzero().flatten()
    return _merge(sol, rest, _solve_general(prob.index(rest), P64.index(rest), tol, max_iter), add_iterations=True)


_DUALS = ("lower_dual", "upper_dual", "ineq_dual", "eq_dual")


def _solve_general(prob: QPProblem, P64: QPProblem, tol: float, max_iter: int, start: str = "native") -> QPSolution:
    """Interior point + active-set polish on all constraints (bounds become rows of G).

    ``start`` names the solver of the first phase (``"native"``: :func:`interior_point`; ``"piqp"`` or
    ``"proxqp"``: :func:`~.backends.external_start`). Members whose polished active set passes the
    KKT check get the exact active-set solution;
    members where only the interior point passes it keep its (tolerance-accurate) value and the
    gradient of the KKT system of its active set; the others keep their last iterate, detached.
    """
    dtype = prob.p.dtype
    G, h = bound_rows(prob)
    G64, h64 = G.detach().to(torch.float64), h.detach().to(torch.float64)
    if start == "native":
        ipm = interior_point(P64.Q, P64.p, G64, h64, P64.A, P64.b, tol, max_iter)
    else:  # PIQP / ProxQP in place of the interior point
        from .backends import external_start

        ipm = external_start(P64, G64, h64, start, tol, max_iter)

    def residual(x: Tensor, lam: Tensor) -> Tensor:
        return kkt_residual(P64, x, split_row_duals(P64, lam))

    active, x, lam, exact, its, res = kkt_active_set(P64.Q, P64.p, G64, h64, P64.A, P64.b, ipm.z > ipm.s, tol,
                                                     2 * prob.n + 10, residual)
    lam_ipm = torch.cat([ipm.z, ipm.y], 1)
    res_ipm = res if bool(exact.all()) else residual(ipm.x, lam_ipm)  # the fallback is only needed when the polish failed
    by_ipm = ~exact & (res_ipm <= tol)
    optimal = exact | by_ipm
    status = torch.where(optimal, int(QPStatus.OPTIMAL),
                         torch.where(ipm.status == QPStatus.INFEASIBLE, int(QPStatus.INFEASIBLE), int(QPStatus.MAX_ITER)))
    x = _finite_or_zero(torch.where(exact[:, None], x, ipm.x))
    duals = _finite_or_zero(torch.where(exact[:, None], lam, lam_ipm))
    lam_kkt = torch.where(exact[:, None], duals, torch.cat([ipm.z * active, ipm.y], 1))
    x_out = GeneralKKT.apply(prob.Q, prob.p, G, h, prob.A, prob.b, x.to(dtype), _finite_or_zero(lam_kkt).to(dtype), active)
    if not bool(optimal.all()):  # failed members: the last iterate, no gradient
        x_out = torch.where(optimal[:, None], x_out, x_out.detach())
    return QPSolution(x_out, status, ipm.iterations + its, *(d.to(dtype) for d in split_row_duals(P64, duals)),
                      torch.where(exact, res, res_ipm))
