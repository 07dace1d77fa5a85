"""Actor-critic building blocks shared by every offline/online RL algorithm in ``ohio_layers.rl``.

Conventions (batch-first, ``B`` = batch):

* observations ``(B, do)``; actions ``(B, da)`` always in the **environment scale**
  ``[action_low, action_high]`` (per dimension; e.g. the high-level goal ``z`` of the reacher has
  ``±8π`` on some entries). Networks map to/from ``[-1, 1]`` internally with :class:`ActionScaler`.
* every network owns an :class:`ObsNormalizer` (identity until statistics are set), so an actor
  can be deployed on raw observations on its own.
* :class:`TanhGaussianActor` is the *same* distribution in training and deployment:
  ``a = scale(tanh(x)), x ~ N(mu(s), sigma(s))``; :meth:`TanhGaussianActor.log_prob` is the exact
  density of ``a`` (change of variables through tanh and the affine scaling), and the
  deterministic action is ``scale(tanh(mu))``.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BoundLike = Union[float, Sequence[float], Tensor]

__all__ = ["MLP", "ObsNormalizer", "ActionScaler", "TanhGaussianActor", "TwinQ", "ValueNetwork", "bound_tensor"]


def bound_tensor(value: BoundLike, dim: int, name: str) -> Tensor:
    """A float32 ``(dim,)`` tensor from a scalar or a length-``dim`` sequence; raises naming ``name``."""
    t = torch.as_tensor(value, dtype=torch.float32).detach().clone()
    if t.dim() == 0:
        t = t.expand(dim).clone()
    if t.shape != (dim,):
        raise ValueError(f"{name} must be a scalar or have shape ({dim},), got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    return t


class MLP(nn.Module):
    """``in_dim -> hidden... -> out_dim`` with an activation between layers (none at the output).

    Args:
        in_dim, out_dim: input/output sizes.
        hidden: sizes of the hidden layers, e.g. ``(256, 256)``.
        activation: module class used between layers (default ``nn.ReLU``).
        layer_norm: insert ``nn.LayerNorm`` after each hidden linear layer.
    Shapes: ``(B, in_dim) -> (B, out_dim)``.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (256, 256),
                 activation: Type[nn.Module] = nn.ReLU, layer_norm: bool = False) -> None:
        super().__init__()
        for name, v in (("in_dim", in_dim), ("out_dim", out_dim)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if any((not isinstance(h, int)) or h < 1 for h in hidden):
            raise ValueError(f"hidden must be a sequence of positive ints, got {hidden!r}")
        layers = []
        last = in_dim
        for h in hidden:
            layers.append(nn.Linear(last, h))
            if layer_norm:
                layers.append(nn.LayerNorm(h))
            layers.append(nn.ReLU(inplace=True) if activation is nn.ReLU else activation())  # in place: no new buffer
            last = h
        layers.append(nn.Linear(last, out_dim))
        self.net = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: Tensor) -> Tensor:
        # under autocast the layers run in bf16; the output returns to the input's dtype, so the
        # losses and distributions downstream stay in full precision
        return self.net(x).to(x.dtype)


class ObsNormalizer(nn.Module):
    """``(obs - mean) / std`` with ``mean, std (do,)`` stored as buffers (identity by default).

    Set the statistics from data with :meth:`set_stats` (``std`` is floored at ``eps``).
    """

    def __init__(self, obs_dim: int, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(obs_dim))
        self.register_buffer("std", torch.ones(obs_dim))

    @torch.no_grad()
    def set_stats(self, mean: Tensor, std: Tensor) -> None:
        """Copy ``mean, std (do,)`` into the buffers."""
        mean = torch.as_tensor(mean, dtype=self.mean.dtype).reshape(-1)
        std = torch.as_tensor(std, dtype=self.std.dtype).reshape(-1)
        if mean.shape != self.mean.shape or std.shape != self.std.shape:
            raise ValueError(f"mean and std must have shape {tuple(self.mean.shape)}, got {tuple(mean.shape)} / {tuple(std.shape)}")
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(self.eps))

    def forward(self, obs: Tensor) -> Tensor:
        return (obs - self.mean) / self.std


