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
_INF_BOUNDS = (np.array([-np.inf]), np.array([np.inf]))  # absent bounds (broadcast to n below)
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
    """The arguments of :func:`solve_qp` as float64 numpy arrays, validated without torch ops.

    Each array keeps its batch dimension only if the argument had one (``Q (n, n)`` or
    ``(B, n, n)``, ...); ``G``/``h`` and ``A``/``b`` have zero rows when absent; the bounds keep
    their infinities and are not checked (NaN, ``lower > upper``: the solvers decline those).
    ``Q`` is as given (not symmetrised). ``tensors`` are the caller's tensors
    ``(Q, p, lower, upper, G, h, A, b)`` (``None`` where not a tensor), for the backward pass.
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

    @property
    def requires_grad(self) -> bool:
        return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in self.tensors)


def lean_inputs(Q: object, p: object, lower: ArrayLike, upper: ArrayLike, G: object = None, h: object = None,
                A: object = None, b: object = None, max_batch: int = SMALL_BATCH_LOOP) -> Optional[LeanInputs]:
    """:class:`LeanInputs` of a CPU float32/float64 problem of at most ``max_batch`` members, or ``None``.

    ``None`` -- and :func:`solve_qp` takes the general route, which also produces the error
    messages -- unless every argument but the bounds is valid by the rules of :func:`make_problem`,
    checked with a few fused numpy tests.
    """
    if not (isinstance(p, Tensor) and isinstance(Q, Tensor)):
        return None
    dtype, device = p.dtype, p.device
    np_dtype = _NUMPY_DTYPES.get(dtype)
    if np_dtype is None or device.type != "cpu" or p.dim() not in (1, 2):
        return None
    n = p.shape[-1]
    if n == 0:
        return None
    sizes = []
    arrays = {}
    tensors = []
    # name, value, trailing shape, fill when absent (None: required / must come in a pair)
    for name, value, tail in (("Q", Q, (n, n)), ("p", p, (n,)), ("lower", lower, (n,)), ("upper", upper, (n,)),
                              ("G", G, None), ("h", h, None), ("A", A, None), ("b", b, None)):
        if value is None:
            tensors.append(None)
            continue
        if not isinstance(value, Tensor):
            if name in ("lower", "upper") and type(value) in (float, int):
                arrays[name] = np.full(n, value, dtype=np_dtype)  # rounded to the dtype, as torch.as_tensor does
                tensors.append(None)
                continue
            return None
        if value.dtype != dtype or value.device != device:
            return None
        if tail is None:  # G, h, A, b: rows taken from the matrix
            matrix = name in ("G", "A")
            rows_of = arrays.get("G" if name == "h" else "A") if not matrix else None
            if matrix:
                if value.dim() not in (2, 3) or value.shape[-1] != n:
                    return None
                tail = tuple(value.shape[-2:])
            else:
                if rows_of is None:
                    return None
                tail = (rows_of.shape[-2],)
        if value.dim() == len(tail) + 1:
            sizes.append(value.shape[0])
        elif value.dim() != len(tail) and not (name in ("lower", "upper") and value.dim() == 0):
            return None
        if value.dim() and tuple(value.shape[value.dim() - len(tail):]) != tail:
            return None
        tensors.append(value)
        arrays[name] = value
    if (G is None) != (h is None) or (A is None) != (b is None):
        return None
    B = sizes[0] if sizes else 1
    if not 1 <= B <= max_batch or any(s != B for s in sizes):
        return None
    if forward_ad._current_level >= 0 and any(t is not None and forward_ad.unpack_dual(t).tangent is not None
                                              for t in tensors):
        return None  # forward-mode AD: let the general path raise, as it always did
    try:  # tensors under torch.func transforms have no storage: the general path handles them
        arrays = {k: _as_numpy(v) if isinstance(v, Tensor) else v for k, v in arrays.items()}
    except RuntimeError:
        return None
    if np_dtype is np.float32:
        arrays = {k: v.astype(np.float64) for k, v in arrays.items()}
    lo = arrays.get("lower", _INF_BOUNDS[0])
    hi = arrays.get("upper", _INF_BOUNDS[1])
    lo, hi = (np.full(n, v) if v.ndim == 0 else v if v.shape[-1] == n else np.full(n, v[0]) for v in (lo, hi))
    total = arrays["Q"].sum() + arrays["p"].sum()
    Gn, hn, An, bn = (arrays.get(k) for k in ("G", "h", "A", "b"))
    for a in (Gn, hn, An, bn):
        if a is not None:
            total += a.sum()
    # one test for NaN/inf in Q, p, G, h, A, b: a finite sum has finite terms (an overflow only
    # sends the call to the general route); the bounds are the solvers' to check
    if not math.isfinite(total):
        return None
    zero_rows = np.zeros((0, n))
    Gn, An = (zero_rows if a is None else a for a in (Gn, An))
    hn, bn = (np.zeros(0) if a is None else a for a in (hn, bn))
    return LeanInputs(B, n, dtype, arrays["Q"], arrays["p"], lo, hi, Gn, hn, An, bn, tuple(tensors))


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
        found = _box_search_one(Qs if Qs.ndim == 2 else Qs[i], pn if pn.ndim == 1 else pn[i],
                                lo if lo.ndim == 1 else lo[i], hi if hi.ndim == 1 else hi[i], max_iter)
        if found is None:  # not positive definite, or no convergence: the general path decides
            return None
        X[i], dn[i], up[i], factor, it = found
        factors.append(factor)
        iterations.append(it)
    g = X @ Qs if Qs.ndim == 2 else np.einsum("bij,bj->bi", Qs, X)  # Qs is symmetric
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
