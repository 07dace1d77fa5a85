"""Approximate dynamics ``f(state, action, context) -> next_state`` used inside inverse problems.

A *linearisation* is any callable ``state (B, n) -> (A (B, n, n), B (B, n, m))``: constant
matrices, a learned state-dependent model, or finite differences of a simulator (those live in
:mod:`ohio_layers.envs`, since this package never imports simulators).
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch import Tensor, nn

from .._validate import check_tensor
from .base import Context

Linearization = Callable[[Tensor], Tuple[Tensor, Tensor]]


class Dynamics(nn.Module):
    """Base class: ``forward(state (B, n), action (B, m), context) -> next_state (B, n)``."""

    def forward(self, state: Tensor, action: Tensor, context: Context) -> Tensor:  # pragma: no cover
        raise NotImplementedError


class ConstantLinearization(nn.Module):
    """The same ``(A (n, n), B (n, m))`` for every state; broadcast to the batch."""

    def __init__(self, A: Tensor, B: Tensor) -> None:
        super().__init__()
        A, B = torch.as_tensor(A, dtype=torch.float64), torch.as_tensor(B, dtype=torch.float64)
        check_tensor("A", A, (None, None))
        check_tensor("B", B, (A.shape[0], None))
        if A.shape[0] != A.shape[1]:
            raise ValueError(f"A must be square, got {tuple(A.shape)}")
        self.register_buffer("A", A)
        self.register_buffer("B", B)

    def forward(self, state: Tensor) -> Tuple[Tensor, Tensor]:
        n = state.shape[0]
        return self.A.to(state).expand(n, -1, -1), self.B.to(state).expand(n, -1, -1)


class MemoizedLinearization:
    """A linearisation that remembers its ``(A, B)`` per batch of states (exact match of the values).

    Identification (:mod:`ohio_layers.inverse.identify`) evaluates a controller's context on the
    same window-start states many times while only the controller's own parameters change; with a
    simulator's finite-difference linearisation (not traceable by forward-mode AD) that call would
    dominate, and it forced the Jacobians onto central differences. Memoised, the simulator runs
    once per batch and the rest (e.g. the Riccati recursion) stays differentiable. ``A, B`` carry
    no gradient with respect to the state (the linearisation point), as in the LQR.

    Args:
        linearization: ``state (B, n) -> (A (B, n, n), B (B, n, m))``.
        max_entries: batches remembered (least recently added dropped first).
    """

    def __init__(self, linearization: Linearization, max_entries: int = 64) -> None:
        if not callable(linearization):
            raise TypeError(f"linearization must be callable state -> (A, B), got {type(linearization).__name__}")
        if not (isinstance(max_entries, int) and max_entries >= 1):
            raise ValueError(f"max_entries must be a positive int, got {max_entries!r}")
        self.linearization, self.max_entries = linearization, max_entries
        self._memo: "dict[tuple, Tuple[Tensor, Tensor]]" = {}

    def __call__(self, state: Tensor) -> Tuple[Tensor, Tensor]:
        plain = state.detach()
        key = (tuple(plain.shape), str(plain.dtype), plain.cpu().numpy().tobytes())
        if key not in self._memo:
            with torch.no_grad():
                A, B = self.linearization(plain)
            if len(self._memo) >= self.max_entries:
                self._memo.pop(next(iter(self._memo)))
            self._memo[key] = (A.detach(), B.detach())
        A, B = self._memo[key]
        return A.to(state), B.to(state)


class LinearizedDynamics(Dynamics):
    """``x' = A x + B u``.

    With ``linearization=None`` the matrices come from the context (``context["A"]``,
    ``context["B"]``: one linearisation per high-level decision, as the LQR uses). With a
    linearisation callable, they are re-evaluated at every predicted state; ``detach_jacobians``
    then stops gradients through their state dependence (the reference's semi-gradient).
    """

    def __init__(self, linearization: Optional[Linearization] = None, detach_jacobians: bool = True) -> None:
        super().__init__()
        self.linearization = linearization
        self.detach_jacobians = detach_jacobians

    def check_context(self, context: Context) -> None:
        """Raise if matrices are to come from ``context`` but it has no ``"A"`` / ``"B"``."""
        if self.linearization is None and ("A" not in context or "B" not in context):
            raise ValueError("LinearizedDynamics() without a linearization reads A and B from the controller's "
                             f"context, but this context has only {sorted(context)}: pass "
                             "LinearizedDynamics(linearization) (e.g. a ConstantLinearization) for this controller")

    def forward(self, state: Tensor, action: Tensor, context: Context) -> Tensor:
        if self.linearization is None:
            self.check_context(context)
            A, B = context["A"], context["B"]
        else:
            A, B = self.linearization(state.detach() if self.detach_jacobians else state)
        return (A @ state.unsqueeze(-1) + B @ action.unsqueeze(-1)).squeeze(-1)


class LearnedLinearization(nn.Module):
    """State-dependent ``A(s) (B, n, n)``, ``B(s) (B, n, m)`` from an MLP (two hidden layers).

    Trained by :meth:`fit` so that ``A(s) s + B(s) u`` predicts the next state. The output is
    parameterised as a correction of a prior linearisation (zero by default) so that training
    starts from a sensible model.
    """

    def __init__(self, state_dim: int, action_dim: int, hidden: int = 128,
                 prior: Optional[Tuple[Tensor, Tensor]] = None) -> None:
        super().__init__()
        self.n, self.m = state_dim, action_dim
        self.net = nn.Sequential(
            nn.Linear(state_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, state_dim * (state_dim + action_dim)),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        A0 = torch.zeros(state_dim, state_dim) if prior is None else torch.as_tensor(prior[0])
        B0 = torch.zeros(state_dim, action_dim) if prior is None else torch.as_tensor(prior[1])
        self.register_buffer("A0", A0.float())
        self.register_buffer("B0", B0.float())

    def forward(self, state: Tensor) -> Tuple[Tensor, Tensor]:
        check_tensor("state", state, ("B", self.n))
        out = self.net(state.to(self.A0.dtype)).to(state.dtype)
        A = out[:, : self.n * self.n].reshape(-1, self.n, self.n) + self.A0.to(state)
        B = out[:, self.n * self.n :].reshape(-1, self.n, self.m) + self.B0.to(state)
        return A, B

    def fit(self, states: Tensor, actions: Tensor, next_states: Tensor, epochs: int = 20,
            batch_size: int = 256, lr: float = 1e-3, seed: int = 0, val_fraction: float = 0.1) -> dict:
        """Fit on transitions ``(N, n), (N, m), (N, n)``; keeps the best validation epoch.

        Returns ``{"train_loss": [...], "val_loss": [...]}`` per epoch.
        """
        check_tensor("states", states, ("N", self.n))
        check_tensor("actions", actions, (states.shape[0], self.m))
        check_tensor("next_states", next_states, (states.shape[0], self.n))
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(states.shape[0], generator=g)
        n_val = max(1, int(val_fraction * states.shape[0]))
        val, train = perm[:n_val], perm[n_val:]
        s, u, s1 = (t.float() for t in (states, actions, next_states))
        opt = torch.optim.Adam(self.net.parameters(), lr=lr)

        def loss_of(idx: Tensor) -> Tensor:
            A, B = self(s[idx])
            pred = (A @ s[idx].unsqueeze(-1) + B @ u[idx].unsqueeze(-1)).squeeze(-1)
            return ((pred - s1[idx]) ** 2).mean()

        history: dict = {"train_loss": [], "val_loss": []}
        best, best_state = float("inf"), None
        for _ in range(epochs):
            train_loss = train_epoch(loss_of, train, batch_size, opt, g)
            with torch.no_grad():
                v = float(loss_of(val))
            history["train_loss"].append(train_loss)
            history["val_loss"].append(v)
            if v < best:
                best, best_state = v, {k: t.clone() for k, t in self.state_dict().items()}
        if best_state is not None:
            self.load_state_dict(best_state)
        return history


def train_epoch(loss_of: Callable[[Tensor], Tensor], rows: Tensor, batch_size: int, opt: torch.optim.Optimizer,
                generator: torch.Generator) -> float:
    """One epoch of minibatch steps over ``rows (N,)`` in an order drawn from ``generator``; the mean loss.

    ``loss_of(idx)`` is the mean loss of the rows ``idx``; shared by the models fit in this package.
    """
    order = rows[torch.randperm(rows.shape[0], generator=generator)]
    total: Optional[Tensor] = None  # summed on the device: one host sync per epoch, not per minibatch
    for i in range(0, order.shape[0], batch_size):
        idx = order[i : i + batch_size]
        loss = loss_of(idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        part = loss.detach().double() * idx.shape[0]
        total = part if total is None else total + part
    return (float(total) if total is not None else 0.0) / max(1, rows.shape[0])