class ActionScaler(nn.Module):
    """Affine map between ``[-1, 1]^da`` and the box ``[low, high]`` (buffers ``low, high (da,)``)."""

    def __init__(self, low: BoundLike, high: BoundLike, action_dim: int) -> None:
        super().__init__()
        low_t, high_t = bound_tensor(low, action_dim, "action_low"), bound_tensor(high, action_dim, "action_high")
        if bool((low_t >= high_t).any()):
            raise ValueError(f"action_low must be < action_high in every dimension, got {low_t.tolist()} / {high_t.tolist()}")
        self.register_buffer("low", low_t)
        self.register_buffer("high", high_t)

    @property
    def scale(self) -> Tensor:
        """Half-widths ``(da,)``."""
        return 0.5 * (self.high - self.low)

    @property
    def center(self) -> Tensor:
        return 0.5 * (self.high + self.low)

    def to_env(self, u: Tensor) -> Tensor:
        """``[-1, 1] -> [low, high]``; ``(B, da) -> (B, da)``."""
        return self.center + self.scale * u

    def to_unit(self, a: Tensor) -> Tensor:
        """``[low, high] -> [-1, 1]``; ``(B, da) -> (B, da)``."""
        return (a - self.center) / self.scale

    def log_abs_det(self) -> Tensor:
        """``sum log(scale)``: log-Jacobian of :meth:`to_env` (scalar)."""
        return torch.log(self.scale).sum()


def _log1m_tanh_sq(x: Tensor) -> Tensor:
    """Stable ``log(1 - tanh(x)^2) = 2 (log 2 - x - softplus(-2x))``."""
    return 2.0 * (math.log(2.0) - x - F.softplus(-2.0 * x))


