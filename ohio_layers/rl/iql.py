"""Implicit Q-Learning (IQL).

References:
    Kostrikov, Nair, Levine. "Offline Reinforcement Learning with Implicit Q-Learning", ICLR 2022.

Losses (each a separate function; each reaches only its own network)::

    L_V(psi)   = E_{(s,a)~D} [ L2_tau( min_i Qbar_i(s, a) - V_psi(s) ) ]          # at s, NOT s'
    L_Q(theta) = E_{(s,a,r,s',d)~D} [ sum_i (r + gamma (1 - d) V_psi(s') - Q_theta_i(s, a))^2 ]
    L_pi(phi)  = -E_{(s,a)~D} [ min(exp(beta (min_i Qbar_i(s, a) - V_psi(s))), w_max) log pi_phi(a|s) ]

with ``L2_tau(u) = |tau - 1(u < 0)| u^2``, ``Qbar`` the Polyak-averaged target critics and
``log pi`` the exact log-likelihood of the tanh-squashed Gaussian actor that is also deployed.
(The OHIO reference code evaluated the value target and advantage at ``s'``; a test in
``tests/test_rl.py`` guards against that.)
"""
from __future__ import annotations

import copy
import dataclasses
from typing import ClassVar, Dict, Optional, Type

import torch
from torch import Tensor, nn

from .base import Agent, AgentConfig, Batch, adam, soft_update
from .fused import (ReluMLPKernel, actor_nll_backward, actor_supported, float32_inputs, iql_value_grad,
                    iql_weights_and_targets, twin_squared_error_grad)
from .networks import TanhGaussianActor, TwinQ, ValueNetwork

__all__ = ["IQLConfig", "IQL", "expectile_loss", "iql_value_loss", "iql_critic_loss", "iql_actor_loss"]


