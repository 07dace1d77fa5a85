"""Compiled CPU path for general constraints: a Goldfarb-Idnani dual active-set method per member.

Every constraint is a row of ``C x <= d`` in one layout shared by the batch: the equalities
``A x = b`` first, then ``G x <= h``, the upper bounds ``x <= upper`` and the lower bounds
``-x <= -lower`` (an infinite bound is a row that is never violated, so never enters). For a
positive definite ``Q = L L'`` the rows are seen through ``V = L^{-1} C'`` and the Gram matrix
``M = C Q^{-1} C'`` (columns computed when a row is first touched). From the unconstrained
minimiser the equalities, then the most violated inequality, are added one at a time; adding
row ``q`` moves ``lam_S -= t r``, ``lam_q += t`` with ``r = M_SS^{-1} M_Sq`` (the working rows stay
tight) until ``q`` is tight (``t = slack_q / kappa``, ``kappa = M_qq - M_qS r``) or a working
multiplier reaches zero (that row leaves). A row dependent on the working set (``kappa ~ 0``:
duplicated rows, vertices with more than ``n`` active rows) only moves the multipliers. Each
step keeps ``lam >= 0`` and raises the dual objective, so the search ends (Goldfarb & Idnani
1983, the method of quadprog). The final working set is solved once more from scratch.

Why compiled: a step is a few ``O(n^2)`` loops; as torch ops (~5 us each) an iteration of the
batched interior point costs ~50 ops, so one ``n = 20`` problem took milliseconds. With numba a
member takes tens of microseconds, at any batch size, so this path serves every CPU batch.

A member is accepted only if the search finished and :func:`~.active_set_kernels.kkt_residual_one` -- the exact twin of
:func:`~.certify.kkt_residual` -- is ``<= tol``. The others (a singular ``Q``, a dependent
equality, inconsistent rows, an empty box, too many steps) are returned as unsolved, and
:func:`~.solve.solve_qp` sends just those members to the batched torch path, which certifies
or flags them; a member's route depends on that member only, so its status and ``x`` do not
depend on the batch. The backward pass (:class:`DualActiveSetKKT`) is implicit differentiation
at the final working set, reusing the factors of ``Q`` and ``M_SS``.

numba is optional (extra ``fastqp``; robosuite already depends on it): without it
:func:`available` is ``False`` and the numpy box search and the torch paths run as before.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np
import torch
from torch import Tensor
from torch.autograd import forward_ad
from torch.autograd.function import once_differentiable

from .active_set_kernels import _AVAILABLE, adjoint_into, solve_batch, available
from .problem import ArrayLike, QPProblem, QPSolution, QPStatus
from .small import lean_inputs

__all__ = ["available", "solve_compiled", "solve_lean", "DualActiveSetKKT", "function_apply"]


def function_apply(cls: type) -> Callable[..., Tensor]:
    """``cls.apply`` of a :class:`torch.autograd.Function` subclass, through torch's C entry when it can.

    ``Function.apply`` is a Python wrapper (default-argument binding, functorch checks, unwrapping
    of dead functorch wrappers) around ``torch._C._FunctionBase.apply``; at B = 1 that wrapper is
    ~5 us of a ~100 us call. The returned callable goes to the C entry directly while no functorch
    transform is active (the wrapper then does nothing else for a class without ``setup_context``)
    and to ``cls.apply`` otherwise, or always if this private entry is missing or ``cls`` defines
    ``setup_context``.
    """
    entry = getattr(torch._C, "_FunctionBase", None)
    descriptor = getattr(entry, "__dict__", {}).get("apply")
    transforms_active = getattr(torch._C, "_are_functorch_transforms_active", None)
    defines_setup = getattr(cls, "setup_context", None) is not getattr(torch.autograd.Function, "setup_context", None)
    if descriptor is None or not hasattr(descriptor, "__get__") or transforms_active is None or defines_setup:
        return cls.apply
    direct = descriptor.__get__(None, cls)
    plain = cls.apply

    def apply(*args: object) -> Tensor:
        return plain(*args) if transforms_active() else direct(*args)
    return apply


# ------------------------------------------------------------------ driver
def solve_lean(Q: object, p: object, lower: ArrayLike, upper: ArrayLike, G: object, h: object, A: object, b: object,
               tol: float) -> Optional[QPSolution]:
    """A call of at most ``SMALL_BATCH_LOOP`` CPU problems, with no torch op on the way: ``None``
    unless numba is there, :func:`~.small.lean_inputs` accepts the arguments, every entry of ``Q, p,
    G, h, A, b`` is finite (checked by the kernel) and every member is solved (otherwise
    :func:`~.solve.solve_qp` takes the validated route, member by member)."""
    if not _AVAILABLE:
        return None
    inp = lean_inputs(Q, p, lower, upper, G, h, A, b, check_finite=False)
    if inp is None or not _small_enough(inp.n, inp.G.shape[1] + inp.A.shape[1]):
        return None
    run = _run(inp.Q, inp.p, inp.lower, inp.upper, inp.G, inp.h, inp.A, inp.b, inp.B, tol)
    if run.solved_count != inp.B:
        return None
    return _solution(run, inp.tensors, inp.dtype, inp.which)


def solve_compiled(prob: QPProblem, tol: float) -> Optional[Tuple[QPSolution, Tensor]]:
    """``(solution, solved (B,) bool)`` for a validated problem, or ``None`` where this path does not
    apply (numba missing, a non-CPU tensor, a dtype other than float32/float64, forward-mode AD).

    Unsolved members carry ``x = 0`` and no gradient; the caller replaces them.
    """
    p = prob.p
    if not _AVAILABLE or p.device.type != "cpu" or p.dtype not in (torch.float64, torch.float32):
        return None
    if not _small_enough(prob.n, prob.G.shape[1] + prob.A.shape[1]):
        return None
    tensors = prob._tensors()
    if forward_ad._current_level >= 0 and any(forward_ad.unpack_dual(t).tangent is not None for t in tensors):
        return None  # forward-mode AD: the torch path handles it
    try:  # tensors under torch.func transforms have no storage
        Q, p_, lo, hi, G, h, A, b = (np.ascontiguousarray(t.detach().numpy(), dtype=np.float64) for t in tensors)
    except RuntimeError:
        return None
    run = _run(Q, p_, lo, hi, G, h, A, b, p_.shape[0], tol)
    which = tuple(i for i, t in enumerate(tensors) if t.requires_grad) if torch.is_grad_enabled() else ()
    return _solution(run, tensors, p.dtype, which), torch.from_numpy(run.K >= 0)


MAX_ROWS = 1024  # a member keeps Gram columns of up to (rows x rows) floats: 8 MB here


def _small_enough(n: int, rows: int) -> bool:
    """Sizes for which the per-member search is the right tool (larger ones take the batched torch path)."""
    return n <= 256 and rows + 2 * n <= MAX_ROWS


@dataclass
class _Run:
    """A kernel run: ``X (B, n)``, ``LAM (B, r)`` (rows ``A, G``, upper, lower), the factors ``L``, ``F`` and
    working rows ``S[:, :K]`` (``K = -1``: unsolved), the rows ``C (B, r, n)``, iterations and residuals."""

    X: np.ndarray
    LAM: np.ndarray
    L: np.ndarray
    F: np.ndarray
    S: np.ndarray
    K: np.ndarray
    C: np.ndarray
    me: int
    m: int
    iterations: np.ndarray
    residual: np.ndarray
    solved_count: int  # -1: a NaN/inf in Q, p, G, h, A or b


def _run(Q: np.ndarray, p: np.ndarray, lo: np.ndarray, hi: np.ndarray, G: np.ndarray, h: np.ndarray, A: np.ndarray,
         b: np.ndarray, B: int, tol: float) -> _Run:
    """The kernel on C-contiguous float64 arrays, each with a batch dimension of ``B`` or 1 (shared)."""
    n = p.shape[-1]
    me, m = A.shape[-2], G.shape[-2]
    r = me + m + 2 * n
    C, X, LAM = np.empty((B, r, n)), np.empty((B, n)), np.zeros((B, r))
    L, F = np.empty((B, n, n)), np.empty((B, n, n))
    S, K = np.empty((B, n), dtype=np.int64), np.zeros(B, dtype=np.int64)
    iters, res = np.zeros(B, dtype=np.int64), np.empty(B)
    solved = solve_batch(Q, p, lo, hi, G, h, A, b, tol, C, X, LAM, L, F, S, K, iters, res)
    return _Run(X, LAM, L, F, S, K, C, me, m, iters, res, solved)


def _solution(run: _Run, tensors: tuple, dtype: torch.dtype, which: tuple) -> QPSolution:
    """:class:`QPSolution` of a kernel run (``torch.from_numpy`` of its arrays, no torch op); ``x``
    differentiable w.r.t. ``tensors[i]`` for ``i`` in ``which`` (indices in ``Q, p, lower, upper, G, h,
    A, b`` of the tensors that require grad; empty with grad mode off)."""
    X, LAM, me, m = run.X, run.LAM, run.me, run.m
    B, n = X.shape
    if dtype is not torch.float64:
        X, LAM = X.astype(np.float32), LAM.astype(np.float32)
    elif which:  # copies: the backward reads X and LAM, the caller may write to the outputs
        X, LAM = X.copy(), LAM.copy()
    x = torch.from_numpy(X)
    if which:
        x = _apply_kkt((x, run, which), *[tensors[i] for i in which])
    k = me + m
    if run.solved_count == B:
        status = np.zeros(B, dtype=np.int64)  # QPStatus.OPTIMAL
    else:  # callers replace unsolved members
        status = np.where(run.K >= 0, int(QPStatus.OPTIMAL), int(QPStatus.MAX_ITER))
    return QPSolution(x, torch.from_numpy(status), torch.from_numpy(run.iterations),
                      torch.from_numpy(LAM[:, k + n:]), torch.from_numpy(LAM[:, k:k + n]),
                      torch.from_numpy(LAM[:, me:k]), torch.from_numpy(LAM[:, :me]), torch.from_numpy(run.residual))


class DualActiveSetKKT(torch.autograd.Function):
    """Implicit backward of the compiled path (as :class:`~.kkt.GeneralKKT`, on the saved factors).

    With ``(w_x, w_l)`` from :func:`~.active_set_kernels.adjoint_into`: ``dL/dp = -w_x``, ``dL/dQ = -(w_x x' + x w_x')/2``,
    ``dL/dC = -(lam w_x' + w_l x')``, ``dL/dd = w_l`` (zero on inactive rows), scattered to ``A, b, G,
    h`` and the bounds. ``data = (x, run, which)``: the output, the :class:`_Run` and the indices in
    ``(Q, p, lower, upper, G, h, A, b)`` of the inputs that follow (only those that require grad:
    each input costs autograd time). An input without the batch dimension (shared) gets the sum
    over the batch. Unsolved members (``K = -1``) get zero gradient (the caller replaces their
    ``x`` by an ``index_put``).
    """

    @staticmethod
    def forward(ctx, data, *inputs):  # type: ignore[override]
        x, ctx.run, ctx.which = data
        ctx.shapes = tuple(t.shape for t in inputs)
        ctx.dtype = x.dtype
        return x

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        if torch.is_grad_enabled():  # create_graph=True: a second backward must raise, not return zeros
            return _gradients_once(ctx, g)
        return _gradients(ctx, g)


_TAIL_DIMS = (2, 1, 1, 1, 2, 1, 2, 1)  # dimensions of Q, p, lower, upper, G, h, A, b without the batch
_NOT_WANTED = (np.zeros((0, 0, 0)),) + (np.zeros((0, 0)),) * 3 + (np.zeros((0, 0, 0)), np.zeros((0, 0))) * 2


def _gradients(ctx, g: Tensor) -> tuple:  # noqa: ANN001 - the autograd ctx
    """:meth:`DualActiveSetKKT.backward` (separate so that the common case skips once_differentiable's ~7 us).

    :func:`adjoint_into` writes each wanted gradient straight into an array of the caller's
    layout: ``(B, ...)`` for a batched argument, ``(1, ...)`` summed over the batch for a shared one
    (returned without its leading 1), so nothing is sliced, negated, summed or copied here; only a
    0-dim bound's ``(B, n)`` gradient is summed to a scalar.
    """
    run, which = ctx.run, ctx.which
    X, me, m = run.X, run.me, run.m
    B, n = X.shape
    member = ((n, n), (n,), (n,), (n,), (m, n), (m,), (me, n), (me,))  # each argument's shape in one member
    outs = list(_NOT_WANTED)
    for i, shape in zip(which, ctx.shapes):
        outs[i] = np.zeros((1 if len(shape) == _TAIL_DIMS[i] else B, *member[i]))
    gn = g.numpy()
    if gn.dtype != np.float64 or not gn.flags.c_contiguous:
        gn = np.ascontiguousarray(gn, dtype=np.float64)
    adjoint_into(run.L, run.F, run.S, run.K, run.C, X, run.LAM, gn, me, m, *outs)
    grads = [None]
    for i, shape in zip(which, ctx.shapes):
        out = outs[i]
        if len(shape) == _TAIL_DIMS[i]:  # shared: the kernel summed over the batch into [0]
            out = out[0]
        elif len(shape) < _TAIL_DIMS[i]:  # a 0-dim bound
            out = np.asarray(out.sum((0, 1)))
        grad = torch.from_numpy(out)
        grads.append(grad if grad.dtype == ctx.dtype else grad.to(ctx.dtype))
    return tuple(grads)


_gradients_once = once_differentiable(_gradients)
_apply_kkt = function_apply(DualActiveSetKKT)
