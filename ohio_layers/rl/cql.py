"""Conservative Q-Learning (CQL) on top of SAC, with the Cal-QL calibration option.

References:
    Kumar, Zhou, Tucker, Levine. "Conservative Q-Learning for Offline Reinforcement Learning", NeurIPS 2020.
    Nakamoto et al. "Cal-QL: Calibrated Offline RL Pre-Training for Efficient Online Fine-Tuning", NeurIPS 2023.

Critic loss = SAC's TD loss + ``cql_alpha * sum_i (T logsumexp_j (Q_i(s, a_j) - log mu(a_j)) / T - Q_i(s, a_data))``
over ``num_samples`` actions per state from each of: uniform on the action box, ``pi(.|s)`` and
``pi(.|s')`` (importance-weighted by their densities in the unit box; the policy samples carry no
gradient). With ``calql=True`` the Q-values of the policy samples are lower-bounded by the
Monte-Carlo return-to-go of the row, ``max(Q_i(s, a_pi), mc_returns)``, so the push-down never goes
below the behaviour policy's value (the dataset needs ``mc_returns``; see :func:`add_mc_returns`).
Actor and temperature losses are SAC's (with its optional behaviour-cloning term ``bc_weight``);
:meth:`~ohio_layers.rl.sac.SAC.fit_online` fine-tunes online (Cal-QL keeps the regulariser online
and computes ``mc_returns`` of online episodes).
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Dict, Optional, Tuple, Type

import numpy as np
import torch
from torch import Tensor

from ..data.dataset import Dataset
from .base import Batch
from .sac import SAC, SACConfig

__all__ = ["CQLConfig", "CQL", "compute_mc_returns", "add_mc_returns", "mc_chain_offset"]


@dataclasses.dataclass
class CQLConfig(SACConfig):
    """CQL / Cal-QL settings (plus :class:`~ohio_layers.rl.sac.SACConfig`).

    Attributes:
        cql_alpha: weight of the conservative term.
        num_samples: sampled actions per state per proposal (uniform, pi(s), pi(s')).
        cql_temperature: temperature ``T`` of the logsumexp.
        calql: lower-bound the policy-sample Q-values by ``mc_returns`` (Cal-QL).
        importance_sampling: subtract each proposal's log-density inside the logsumexp (CQL(H) with
            importance sampling). ``False`` weighs every proposal equally, which is needed when the
            policy's densities are large (e.g. a concentrated Dirichlet on the simplex: ``log pi``
            of +30 makes ``exp(Q - log pi)`` vanish, so the penalty never reaches the actions the
            actor actually proposes and the critic overestimates them).
    """

    cql_alpha: float = 5.0
    num_samples: int = 10
    cql_temperature: float = 1.0
    calql: bool = False
    importance_sampling: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cql_alpha < 0:
            raise ValueError(f"cql_alpha must be >= 0, got {self.cql_alpha}")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.cql_temperature <= 0:
            raise ValueError(f"cql_temperature must be > 0, got {self.cql_temperature}")


class CQL(SAC):
    """CQL(H) with importance sampling; ``config.calql`` switches on the Cal-QL lower bound."""

    config_class: ClassVar[Type[CQLConfig]] = CQLConfig
    config: CQLConfig

    def required_extra_keys(self) -> Tuple[str, ...]:
        return ("mc_returns",) if self.config.calql else ()

    def random_actions(self, count: int, like: Tensor) -> Tuple[Tensor, Tensor]:
        """Uniform proposals ``(count, da)`` (env scale) and their log-density ``(count,)`` in the unit box.

        Default: uniform on the action box; subclasses with other action sets (e.g. the simplex)
        override it, with densities measured like :meth:`sample_unit`'s.
        """
        u = torch.rand(count, self.action_dim, device=like.device, dtype=like.dtype) * 2.0 - 1.0
        logp = torch.full((count,), -self.action_dim * math.log(2.0), device=like.device, dtype=like.dtype)
        return self.actor.scaler.to_env(u), logp

    def conservative_penalty(self, batch: Batch, q_data: Optional[Tuple[Tensor, Tensor]] = None) -> Dict[str, Tensor]:
        """``{"penalty": sum_i (lse_i - Q_i(s, a_data)).mean(), "lse": ..., "q_data": ...}``; reaches only ``self.q``.

        ``q_data``: the critics' ``(Q_1, Q_2)(s, a_data)``, each ``(B,)``, when already computed (the
        TD loss has them); otherwise they are evaluated here.
        """
        c = self.config
        obs, next_obs = batch["observations"], batch["next_observations"]
        b, n = obs.shape[0], c.num_samples
        with torch.no_grad():
            rand_a, rand_logp = self.random_actions(b * n, obs)
            pi_a, pi_logp = self.sample_unit_n(obs, n)
            next_a, next_logp = self.sample_unit_n(next_obs, n)
        # one critic pass per proposal: (B n)-row activations stay in cache, one 3 B n-row pass does not.
        # (Sharing the state part of the first layer across the n actions was measured 6 % slower in
        # float32 and 15 % in bf16: the broadcast add and its reduction cost more than the GEMM saved.)
        obs_rep = obs.repeat_interleave(n, 0)
        q_props = [self.q(obs_rep, a) for a in (rand_a, pi_a, next_a)]
        logps = torch.stack([rand_logp, pi_logp, next_logp]).view(3, b, n)
        if q_data is None:
            q_data = self.q(obs, batch["actions"])
        lower: Optional[Tensor] = batch["mc_returns"].view(1, b, 1) if c.calql else None
        penalty = obs.new_zeros((), dtype=torch.float32)
        lses = []
        for i in range(2):
            q = torch.stack([qp[i] for qp in q_props]).view(3, b, n).float()
            if lower is not None:  # Cal-QL: policy proposals (rows 1, 2) bounded below by the MC return
                q = torch.cat([q[:1], torch.maximum(q[1:], lower)])
            cat = (q - logps if c.importance_sampling else q).permute(1, 0, 2).reshape(b, 3 * n)
            lse = c.cql_temperature * torch.logsumexp(cat / c.cql_temperature, dim=1)
            penalty = penalty + (lse - q_data[i]).mean()
            lses.append(lse.detach().mean())
        return {"penalty": penalty, "lse": torch.stack(lses).mean(), "q_data": 0.5 * (q_data[0] + q_data[1]).detach().mean()}

    def critic_loss(self, batch: Batch) -> Dict[str, Tensor]:
        """SAC's TD loss plus ``cql_alpha`` times the penalty, sharing the critics' pass on the data actions."""
        td, q1, q2 = self.td_loss(batch)
        cons = self.conservative_penalty(batch, (q1, q2))
        return {"loss": td + self.config.cql_alpha * cons["penalty"], "q": 0.5 * (q1 + q2).detach().mean(),
                "cql_penalty": cons["penalty"].detach()}


def mc_chain_offset(dataset: Dataset) -> int:
    """Rows between a k-step window and the one starting k low-level steps later (1 unless overlapping).

    Relabelled data records ``k`` and ``stride`` in its metadata; windows ``stride`` apart overlap
    when ``stride < k``, and the return of a window continues with the window ``k / stride`` rows
    on. A stride that does not divide ``k`` leaves no such window, so it is refused.
    """
    k, stride = dataset.metadata.get("k"), dataset.metadata.get("stride")
    if k is None or stride is None or int(stride) == int(k):
        return 1
    k, stride = int(k), int(stride)
    if stride < 1 or k % stride != 0:
        raise ValueError(f"Monte-Carlo returns need stride to divide k (the window k steps later must be a row), "
                         f"got metadata k={k}, stride={stride}")
    return k // stride


def compute_mc_returns(dataset: Dataset, discount: float = 0.99, discount_key: Optional[str] = None) -> np.ndarray:
    """Discounted returns-to-go ``(N,)`` per episode: ``G_t = r_t + gamma_t (1 - d_t) G_{t+k}``.

    Episodes are the contiguous runs of ``episode_ids`` (rows in time order, e.g. the relabelled
    k-step rows with ``gamma`` per high-level step). Each row continues with the row whose window
    starts where its own ends (:func:`mc_chain_offset`: the next row, or ``k / stride`` rows on for
    overlapping windows). A ``"discounts"`` column (relabelled data) is used when ``discount_key`` is
    not given. Returns after a truncated episode's last window are taken as 0 (a lower
    bound for non-negative rewards).
    """
    dataset.require(["rewards", "terminals", "episode_ids"])
    r = np.asarray(dataset["rewards"], dtype=np.float64).reshape(-1)
    d = np.asarray(dataset["terminals"], dtype=np.float64).reshape(-1)
    if discount_key is None and "discounts" in dataset:  # the per-row gamma**k of relabelled data wins
        discount_key = "discounts"
    g_t = np.asarray(dataset[discount_key], dtype=np.float64).reshape(-1) if discount_key else np.full(r.shape, discount)
    step = mc_chain_offset(dataset)
    out = np.zeros_like(r)
    for rows in dataset.episodes():
        for j in range(len(rows) - 1, -1, -1):
            i = rows[j]
            tail = out[rows[j + step]] if j + step < len(rows) else 0.0
            out[i] = r[i] + g_t[i] * (1.0 - d[i]) * tail
    return out


def add_mc_returns(dataset: Dataset, discount: float = 0.99, key: str = "mc_returns",
                   discount_key: Optional[str] = None) -> Dataset:
    """A copy of ``dataset`` with :func:`compute_mc_returns` under ``key`` (needed by Cal-QL)."""
    arrays = dict(dataset.arrays)
    arrays[key] = compute_mc_returns(dataset, discount, discount_key)
    return Dataset(arrays, dict(dataset.metadata))
