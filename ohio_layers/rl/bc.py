"""Behaviour cloning of the dataset actions with the squashed Gaussian actor.

Two losses (``BCConfig.loss``):

* ``"nll"``: ``L(phi) = -E_{(s,a)~D} [log pi_phi(a|s)]`` with the exact tanh-squashed log-density,
  so the trained distribution is the one deployed (``scale(tanh(mu(s)))`` deterministically).
* ``"mse"``: ``L(phi) = E ||tanh(mu(s)) - unit(a)||^2``, the squared error of the deployed
  deterministic action in the unit box. Its minimiser is the conditional *mean* of the labels,
  which is what noisy labels (e.g. z recovered through an ill-conditioned inverse) call for;
  the likelihood instead works in pre-tanh space, where labels near the bounds become large
  ``atanh`` values that dominate the fit.

Only ``observations`` and the action column are needed; rewards are ignored.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Dict, Optional, Type

import torch
from torch import Tensor

from ..data.dataset import Dataset
from .base import Agent, AgentConfig, Batch, TransitionSampler, adam
from .fused import actor_nll_backward, actor_supported, float32_inputs
from .networks import TanhGaussianActor

__all__ = ["BCConfig", "BC", "bc_loss"]


@dataclasses.dataclass
class BCConfig(AgentConfig):
    """BC settings (plus :class:`~ohio_layers.rl.base.AgentConfig`).

    Attributes:
        loss: ``"nll"`` (likelihood) or ``"mse"`` (squared error of the deterministic action).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        log_std_min, log_std_max: clamp of the pre-tanh log-std.
        state_dependent_std: std from the network (else a learned vector).
    """

    loss: str = "nll"
    lr: float = 1e-3
    weight_decay: float = 0.0
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    state_dependent_std: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss not in ("nll", "mse"):
            raise ValueError(f"loss must be 'nll' or 'mse', got {self.loss!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")


def bc_loss(actor: TanhGaussianActor, batch: Batch, kind: str = "nll") -> Tensor:
    """``"nll"``: negative mean log-likelihood of ``batch["actions"]``; ``"mse"``: mean squared
    error of the deterministic action, in the unit box (each dimension scaled to [-1, 1])."""
    if kind == "mse":
        mean, _ = actor.dist_params(batch["observations"])
        target = actor.scaler.to_unit(batch["actions"]).clamp(-1.0, 1.0)
        return (torch.tanh(mean) - target).pow(2).sum(-1).mean()
    return -actor.log_prob(batch["observations"], batch["actions"]).mean()


class _ObsActionSampler(TransitionSampler):
    """Sampler for BC: only observations and actions are required."""

    def __init__(self, dataset: Dataset, action_key: str, obs_dim: int, action_dim: int, device: str) -> None:
        dataset.require(["observations", action_key])
        n = len(dataset)
        if n == 0:
            raise ValueError("dataset is empty")
        cols = {}
        for key, out, width in (("observations", "observations", obs_dim), (action_key, "actions", action_dim)):
            arr = torch.as_tensor(dataset[key], dtype=torch.float32, device=device)
            if arr.dim() != 2 or arr.shape[1] != width:
                raise ValueError(f"dataset[{key!r}] must have shape (N, {width}), got {tuple(arr.shape)}")
            if not bool(torch.isfinite(arr).all()):
                raise ValueError(f"dataset[{key!r}] contains NaN or inf")
            cols[out] = arr
        self.columns, self.size, self.device = cols, n, torch.device(device)


class BC(Agent):
    """Behaviour cloning with the tanh-squashed Gaussian actor."""

    config_class: ClassVar[Type[BCConfig]] = BCConfig
    config: BCConfig

    def _build(self) -> None:
        c = self.config
        self.actor = TanhGaussianActor(self.obs_dim, self.action_dim, self.action_low, self.action_high, c.hidden,
                                       c.log_std_min, c.log_std_max, c.state_dependent_std)
        self.optimizers = {"actor": adam(self.actor.parameters(), lr=c.lr, weight_decay=c.weight_decay)}

    def make_sampler(self, dataset: Dataset, action_key: str = "actions", discount_key: Optional[str] = None) -> TransitionSampler:
        sampler = _ObsActionSampler(dataset, action_key, self.obs_dim, self.action_dim, self.config.device)
        self._warn_out_of_bounds(sampler.columns["actions"], action_key)
        return sampler

    def losses(self, batch: Batch) -> Dict[str, Tensor]:
        return {"loss_actor": bc_loss(self.actor, batch, self.config.loss)}

    def update_tensors(self, batch: Batch) -> Dict[str, Tensor]:
        """One Adam step on the loss; the NLL of a default actor (plain ReLU trunk) on the CPU in float32
        takes the autograd-free path of :mod:`~ohio_layers.rl.fused` (same gradients)."""
        if self.config.loss == "nll" and actor_supported(self.actor):
            kernels = self._fused_kernels({"actor": self.actor.net})
            if kernels is not None and float32_inputs(batch["observations"], batch["actions"]):
                loss = actor_nll_backward(self.actor, kernels["actor"], batch["observations"], batch["actions"])
                self._step_optimizers([("actor", self.actor)])
                self.step += 1
                return {"loss_actor": loss}
        with self.autocast():
            loss = bc_loss(self.actor, batch, self.config.loss)
        self._optimize("actor", loss, self.actor)
        self.step += 1
        return {"loss_actor": loss.detach()}
