"""A dynamics model learned from low-level data alone (no finite-difference prior, no simulator).

``x' = A x + B u + c + s * (f(x) + G(x) u)``: a linear part fitted by least squares on the one-step
transitions, plus a control-affine MLP correction (``f, G`` from one network on the state without
``drop_dims``: the product with ``u`` is explicit, so a state-dependent input gain -- the reacher's
mass-matrix coupling -- needs no learning of a multiplication), then everything trained jointly on **multi-step**
prediction (the model rolls on its own predictions over ``horizon`` observed actions), which is
what an inverse problem uses it for. Being a :class:`~ohio_layers.lowlevel.Dynamics` it plugs into
every inverse (``InverseProblem(controller, model)``); :meth:`LearnedDynamics.linearization` gives
the ``(A(x), B(x))`` a controller such as the LQR needs, by automatic differentiation.

Why not :class:`~ohio_layers.lowlevel.LearnedLinearization` (``A(s) s + B(s) u`` from an MLP)?
Without a prior it stays poor (k-step error ~6e-2 on the reacher from 40k samples): the product
``A(s) s`` must be learned to the data's full precision by the network. Here the bulk is exact
linear algebra and the network only learns the small nonlinear remainder.
"""
from __future__ import annotations

import copy
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._validate import check_tensor
from .base import Context
from .dynamics import Dynamics, train_epoch


def sequence_windows(states: np.ndarray, next_states: np.ndarray, actions: np.ndarray, episode_ids: np.ndarray,
                     horizon: int, stride: int = 1) -> Tuple[Tensor, Tensor]:
    """Every ``horizon``-step window inside an episode of a low-level dataset's arrays.

    Args: ``states``, ``next_states`` ``(N, n)``, ``actions`` ``(N, m)``, ``episode_ids`` ``(N,)``
    (episodes are contiguous runs).
    Returns: ``x (W, horizon + 1, n)`` observed states and ``u (W, horizon, m)`` actions, float64.
    """
    ep = np.asarray(episode_ids)
    n_rows = ep.shape[0]
    starts = np.arange(0, max(0, n_rows - horizon + 1), stride)
    starts = starts[ep[starts] == ep[np.minimum(starts + horizon - 1, n_rows - 1)]]
    rows = starts[:, None] + np.arange(horizon)[None]
    x = np.concatenate([states[rows], next_states[rows[:, -1]][:, None]], axis=1)
    return torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(actions[rows], dtype=torch.float64)