@dataclasses.dataclass
class IQLConfig(AgentConfig):
    """IQL settings (plus those of :class:`~ohio_layers.rl.base.AgentConfig`).

    Attributes:
        expectile: ``tau`` of the expectile regression of ``V`` (0.5 = mean, -> 1 = max).
        temperature: inverse temperature ``beta`` of the advantage weights.
        max_weight: clamp of ``exp(beta * adv)``.
        tau: Polyak rate of the target critics.
        actor_lr, critic_lr, value_lr: Adam learning rates.
        log_std_min, log_std_max: clamp of the actor's pre-tanh log-std.
        state_dependent_std: actor std from the network (else a learned vector, as in the paper).
    """

    expectile: float = 0.7
    temperature: float = 3.0
    max_weight: float = 100.0
    tau: float = 0.005
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    state_dependent_std: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.expectile < 1.0:
            raise ValueError(f"expectile must be in (0, 1), got {self.expectile}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.max_weight <= 0:
            raise ValueError(f"max_weight must be > 0, got {self.max_weight}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau}")
        for name in ("actor_lr", "critic_lr", "value_lr"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


def expectile_loss(diff: Tensor, expectile: float) -> Tensor:
    """Mean asymmetric squared loss ``|tau - 1(diff < 0)| diff^2`` of ``diff = target - prediction (B,)``."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.pow(2)).mean()


def iql_value_loss(value: ValueNetwork, target_q: TwinQ, batch: Batch, expectile: float,
                   q_target: Optional[Tensor] = None) -> Tensor:
    """Expectile regression of ``V(s)`` towards ``min_i Qbar_i(s, a)`` -- both at the *current* state ``s``.

    ``q_target (B,)``: ``min_i Qbar_i(s, a)`` if already computed (else evaluated here).
    """
    obs = batch["observations"]
    if q_target is None:
        with torch.no_grad():
            q_target = target_q.min(obs, batch["actions"])
    return expectile_loss(q_target - value(obs), expectile)


def iql_critic_loss(q: TwinQ, value: ValueNetwork, batch: Batch, next_value: Optional[Tensor] = None) -> Tensor:
    """Squared TD error of both critics towards ``r + gamma_row (1 - d) V(s')`` (``V`` not trained here).

    ``next_value (B,)``: ``V(s')`` if already computed (else evaluated here).
    """
    with torch.no_grad():
        if next_value is None:
            next_value = value(batch["next_observations"])
        target = batch["rewards"] + batch["discounts"] * (1.0 - batch["terminals"]) * next_value
    q1, q2 = q(batch["observations"], batch["actions"])
    return (q1 - target).pow(2).mean() + (q2 - target).pow(2).mean()


def iql_actor_loss(actor: TanhGaussianActor, target_q: TwinQ, value: ValueNetwork, batch: Batch,
                   temperature: float, max_weight: float, q_target: Optional[Tensor] = None,
                   state_value: Optional[Tensor] = None) -> Dict[str, Tensor]:
    """Advantage-weighted regression; returns ``{"loss": ..., "weights": (B,), "advantages": (B,)}``.

    The advantage ``min_i Qbar_i(s, a) - V(s)`` is evaluated at the current state ``s``
    (``q_target``, ``state_value (B,)``: those two terms if already computed).
    """
    obs, act = batch["observations"], batch["actions"]
    with torch.no_grad():
        if q_target is None:
            q_target = target_q.min(obs, act)
        if state_value is None:
            state_value = value(obs)
        adv = q_target - state_value
        weights = torch.exp(temperature * adv).clamp(max=max_weight)
    loss = -(weights * actor.log_prob(obs, act)).mean()
    return {"loss": loss, "weights": weights, "advantages": adv}


class IQL(Agent):
    """Implicit Q-Learning agent (see the module docstring for the losses).

    Example:
        >>> agent = IQL.from_dataset(high_level_data, {"steps": 10_000}, action_key="z",
        ...                          action_low=controller.z_low, action_high=controller.z_high)  # doctest: +SKIP
        >>> agent.fit(high_level_data, action_key="z")  # doctest: +SKIP
        >>> z = agent.act(obs)  # doctest: +SKIP
    """

    config_class: ClassVar[Type[IQLConfig]] = IQLConfig
    config: IQLConfig

    def _build(self) -> None:
        c = self.config
        self.actor = self._make_actor()
        self.q = self._make_q()
        self.value = self._make_value()
        self.target_q = copy.deepcopy(self.q).requires_grad_(False)
        self.optimizers = {
            "actor": adam(self.actor.parameters(), lr=c.actor_lr),
            "q": adam(self.q.parameters(), lr=c.critic_lr),
            "value": adam(self.value.parameters(), lr=c.value_lr),
        }

    # network factories: subclasses (e.g. graph networks in ``ohio_layers.rl.gnn``) override these
    def _make_actor(self) -> nn.Module:
        """The policy: ``forward(obs, deterministic)``, ``log_prob(obs, action)``, ``sample(obs)``."""
        c = self.config
        return TanhGaussianActor(self.obs_dim, self.action_dim, self.action_low, self.action_high, c.hidden,
                                 c.log_std_min, c.log_std_max, c.state_dependent_std)

    def _make_q(self) -> nn.Module:
        """Twin critics: ``forward(obs, action) -> (q1, q2)`` and ``min(obs, action)``."""
        return TwinQ(self.obs_dim, self.action_dim, self.action_low, self.action_high, self.config.hidden)

    def _make_value(self) -> nn.Module:
        """State value ``(B, do) -> (B,)``."""
        return ValueNetwork(self.obs_dim, self.config.hidden)

    def losses(self, batch: Batch) -> Dict[str, Tensor]:
        """``{"loss_value", "loss_q", "loss_actor"}`` on one batch (no optimizer step)."""
        c = self.config
        return {
            "loss_value": iql_value_loss(self.value, self.target_q, batch, c.expectile),
            "loss_q": iql_critic_loss(self.q, self.value, batch),
            "loss_actor": iql_actor_loss(self.actor, self.target_q, self.value, batch, c.temperature, c.max_weight)["loss"],
        }

    def update_tensors(self, batch: Batch) -> Dict[str, Tensor]:
        """Value step, actor step (with the updated V), critic step, Polyak update of the targets.

        With the default networks (plain ReLU MLPs) on the CPU in float32 the same arithmetic runs
        without autograd (:meth:`_fused_update`, :mod:`~ohio_layers.rl.fused`)."""
        kernels = self._iql_kernels()
        if kernels is not None and float32_inputs(batch["observations"], batch["actions"], batch["next_observations"]):
            return self._fused_update(batch, kernels)
        c = self.config
        obs, b = batch["observations"], batch["observations"].shape[0]
        with self.autocast():  # Qbar(s, a) serves the V and the actor loss: Qbar changes only after the critic step
            with torch.no_grad():
                q_target = self.target_q.min(obs, batch["actions"])
            loss_v = iql_value_loss(self.value, self.target_q, batch, c.expectile, q_target)
        self._optimize("value", loss_v, self.value)
        with self.autocast():  # the updated V at s (advantage) and s' (TD target) in one pass
            with torch.no_grad():
                values = self.value(torch.cat([obs, batch["next_observations"]]))
            actor_out = iql_actor_loss(self.actor, self.target_q, self.value, batch, c.temperature, c.max_weight,
                                       q_target, values[:b])
            loss_q = iql_critic_loss(self.q, self.value, batch, values[b:])
        # the actor and critic losses reach disjoint networks (neither reads the other): one backward pass
        self._optimize_together([("actor", actor_out["loss"], self.actor), ("q", loss_q, self.q)])
        soft_update(self.target_q, self.q, c.tau)
        self.step += 1
        return {"loss_value": loss_v.detach(), "loss_q": loss_q.detach(), "loss_actor": actor_out["loss"].detach(),
                "advantage": actor_out["advantages"].detach().mean(), "weight": actor_out["weights"].detach().mean()}

    def _iql_kernels(self) -> Optional[Dict[str, ReluMLPKernel]]:
        """The fused path's kernels when every network is a default one with a plain ReLU MLP, else ``None``."""
        q, tq, v = self.q, self.target_q, self.value
        if not (actor_supported(self.actor) and type(q) is TwinQ and type(tq) is TwinQ and type(v) is ValueNetwork):
            return None
        return self._fused_kernels({"actor": self.actor.net, "q1": q.q1, "q2": q.q2, "value": v.net},
                                   {"tq1": tq.q1, "tq2": tq.q2})

    @torch.no_grad()
    def _fused_update(self, batch: Batch, k: Dict[str, ReluMLPKernel]) -> Dict[str, Tensor]:
        """:meth:`update_tensors` without autograd: the same losses, their gradients in closed form (their
        element-wise parts as compiled loops when :func:`~ohio_layers.rl.fused_kernels.compiled_enabled`)."""
        c = self.config
        obs, act = batch["observations"], batch["actions"]
        tq, q = self.target_q, self.q
        # cast once to the kernels' dtype for both twin networks (a no-op in float32)
        x_t = torch.cat([tq.normalizer.forward(obs), tq.scaler.to_unit(act)], 1).to(k["tq1"].dtype)
        q1_t, q2_t = k["tq1"].forward(x_t), k["tq2"].forward(x_t)  # distinct kernels: distinct buffers
        # value step: expectile regression of V(s) towards min Qbar(s, a)
        v = k["value"].forward(self.value.normalizer.forward(obs), keep=True)
        loss_v, q_target, grad_v = iql_value_grad(q1_t, q2_t, v, c.expectile)
        k["value"].backward(grad_v)
        self._step_optimizers([("value", self.value)])
        # the updated V at s (advantage) and s' (TD target) in one pass
        both = torch.cat([obs, batch["next_observations"]])
        values = k["value"].forward(self.value.normalizer.forward(both))
        weights, target, adv, weight = iql_weights_and_targets(q_target, values, batch, c.temperature, c.max_weight)
        loss_a = actor_nll_backward(self.actor, k["actor"], obs, act, weights)
        x = torch.cat([q.normalizer.forward(obs), q.scaler.to_unit(act)], 1).to(k["q1"].dtype)
        loss_q, g1, g2 = twin_squared_error_grad(k["q1"].forward(x, keep=True), k["q2"].forward(x, keep=True), target)
        k["q1"].backward(g1)
        k["q2"].backward(g2)
        self._step_optimizers([("actor", self.actor), ("q", self.q)])
        soft_update(self.target_q, self.q, c.tau)
        self.step += 1
        return {"loss_value": loss_v, "loss_q": loss_q, "loss_actor": loss_a, "advantage": adv, "weight": weight}

    @torch.no_grad()
    def q_value(self, obs: Tensor, action: Tensor) -> Tensor:
        """``min_i Qbar_i(s, a)`` ``(B,)`` of the target critics."""
        return self.target_q.min(obs, action)
