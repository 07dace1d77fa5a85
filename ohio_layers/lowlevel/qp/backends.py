"""Third-party backends of :func:`ohio_layers.lowlevel.qp.solve_qp`, for cross-checking.

``"piqp"`` and ``"proxqp"`` (extra ``qpbench``) are forward solvers only: each member is solved by
PIQP's or ProxQP's dense solver (:func:`external_start`), and the result goes through the same
active-set polish, KKT certificate and implicit backward as the native interior point -- so the
statuses, duals and gradients mean what they mean for ``"native"``.

``"qpth"`` and ``"cvxpylayers"`` take a validated :class:`~ohio_layers.lowlevel.qp.problem.QPProblem` (every argument already
expanded to the batch, so shared-parameter gradients are summed, as in the native backend),
with the bounds turned into rows of ``G``.

* ``"qpth"`` -- qpth's batched primal-dual interior-point ``QPFunction`` (needs at least one
  inequality; ``Q`` must be positive definite).
* ``"cvxpylayers"`` -- a cvxpylayers layer over ``0.5 ||L'x||^2 + p'x`` with ``L = chol(Q)``
  (the DPP-compliant form of the objective).

Neither library reports a per-member status. Members whose returned point violates a
constraint by more than ``1e-6 (1 + |rhs|)`` are reported as ``MAX_ITER``, the others as
``OPTIMAL``; ``iterations`` is zero.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

import torch
from torch import Tensor

from ..._extras import require
from .interior import _IPMResult
from .problem import QPProblem, QPSolution, QPStatus, _mv, _sym, bound_rows


def solve(problem: QPProblem, backend: str, tol: float = 1e-12, max_iter: int = 50) -> QPSolution:
    """Solve ``problem`` with ``backend`` (``"qpth"`` or ``"cvxpylayers"``)."""
    G, h = bound_rows(problem)
    Q = _sym(problem.Q)
    if backend == "qpth":
        x = _qpth(Q, problem.p, G, h, problem.A, problem.b, tol, max_iter)
    elif backend == "cvxpylayers":
        x = _cvxpylayers(Q, problem.p, G, h, problem.A, problem.b)
    else:
        raise ValueError(f"backend must be 'qpth' or 'cvxpylayers', got {backend!r}")
    return QPSolution(x, _status_from_feasibility(x.detach(), G.detach(), h.detach(), problem.A.detach(), problem.b.detach()),
                      torch.zeros(problem.batch, dtype=torch.int64, device=x.device))


def _status_from_feasibility(x: Tensor, G: Tensor, h: Tensor, A: Tensor, b: Tensor) -> Tensor:
    viol = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    if G.shape[1]:
        viol = torch.maximum(viol, ((_mv(G, x) - h) / (1.0 + h.abs())).amax(-1))
    if A.shape[1]:
        viol = torch.maximum(viol, ((_mv(A, x) - b).abs() / (1.0 + b.abs())).amax(-1))
    return torch.where(viol <= 1e-6, int(QPStatus.OPTIMAL), int(QPStatus.MAX_ITER))


def _qpth(Q: Tensor, p: Tensor, G: Tensor, h: Tensor, A: Tensor, b: Tensor, tol: float, max_iter: int) -> Tensor:
    qpth_qp = require("qpth.qp")
    if G.shape[1] == 0:
        raise ValueError("the qpth backend needs at least one inequality or bound")
    empty = torch.empty(0, dtype=p.dtype, device=p.device)
    has_eq = A.shape[1] > 0
    fn = qpth_qp.QPFunction(verbose=-1, eps=min(tol, 1e-12), maxIter=max(max_iter, 20))
    return fn(Q, p, G, h, A if has_eq else empty, b if has_eq else empty)


@lru_cache(maxsize=16)
def _cvxpy_layer(n: int, m: int, me: int) -> Any:
    cp = require("cvxpy")
    layers = require("cvxpylayers.torch")
    x = cp.Variable(n)
    L, p = cp.Parameter((n, n)), cp.Parameter(n)
    params, constraints = [L, p], []
    if m:
        G, h = cp.Parameter((m, n)), cp.Parameter(m)
        params += [G, h]
        constraints.append(G @ x <= h)
    if me:
        A, b = cp.Parameter((me, n)), cp.Parameter(me)
        params += [A, b]
        constraints.append(A @ x == b)
    objective = cp.Minimize(0.5 * cp.sum_squares(L.T @ x) + p @ x)
    return layers.CvxpyLayer(cp.Problem(objective, constraints), parameters=params, variables=[x])


def _cvxpylayers(Q: Tensor, p: Tensor, G: Tensor, h: Tensor, A: Tensor, b: Tensor) -> Tensor:
    n, m, me = p.shape[1], G.shape[1], A.shape[1]
    layer = _cvxpy_layer(n, m, me)
    eye = torch.eye(n, dtype=Q.dtype, device=Q.device)
    L = torch.linalg.cholesky(Q + 1e-12 * eye)
    args = [L, p] + ([G, h] if m else []) + ([A, b] if me else [])
    (x,) = layer(*args)
    return x


EXTERNAL = ("piqp", "proxqp")


def external_start(P64: QPProblem, G: Tensor, h: Tensor, backend: str, tol: float, max_iter: int) -> _IPMResult:
    """Per-member PIQP / ProxQP solutions of the float64 problem ``P64``, as an interior-point result.

    ``G (B, m', n)``, ``h (B, m')`` are :func:`~.problem.bound_rows` of ``P64``: the multipliers ``z``
    and slacks ``s = h - G x`` come in that row layout, ``y`` are the equality multipliers. The
    status is ``MAX_ITER`` for every member: the polish and the KKT check decide optimality, and an
    infeasibility the solver reports is certified (or not) by the same Farkas test as ours.
    """
    B, n = P64.p.shape
    me = P64.A.shape[1]
    cols = [torch.isfinite(bound).any(0).nonzero().flatten().numpy() for bound in (P64.upper, P64.lower)]
    arrays = [t.numpy() for t in (P64.Q, P64.p, P64.lower, P64.upper, P64.G, P64.h, P64.A, P64.b)]
    solve_one = _piqp_one if backend == "piqp" else _proxqp_one
    X, Z, Y = np.zeros((B, n)), np.zeros((B, G.shape[1])), np.zeros((B, me))
    status = torch.full((B,), int(QPStatus.MAX_ITER), dtype=torch.int64)
    iterations = torch.zeros(B, dtype=torch.int64)
    for i in range(B):
        Q, p, lo, hi, Gi, hi_, A, b = (a[i] for a in arrays)
        x, zu, zl, mu, y, _, its = solve_one(Q, p, lo, hi, Gi, hi_, A, b, tol, max_iter)
        X[i], Y[i] = x, y
        Z[i] = np.concatenate([mu, zu[cols[0]], zl[cols[1]]])
        iterations[i] = its  # an "infeasible" claim stays MAX_ITER: classify_unsolved certifies it, as for ours
    x = torch.from_numpy(X)
    return _IPMResult(x, h - _mv(G, x), torch.from_numpy(Z).clamp_min(0.0), torch.from_numpy(Y), status, iterations)


def _piqp_one(Q, p, lo, hi, G, h, A, b, tol, max_iter):  # noqa: ANN001, ANN202 - numpy arrays of one member
    piqp = require("piqp")
    s = piqp.DenseSolver()
    s.settings.eps_abs = s.settings.eps_rel = tol
    s.settings.max_iter = max(max_iter, 30)
    m, me = G.shape[0], A.shape[0]
    s.setup(np.asfortranarray(Q), p, np.asfortranarray(A) if me else None, b if me else None,
            np.asfortranarray(G) if m else None, None, h if m else None, lo, hi)
    st = s.solve()
    r = s.result
    n = p.shape[0]
    infeasible = st == piqp.PIQP_PRIMAL_INFEASIBLE
    return (np.asarray(r.x), np.asarray(r.z_bu) if n else np.zeros(0), np.asarray(r.z_bl) if n else np.zeros(0),
            np.asarray(r.z_u) if m else np.zeros(0), np.asarray(r.y) if me else np.zeros(0), infeasible, int(r.info.iter))


def _proxqp_one(Q, p, lo, hi, G, h, A, b, tol, max_iter):  # noqa: ANN001, ANN202 - numpy arrays of one member
    proxsuite = require("proxsuite")
    n, m, me = p.shape[0], G.shape[0], A.shape[0]
    qp = proxsuite.proxqp.dense.QP(n, me, m, True)
    qp.settings.eps_abs, qp.settings.eps_rel, qp.settings.verbose = tol, 0.0, False
    qp.settings.max_iter = max(max_iter, 1000)
    big = 1e20  # ProxQP's "no bound"
    qp.init(Q, p, A if me else None, b if me else None, G if m else None, np.full(m, -big) if m else None,
            h if m else None, np.maximum(lo, -big), np.minimum(hi, big))
    qp.solve()
    r = qp.results
    z = np.asarray(r.z)
    box = z[m:m + n]
    infeasible = r.info.status == proxsuite.proxqp.PROXQP_PRIMAL_INFEASIBLE
    return (np.asarray(r.x), np.maximum(box, 0.0), np.maximum(-box, 0.0), np.maximum(z[:m], 0.0),
            np.asarray(r.y), infeasible, int(r.info.iter))
