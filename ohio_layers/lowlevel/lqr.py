"""Finite-horizon LQR goal-reaching controller (the OHIO reacher's low level)."""
from __future__ import annotations

import math
from typing import Sequence, Tuple, Union

import torch
from torch import Tensor

from .._validate import check_tensor
from .base import Bound, Context, LowLevelController
from .dynamics import Linearization


def riccati_gains(A: Tensor, B: Tensor, Q: Tensor, R: Tensor, horizon: int, terminal: Union[Tensor, None] = None) -> Tensor:
    """Time-varying gains of the finite-horizon discrete LQR, batched.

    Minimises ``sum_{l<N} x_l'Q x_l + u_l'R u_l + x_N' P_N x_N`` for ``x' = A x + B u`` with
    ``u_l = K_l x_l``. Backward recursion (``P_N = terminal``, default ``Q``)::

        K = -(R + B'PB)^{-1} B'PA,   P <- Q + A'P(A + BK).

    Args:
        A: ``(B, n, n)``; B: ``(B, n, m)``; Q: ``(n, n)``; R: ``(m, m)``.
    Returns:
        K: ``(B, horizon, m, n)``; ``K[:, 0]`` is applied first.
    """
    P = (Q if terminal is None else terminal).to(A).expand(A.shape[0], -1, -1)
    Qb, Rb = Q.to(A), R.to(A)
    At, Bt = A.transpose(-1, -2), B.transpose(-1, -2)
    gains = []
    for _ in range(horizon):
        BtP = Bt @ P
        K = -torch.linalg.solve(Rb + BtP @ B, BtP @ A)
        P = Qb + At @ P @ (A + B @ K)
        P = 0.5 * (P + P.transpose(-1, -2))
        gains.append(K)
    return torch.stack(gains[::-1], 1)


def _weight(value: Union[float, Sequence[float], Tensor], dim: int, name: str, definite: bool) -> Tensor:
    """A cost weight as a ``(dim, dim)`` matrix: finite, symmetric, PSD (PD if ``definite``)."""
    try:
        t = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a number, {dim} diagonal entries or a ({dim}, {dim}) matrix, "
                        f"got {type(value).__name__}") from None
    if t.dim() == 0:
        t = t * torch.eye(dim, dtype=torch.float64)
    elif t.dim() == 1:
        if t.shape[0] != dim:
            raise ValueError(f"{name} must have {dim} diagonal entries, got {t.shape[0]}")
        t = torch.diag(t)
    elif t.shape != (dim, dim):
        raise ValueError(f"{name} must be ({dim}, {dim}), got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf")
    if not torch.allclose(t, t.T, rtol=1e-12, atol=1e-12 * float(t.abs().max())):
        raise ValueError(f"{name} must be symmetric")
    low = float(torch.linalg.eigvalsh(t).min())
    tol = 1e-12 * max(float(t.abs().max()), 1e-300)
    if low < -tol or (definite and low <= tol):
        need = "positive definite" if definite else "positive semi-definite"
        raise ValueError(f"{name} must be {need} (the LQR cost is unbounded otherwise); smallest eigenvalue {low:.3g}")
    return t


class LQRGoalController(LowLevelController):
    """``u_l = clip(K_l (x_l - z_abs), action bounds)`` for ``l = 0..k-1``.

    The gains ``K_l`` come from a k-step Riccati recursion on ``(A, B) = linearization(x_0)``,
    evaluated once at the state ``x_0`` where the decision starts (then held, as deployed in the
    OHIO paper). ``z`` is the target state; the entries listed in ``relative_dims`` are
    expressed relative to ``x_0`` (``z_abs = z + x_0`` on those dims), which makes z a function
    of the observation when angles wind (reacher: the joint positions).

    Args:
        linearization: ``state (B, n) -> (A (B, n, n), B (B, n, m))``.
        state_dim, action_dim: ``n``, ``m``.
        horizon: k (default 5).
        Q, R: state and control weights (scalar, diagonal or full; finite, symmetric, Q positive
            semi-definite, R positive definite). Terminal weight = Q.
        relative_dims: indices of z measured relative to ``x_0``.
        z_bound: symmetric bound on z (scalar or ``(n,)``).
        action_bound: symmetric clip of u (scalar or ``(m,)``); ``None`` disables the clip.
    """

    def __init__(
        self,
        linearization: Linearization,
        state_dim: int = 4,
        action_dim: int = 2,
        horizon: int = 5,
        Q: Union[float, Sequence[float], Tensor] = (10.0, 10.0, 1.0, 1.0),
        R: Union[float, Sequence[float], Tensor] = 0.1,
        relative_dims: Sequence[int] = (),
        z_bound: Bound = 8 * math.pi,
        action_bound: Bound = 1.0,
    ) -> None:
        zb = None if z_bound is None else torch.as_tensor(z_bound, dtype=torch.float64)
        ab = None if action_bound is None else torch.as_tensor(action_bound, dtype=torch.float64)
        super().__init__(
            state_dim, state_dim, action_dim, horizon,
            z_low=None if zb is None else -zb, z_high=zb,
            action_low=None if ab is None else -ab, action_high=ab,
        )
        self.linearization = linearization
        self.register_buffer("Q", _weight(Q, state_dim, "Q", definite=False))
        self.register_buffer("R", _weight(R, action_dim, "R", definite=True))
        mask = torch.zeros(state_dim, dtype=torch.float64)
        for i in relative_dims:
            if not 0 <= i < state_dim:
                raise ValueError(f"relative_dims entries must be in [0, {state_dim}), got {i}")
            mask[i] = 1.0
        self.register_buffer("relative_mask", mask)

    def context(self, state0: Tensor) -> Context:
        """``{"state0", "A", "B", "K" (B, k, m, n), "offset" (B, n)}`` for ``state0 (B, n)``."""
        check_tensor("state0", state0, ("B", self.state_dim))
        A, B = self.linearization(state0)
        A, B = A.to(state0), B.to(state0)
        check_tensor("A", A, (state0.shape[0], self.state_dim, self.state_dim))
        check_tensor("B", B, (state0.shape[0], self.state_dim, self.action_dim))
        K = riccati_gains(A, B, self.Q, self.R, self.horizon)
        return {"state0": state0, "A": A, "B": B, "K": K, "offset": state0 * self.relative_mask.to(state0)}

    def law(self, state: Tensor, z: Tensor, context: Context, step: int) -> Tensor:
        err = state - z - context["offset"]
        return (context["K"][:, step] @ err.unsqueeze(-1)).squeeze(-1)

    def affine(self, state: Tensor, context: Context, step: int) -> Tuple[Tensor, Tensor]:
        K = context["K"][:, step]
        h = (K @ (state - context["offset"]).unsqueeze(-1)).squeeze(-1)
        return -K, h
