"""Problem, status and solution types of the QP layer, argument validation and shared helpers.

Imports nothing else of :mod:`ohio_layers.lowlevel.qp`; every solver module builds on these.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from ..._validate import check_tensor

ArrayLike = Union[Tensor, float, None]
BACKENDS = ("native", "qpth", "cvxpylayers", "piqp", "proxqp")


class QPStatus(enum.IntEnum):
    """Per-member outcome of a QP solve (each backed by a check, see :mod:`.certify`)."""

    OPTIMAL = 0  # the KKT residual at the returned x and multipliers is <= tol
    INFEASIBLE = 1  # no x satisfies the constraints (empty box, Farkas certificate or phase-1 LP)
    MAX_ITER = 2  # not solved, and neither infeasibility nor unboundedness was certified
    UNBOUNDED = 3  # feasible, and a verified direction of recession decreases the objective
    NONCONVEX = 4  # Q is not positive semidefinite (only with check_psd=False): no minimum is certified


@dataclass
class QPSolution:
    """Result of :func:`solve_qp`.

    Attributes:
        x: ``(B, n)`` solutions (differentiable for ``OPTIMAL`` members; the last iterate,
            detached, non-finite entries set to 0, for the others).
        status: ``(B,)`` int64 codes of :class:`QPStatus`.
        iterations: ``(B,)`` int64 iterations used (active-set plus interior-point).
        lower_dual, upper_dual: ``(B, n)`` multipliers ``>= 0`` of ``lower <= x`` and ``x <= upper``
            (0 for infinite bounds).
        ineq_dual: ``(B, m)`` multipliers ``>= 0`` of ``G x <= h``.
        eq_dual: ``(B, me)`` multipliers of ``A x = b``.
        kkt_residual: ``(B,)`` relative KKT residual (:func:`~.certify.kkt_residual`) of ``x`` and the
            multipliers, in float64; ``inf`` for members with no meaningful point (e.g. an empty box).

    The multipliers solve ``Q x + p - lower_dual + upper_dual + G' ineq_dual + A' eq_dual = 0``;
    they are float64-accurate values in the caller's dtype, without gradient. The qpth and
    cvxpylayers backends leave them (and ``kkt_residual``) ``None``.
    """

    x: Tensor
    status: Tensor
    iterations: Tensor
    lower_dual: Optional[Tensor] = None
    upper_dual: Optional[Tensor] = None
    ineq_dual: Optional[Tensor] = None
    eq_dual: Optional[Tensor] = None
    kkt_residual: Optional[Tensor] = None

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
    return prob


def _check_values(args: dict) -> None:
    """No NaN anywhere, no inf except in the bounds; one test for the common (valid) case."""
    finite = [v.detach().reshape(-1) for k, v in args.items() if k not in ("lower", "upper")]
    bounds = [v.detach().reshape(-1) for k, v in args.items() if k in ("lower", "upper")]
    # a finite sum means every entry is finite (an overflow only sends us to the exact loop below);
    # two fused reductions instead of two per argument: this runs on every call
    ok = bool(torch.cat(finite).sum().isfinite()) if finite else True
    if ok and bounds:
        ok = not bool(torch.cat(bounds).isnan().any())
    if ok:
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


def _sym(Q: Tensor) -> Tensor:
    return 0.5 * (Q + Q.transpose(-1, -2))


def _mv(M: Tensor, v: Tensor) -> Tensor:
    """Batched matrix-vector product ``(B, r, c) x (B, c) -> (B, r)``."""
    return (M @ v.unsqueeze(-1)).squeeze(-1)


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


def split_row_duals(prob: QPProblem, lam: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Undo :func:`bound_rows` for multipliers: ``lam (B, m' + me)`` -> ``(lower (B, n), upper (B, n), G (B, m), A (B, me))``."""
    B, n, m = prob.batch, prob.n, prob.G.shape[1]
    k = m
    parts = {}
    for name, bound in (("upper", prob.upper), ("lower", prob.lower)):
        finite = torch.isfinite(bound)
        cols = finite.any(0).nonzero().flatten()
        full = lam.new_zeros(B, n)
        full[:, cols] = lam[:, k:k + cols.numel()] * finite[:, cols]
        parts[name] = full
        k += cols.numel()
    return parts["lower"], parts["upper"], lam[:, :m], lam[:, k:]
