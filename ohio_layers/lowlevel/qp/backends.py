"""Third-party backends of :func:`ohio_layers.lowlevel.qp.solve_qp`, for cross-checking.

Both take a validated :class:`~ohio_layers.lowlevel.qp.problem.QPProblem` (every argument already
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

import torch
from torch import Tensor

from ..._extras import require
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
