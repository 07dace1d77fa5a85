"""Small-batch CPU path for box QPs: member by member with LAPACK Cholesky solves in numpy."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import numpy as np
import torch
from torch import Tensor
from torch.autograd import forward_ad
from torch.autograd.function import once_differentiable

from .problem import ArrayLike, QPSolution


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


@dataclass
class LeanInputs:
    """The arguments of :func:`solve_qp` as C-contiguous float64 numpy arrays, validated without torch ops.

    Every array has a leading batch dimension: ``B`` if the argument had one, else 1 (shared by
    the batch): ``Q (B|1, n, n)``, ``p``, ``lower``, ``upper`` ``(B|1, n)``, ``G (B|1, m, n)``,
    ``h (B|1, m)``, ``A (B|1, me, n)``, ``b (B|1, me)`` (zero rows when absent). The bounds keep
    their infinities and are not checked (NaN, ``lower > upper``: the solvers decline those).
    ``Q`` is as given (not symmetrised). ``tensors`` are the caller's tensors
    ``(Q, p, lower, upper, G, h, A, b)`` (``None`` where not a tensor), for the backward pass;
    ``which`` the indices of those that require grad (empty with grad mode off).
    """

    B: int
    n: int
    dtype: torch.dtype
    Q: np.ndarray
    p: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    G: np.ndarray
    h: np.ndarray
    A: np.ndarray
    b: np.ndarray
    tensors: tuple
    which: tuple

    @property
    def requires_grad(self) -> bool:
        return bool(self.which)


@lru_cache(maxsize=64)
def _absent(index: int, n: int) -> np.ndarray:
    """Read-only fill of an absent argument (by its index in ``Q, p, lower, upper, G, h, A, b``):
    infinite bounds ``(1, n)``, no rows ``(1, 0, n)`` for ``G``/``A`` and ``(1, 0)`` for ``h``/``b``."""
    a = {2: lambda: np.full((1, n), -np.inf), 3: lambda: np.full((1, n), np.inf),
         4: lambda: np.zeros((1, 0, n)), 5: lambda: np.zeros((1, 0))}[index if index < 6 else index - 2]()
    a.flags.writeable = False
    return a


def lean_inputs(Q: object, p: object, lower: ArrayLike, upper: ArrayLike, G: object = None, h: object = None,
                A: object = None, b: object = None, max_batch: int = SMALL_BATCH_LOOP,
                check_finite: bool = True) -> Optional[LeanInputs]:
    """:class:`LeanInputs` of a CPU float32/float64 problem of at most ``max_batch`` members, or ``None``.

    ``None`` -- and :func:`solve_qp` takes the general route, which also produces the error
    messages -- unless every argument but the bounds is valid by the rules of :func:`make_problem`.
    With ``check_finite=False`` the caller rejects NaN/inf in ``Q, p, G, h, A, b`` itself (the
    compiled kernel does, in the loop that reads them). Each tensor is converted once
    (``.numpy()``, which also refuses non-CPU tensors and those under torch.func transforms) and
    checked on the numpy side: this runs before every small solve, where each torch call counts.
    """
    if forward_ad._current_level >= 0 or not isinstance(p, Tensor) or not isinstance(Q, Tensor):
        return None  # forward-mode AD (the general path handles it) or no tensors to work with
    dtype = p.dtype
    np_dtype = _NUMPY_DTYPES.get(dtype)
    if np_dtype is None or (G is None) != (h is None) or (A is None) != (b is None):
        return None
    values = (Q, p, lower, upper, G, h, A, b)
    grad_on = torch.is_grad_enabled()
    arrays: list = [None] * 8
    tensors: list = [None] * 8
    which: list = []  # indices of the tensors that require grad (with grad mode on)
    try:
        for i, v in enumerate(values):
            if isinstance(v, Tensor):
                if v.dtype is not dtype:
                    return None
                tensors[i] = v
                if v.requires_grad:
                    a = v.data.numpy()  # .data: no dispatcher op
                    if grad_on:
                        which.append(i)
                else:
                    a = v.numpy()
                arrays[i] = a if a.flags.c_contiguous else np.ascontiguousarray(a)  # e.g. expanded bounds
            elif not (v is None or (i in (2, 3) and type(v) in (float, int))):  # a bound may be a Python number
                return None
    except (RuntimeError, TypeError):  # not on the CPU, or a torch.func wrapper: the general path decides
        return None
    p_, G_, A_ = arrays[1], arrays[4], arrays[6]
    if p_.ndim not in (1, 2) or (G_ is not None and G_.ndim not in (2, 3)) or (A_ is not None and A_.ndim not in (2, 3)):
        return None
    n = p_.shape[-1]
    m = G_.shape[-2] if G_ is not None else 0
    me = A_.shape[-2] if A_ is not None else 0
    if n == 0:
        return None
    tails = ((n, n), (n,), (n,), (n,), (m, n), (m,), (me, n), (me,))  # each argument's shape without the batch
    B: Optional[int] = None  # no batched argument seen yet (0 is a batch size: an empty batch)
    for i, a in enumerate(arrays):
        if a is None:
            v = values[i]
            arrays[i] = _absent(i, n) if v is None else np.full((1, n), v, dtype=np_dtype)  # rounded to the dtype
            continue
        shape, tail = a.shape, tails[i]
        if shape == tail or (not shape and i in (2, 3)):  # shared (a bound may be a 0-dim tensor)
            arrays[i] = a[None] if shape else np.full((1, n), a)
        elif len(shape) == len(tail) + 1 and shape[1:] == tail and (B is None or shape[0] == B):
            B = shape[0]
        else:
            return None
    B = 1 if B is None else B
    if not 1 <= B <= max_batch:  # an empty batch: the general route returns (0, n)
        return None
    if np_dtype is np.float32:
        arrays = [np.ascontiguousarray(a, dtype=np.float64) for a in arrays]
    if check_finite:
        # one test for NaN/inf in Q, p, G, h, A, b: a finite sum has finite terms (an overflow only
        # sends the call to the general route); the bounds are the solvers' to check
        if not math.isfinite(sum(float(arrays[i].sum()) for i in (0, 1, 4, 5, 6, 7))):
            return None
    return LeanInputs(B, n, dtype, *arrays, tuple(tensors), tuple(which))


def _solve_box_small(Q: object, p: object, lower: ArrayLike, upper: ArrayLike, tol: float = 1e-9) -> Optional[QPSolution]:
    """The box QP of at most ``SMALL_BATCH_LOOP`` CPU problems with a positive definite ``Q``, in numpy.

    Returns ``None`` -- and :func:`solve_qp` takes the general route -- unless :func:`lean_inputs`
    accepts the arguments, ``Q`` passes a Cholesky factorisation (which is the first solve of the
    search, so the positive-definiteness check is free) and the search converges. The factor of
    the final reduced Hessian is kept, so the backward pass is one triangular solve pair per
    member (:class:`_SmallBoxKKT`).
    """
    inp = lean_inputs(Q, p, lower, upper)
    if inp is None:
        return None
    B, n, pn = inp.B, inp.n, inp.p
    np_dtype = _NUMPY_DTYPES[inp.dtype]
    tensors = [t for t in inp.tensors[:4] if t is not None]
    Qs = inp.Q + inp.Q.swapaxes(-1, -2)
    Qs *= 0.5
    # NaN in a bound, lower > upper, lower = inf or upper = -inf all fail (lo <= hi) after the clamping
    lo, hi = np.maximum(inp.lower, -_BIG), np.minimum(inp.upper, _BIG)
    if not (lo <= hi).all():
        return None
    X = np.empty((B, n))
    up, dn = np.empty((B, n), dtype=bool), np.empty((B, n), dtype=bool)
    factors, iterations = [], []
    max_iter = 2 * n + 10
    for i in range(B):
        found = _box_search_one(Qs[i % len(Qs)], pn[i % len(pn)], lo[i % len(lo)], hi[i % len(hi)], max_iter)
        if found is None:  # not positive definite, or no convergence: the general path decides
            return None
        X[i], dn[i], up[i], factor, it = found
        factors.append(factor)
        iterations.append(it)
    g = (Qs @ X[:, :, None])[:, :, 0]
    g += pn
    active = dn | up
    zl, zu = np.where(dn, g, 0.0), np.where(up, -g, 0.0)
    residual = _box_residual(pn, g, active)
    if not (residual <= tol).all():  # the general path decides (and flags) these
        return None
    x = torch.from_numpy(X.astype(np_dtype))  # a copy: X stays intact for the backward pass
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        x = _SmallBoxKKT.apply(Q, p, lower, upper, (x, Qs, X, dn, up, factors))
    empty = torch.zeros(B, 0, dtype=inp.dtype)
    as_out = torch.from_numpy if np_dtype is np.float64 else lambda a: torch.from_numpy(a.astype(np_dtype))
    return QPSolution(x, torch.zeros(B, dtype=torch.int64), torch.tensor(iterations, dtype=torch.int64),
                      as_out(zl), as_out(zu), empty, empty, torch.from_numpy(residual))


def _box_residual(p: np.ndarray, g: np.ndarray, active: np.ndarray) -> np.ndarray:
    """:func:`~.certify.kkt_residual` ``(B,)`` at a repeated active set of :func:`_box_search_one` (``g = QX + p``).

    At a repeated set the other terms are exactly zero, by the same float comparisons that
    ended the search: free entries lie within their bounds (``trial = x`` there), active entries
    equal their bound (identity rows of the Cholesky solve) and their multipliers ``-g`` /
    ``g`` have the right sign (``trial`` crossed the bound). What remains is stationarity on the
    free entries, relative to ``1 + max(|p|, |Qx|, |multipliers|)``.
    """
    absg = np.abs(g)
    stat = np.where(active, 0.0, absg).max(-1)
    scale = np.maximum(np.maximum(np.abs(p), np.abs(g - p)), np.where(active, absg, 0.0)).max(-1)
    return stat / (1.0 + scale)  # NaN fails the caller's <= test


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
    ``Q`` (``(1, n, n)`` if shared, or ``(B, n, n)``), the float64 solutions, the active sets and the Cholesky
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
            r = G - (Qs @ U[:, :, None])[:, :, 0]
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