class TanhGaussianActor(nn.Module):
    """Squashed Gaussian policy ``a = scale(tanh(x))``, ``x ~ N(mu(s), diag sigma(s)^2)``.

    Args:
        obs_dim, action_dim: ``do``, ``da``.
        action_low, action_high: per-dimension bounds of the action (scalars or ``(da,)``).
        hidden: hidden sizes of the trunk.
        log_std_min, log_std_max: clamp of ``log sigma`` (pre-tanh).
        state_dependent_std: ``sigma(s)`` from the network (True) or a learned ``(da,)`` vector.
        atanh_eps: dataset actions are clamped to ``[-1 + eps, 1 - eps]`` (unit scale) before
            ``atanh`` in :meth:`log_prob`, so actions on the bounds give finite log-likelihoods.
    """

    def __init__(self, obs_dim: int, action_dim: int, action_low: BoundLike = -1.0, action_high: BoundLike = 1.0,
                 hidden: Sequence[int] = (256, 256), log_std_min: float = -5.0, log_std_max: float = 2.0,
                 state_dependent_std: bool = True, atanh_eps: float = 1e-6) -> None:
        super().__init__()
        if not log_std_min < log_std_max:
            raise ValueError(f"log_std_min must be < log_std_max, got {log_std_min} / {log_std_max}")
        if not 0.0 < atanh_eps < 0.5:
            raise ValueError(f"atanh_eps must be in (0, 0.5), got {atanh_eps}")
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.log_std_min, self.log_std_max, self.atanh_eps = log_std_min, log_std_max, atanh_eps
        self.state_dependent_std = state_dependent_std
        self.normalizer = ObsNormalizer(obs_dim)
        self.scaler = ActionScaler(action_low, action_high, action_dim)
        self.net = MLP(obs_dim, 2 * action_dim if state_dependent_std else action_dim, hidden)
        if not state_dependent_std:
            self.log_std = nn.Parameter(torch.zeros(action_dim))

    def dist_params(self, obs: Tensor) -> Tuple[Tensor, Tensor]:
        """Pre-tanh ``mean, log_std``, each ``(B, da)``."""
        out = self.net(self.normalizer(obs))
        if self.state_dependent_std:
            mean, log_std = out.chunk(2, dim=-1)
        else:
            mean, log_std = out, self.log_std.expand_as(out)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def _log_prob_pre(self, mean: Tensor, log_std: Tensor, x: Tensor) -> Tensor:
        """Log-density ``(B,)`` of the env-scale action ``scale(tanh(x))`` given pre-tanh ``x``."""
        gauss = (-0.5 * ((x - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        return gauss - _log1m_tanh_sq(x).sum(-1) - self.scaler.log_abs_det()

    def log_prob(self, obs: Tensor, action: Tensor) -> Tensor:
        """Exact log-density ``(B,)`` of env-scale ``action (B, da)`` under the squashed policy at ``obs (B, do)``.

        ``log p(a) = log N(atanh(u); mu, sigma) - sum log(1 - u^2) - sum log(scale)`` with
        ``u = unit(a)`` clamped to ``[-1 + eps, 1 - eps]``.
        """
        mean, log_std = self.dist_params(obs)
        u = self.scaler.to_unit(action).clamp(-1.0 + self.atanh_eps, 1.0 - self.atanh_eps)
        return self._log_prob_pre(mean, log_std, torch.atanh(u))

    def sample(self, obs: Tensor, deterministic: bool = False) -> Tuple[Tensor, Tensor]:
        """Reparameterised ``(action (B, da), log_prob (B,))``; ``deterministic`` gives ``scale(tanh(mu))``."""
        mean, log_std = self.dist_params(obs)
        x = mean if deterministic else mean + log_std.exp() * torch.randn_like(mean)
        return self.scaler.to_env(torch.tanh(x)), self._log_prob_pre(mean, log_std, x)

    def sample_n(self, obs: Tensor, n: int) -> Tuple[Tensor, Tensor]:
        """``n`` samples per state from one pass over ``obs (B, do)``: ``(actions (B n, da), log_probs (B n,))``,
        ordered like ``sample(obs.repeat_interleave(n, 0))`` (and drawing the same noise)."""
        mean, log_std = self.dist_params(obs)
        mean, log_std = mean.repeat_interleave(n, 0), log_std.repeat_interleave(n, 0)
        x = mean + log_std.exp() * torch.randn_like(mean)
        return self.scaler.to_env(torch.tanh(x)), self._log_prob_pre(mean, log_std, x)

    def forward(self, obs: Tensor, deterministic: bool = True) -> Tensor:
        """Action ``(B, da)`` in the environment scale (deterministic by default)."""
        mean, log_std = self.dist_params(obs)
        x = mean if deterministic else mean + log_std.exp() * torch.randn_like(mean)
        return self.scaler.to_env(torch.tanh(x))


class TwinQ(nn.Module):
    """Two independent critics ``Q_i(s, a)``; actions enter in unit scale.

    Shapes: ``obs (B, do), action (B, da) -> (q1 (B,), q2 (B,))``.
    """

    def __init__(self, obs_dim: int, action_dim: int, action_low: BoundLike = -1.0, action_high: BoundLike = 1.0,
                 hidden: Sequence[int] = (256, 256), layer_norm: bool = False) -> None:
        super().__init__()
        self.normalizer = ObsNormalizer(obs_dim)
        self.scaler = ActionScaler(action_low, action_high, action_dim)
        self.q1 = MLP(obs_dim + action_dim, 1, hidden, layer_norm=layer_norm)
        self.q2 = MLP(obs_dim + action_dim, 1, hidden, layer_norm=layer_norm)

    def forward(self, obs: Tensor, action: Tensor) -> Tuple[Tensor, Tensor]:
        x = torch.cat([self.normalizer(obs), self.scaler.to_unit(action)], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)

    def min(self, obs: Tensor, action: Tensor) -> Tensor:
        """``min(Q1, Q2)`` ``(B,)``."""
        q1, q2 = self(obs, action)
        return torch.minimum(q1, q2)


class ValueNetwork(nn.Module):
    """State value ``V(s)``: ``(B, do) -> (B,)``."""

    def __init__(self, obs_dim: int, hidden: Sequence[int] = (256, 256), layer_norm: bool = False) -> None:
        super().__init__()
        self.normalizer = ObsNormalizer(obs_dim)
        self.net = MLP(obs_dim, 1, hidden, layer_norm=layer_norm)

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(self.normalizer(obs)).squeeze(-1)