class LearnedDynamics(Dynamics):
    """``forward(state (B, n), action (B, m), context=None) -> next_state (B, n)``, in the input's dtype.

    Args:
        state_dim, action_dim: ``n``, ``m``.
        hidden: widths of the correction MLP (SiLU); ``()`` gives a purely linear model.
        drop_dims: state dimensions the dynamics are invariant to (left out of the MLP input;
            still in the linear part), e.g. the reacher's unbounded base joint angle.
    """

    def __init__(self, state_dim: int, action_dim: int, hidden: Sequence[int] = (128, 128),
                 drop_dims: Sequence[int] = ()) -> None:
        super().__init__()
        self.n, self.m = int(state_dim), int(action_dim)
        bad = [d for d in drop_dims if not 0 <= int(d) < self.n]
        if bad:
            raise ValueError(f"drop_dims entries must be in [0, {self.n}), got {bad}")
        self.keep = [i for i in range(self.n) if i not in set(int(d) for d in drop_dims)]
        self.hidden = tuple(int(h) for h in hidden)
        self.A = nn.Parameter(torch.eye(self.n, dtype=torch.float64))
        self.B = nn.Parameter(torch.zeros(self.n, self.m, dtype=torch.float64))
        self.c = nn.Parameter(torch.zeros(self.n, dtype=torch.float64))
        layers, width = [], len(self.keep)
        for h in self.hidden:
            layers += [nn.Linear(width, h, dtype=torch.float64), nn.SiLU()]
            width = h
        out = self.n * (1 + self.m)
        self.net = nn.Sequential(*layers, nn.Linear(width, out, dtype=torch.float64)) if self.hidden else None
        if self.net is not None:
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)
        self.register_buffer("in_mean", torch.zeros(len(self.keep), dtype=torch.float64))
        self.register_buffer("in_std", torch.ones(len(self.keep), dtype=torch.float64))
        self.register_buffer("u_scale", torch.ones(self.m, dtype=torch.float64))
        self.register_buffer("out_scale", torch.ones(self.n, dtype=torch.float64))

    def _correction(self, state: Tensor, action: Tensor) -> Tensor:
        h = (state[:, self.keep] - self.in_mean.to(state)) / self.in_std.to(state)
        for layer in self.net:
            h = F.linear(h, layer.weight.to(h), layer.bias.to(h)) if isinstance(layer, nn.Linear) else layer(h)
        f, G = h[:, : self.n], h[:, self.n :].reshape(-1, self.n, self.m)
        u = action / self.u_scale.to(action)
        return (f + (G @ u.unsqueeze(-1)).squeeze(-1)) * self.out_scale.to(state)

    def forward(self, state: Tensor, action: Tensor, context: Optional[Context] = None) -> Tensor:
        out = state @ self.A.to(state).T + action @ self.B.to(state).T + self.c.to(state)
        return out if self.net is None else out + self._correction(state, action)

    def linearization(self, state: Tensor) -> Tuple[Tensor, Tensor]:
        """``(A (B, n, n), B (B, n, m))``: Jacobians of the model at ``(state, u = 0)`` (for an LQR)."""
        check_tensor("state", state, ("B", self.n))
        u = torch.zeros(state.shape[0], self.m, dtype=state.dtype, device=state.device)
        f = lambda x, a: self(x[None], a[None])[0]  # noqa: E731
        with torch.no_grad():
            A, B = torch.func.vmap(torch.func.jacrev(f, argnums=(0, 1)))(state.detach(), u)
        return A, B

    def rollout_error(self, x: Tensor, u: Tensor) -> Tensor:
        """Per-window prediction error ``(W, H, n)`` of an open-loop rollout on the observed actions."""
        pred, errs = x[:, 0], []
        for l in range(u.shape[1]):
            pred = self(pred, u[:, l])
            errs.append(pred - x[:, l + 1])
        return torch.stack(errs, 1)

    def fit(self, x: Tensor, u: Tensor, epochs: int = 300, batch_size: int = 1024, lr: float = 1e-3,
            val_fraction: float = 0.1, patience: int = 30, seed: int = 0, progress: bool = True) -> Dict[str, list]:
        """Fit on windows ``x (W, H + 1, n)``, ``u (W, H, m)`` (see :func:`sequence_windows`).

        1. least squares for ``A, B, c`` on the one-step pairs; 2. Adam on the normalised squared
        H-step rollout error (all parameters), held-out ``val_fraction`` of windows, best held-out
        epoch kept, early stop after ``patience`` epochs. Seeded. Returns the loss history.
        """
        check_tensor("x", x, ("W", None, self.n))
        check_tensor("u", u, (x.shape[0], x.shape[1] - 1, self.m))
        if x.shape[0] < 2:
            raise ValueError(f"fit needs at least 2 windows, got {x.shape[0]}")
        x, u = x.double(), u.double()
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(x.shape[0], generator=g)
        n_val = max(1, int(round(val_fraction * x.shape[0])))
        tr, va = perm[n_val:], perm[:n_val]
        # 1. linear least squares on the one-step pairs of the training windows
        s0, a0, s1 = x[tr, :-1].reshape(-1, self.n), u[tr].reshape(-1, self.m), x[tr, 1:].reshape(-1, self.n)
        Phi = torch.cat([s0, a0, torch.ones(s0.shape[0], 1, dtype=s0.dtype, device=s0.device)], 1)
        # normal equations: bit-reproducible (LAPACK's lstsq differed in the last ulp between identical calls)
        G = Phi.T @ Phi
        W = torch.linalg.solve(G + 1e-12 * G.diagonal().mean() * torch.eye(G.shape[0], dtype=G.dtype, device=G.device), Phi.T @ s1)
        resid = s1 - Phi @ W
        with torch.no_grad():
            self.A.copy_(W[: self.n].T)
            self.B.copy_(W[self.n : self.n + self.m].T)
            self.c.copy_(W[-1])
            self.in_mean.copy_(s0[:, self.keep].mean(0))
            self.in_std.copy_(s0[:, self.keep].std(0).clamp_min(1e-8))
            self.u_scale.copy_(a0.std(0).clamp_min(1e-8))
            self.out_scale.copy_(resid.std(0).clamp_min(1e-12))
        scale = (x[tr, 1:] - x[tr, :-1]).reshape(-1, self.n).std(0).clamp_min(1e-12)  # per-dim error unit
        history: Dict[str, list] = {"train_loss": [], "val_loss": [], "linear_val_loss": []}

        def loss_of(idx: Tensor) -> Tensor:
            return (self.rollout_error(x[idx], u[idx]) / scale).pow(2).mean()

        with torch.no_grad():
            history["linear_val_loss"].append(float(loss_of(va)))
        if self.net is None:
            return history
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for layer in self.net[:-1]:
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()
        opt = torch.optim.Adam([{"params": self.net.parameters(), "lr": lr},
                                {"params": [self.A, self.B, self.c], "lr": lr * 1e-2}])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        best, best_state, since = history["linear_val_loss"][0], copy.deepcopy(self.state_dict()), 0
        for _ in tqdm(range(epochs), desc="learned dynamics", unit="epoch", disable=not progress):
            train_loss = train_epoch(loss_of, tr, batch_size, opt, g)
            sched.step()
            with torch.no_grad():
                v = float(loss_of(va))
            history["train_loss"].append(train_loss)
            history["val_loss"].append(v)
            if v < best:
                best, best_state, since = v, copy.deepcopy(self.state_dict()), 0
            else:
                since += 1
                if since >= patience:
                    break
        self.load_state_dict(best_state)
        return history
