"""Hierarchical agent = learned high-level actor ``obs -> z`` + known low-level controller.

For a controller of horizon ``k`` one high-level decision runs::

    z   = actor(obs_0)                                  # (B, dz), clamped to the controller's z bounds
    ctx = controller.context(state_0)
    a_l = controller.act(state_l, z, ctx, step=l)       # l = 0..k-1

:class:`HierarchicalAgent` is a stateless ``nn.Module``; the per-decision quantities live in a
:class:`Decision` the caller carries between low-level steps (nothing leaks between episodes or
batch members). :class:`HighLevelActionWrapper` turns a low-level gymnasium env into one whose
action is ``z`` and whose step runs the ``k`` low-level steps.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, SupportsFloat, Tuple, Union

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from .._validate import check_tensor
from ..lowlevel.base import Context, LowLevelController, check_actions
from .base import Agent

__all__ = ["Decision", "HierarchicalAgent", "HighLevelActionWrapper"]

ArrayLike = Union[np.ndarray, Tensor]


@dataclasses.dataclass
class Decision:
    """One high-level decision in progress.

    Attributes:
        z: ``(B, dz)`` high-level action (controller dtype).
        context: the controller's context from the decision's first state.
        step: index ``l`` of the next low-level step (``0..horizon``).
    """

    z: Tensor
    context: Context
    step: int = 0


def _as_batch(x: ArrayLike, dtype: torch.dtype, device: torch.device) -> Tuple[Tensor, bool]:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).to(device=device, dtype=dtype)
    single = t.dim() == 1
    return (t[None] if single else t), single


class HierarchicalAgent(nn.Module):
    """``state -> z = actor(obs) -> controller(state, z) -> low-level action``.

    Args:
        actor_or_agent: an :class:`~ohio_layers.rl.base.Agent` (its actor is used, deterministic
            or sampled) or any module/callable ``obs (B, do) -> z (B, dz)``.
        controller: the low-level controller; ``z`` is projected onto its bounds.
    """

    def __init__(self, actor_or_agent: Union[Agent, nn.Module, Callable[[Tensor], Tensor]], controller: LowLevelController) -> None:
        super().__init__()
        if not isinstance(controller, LowLevelController):
            raise TypeError(f"controller must be a LowLevelController, got {type(controller).__name__}")
        if isinstance(actor_or_agent, Agent):
            if actor_or_agent.action_dim != controller.z_dim:
                raise ValueError(f"actor_or_agent outputs {actor_or_agent.action_dim}-D actions but the controller's "
                                 f"z has {controller.z_dim} dimensions")
            self.actor: Any = actor_or_agent.actor
            self.obs_dim: Optional[int] = actor_or_agent.obs_dim
        elif callable(actor_or_agent):
            self.actor = actor_or_agent
            self.obs_dim = None
        else:
            raise TypeError(f"actor_or_agent must be an Agent, an nn.Module or a callable, got {type(actor_or_agent).__name__}")
        self.controller = controller

    @property
    def horizon(self) -> int:
        """Low-level steps ``k`` per high-level decision."""
        return self.controller.horizon

    def _actor_ref(self) -> Tuple[torch.device, torch.dtype]:
        """Device and dtype of the actor's parameters (float32 on the controller's device if none)."""
        if isinstance(self.actor, nn.Module):
            for p in self.actor.parameters():
                return p.device, p.dtype
        return self.controller.z_low.device, torch.float32

    def _check_obs(self, obs: Tensor) -> None:
        """``obs`` is a batch-first tensor; flat observations must have the agent's ``obs_dim``."""
        if not isinstance(obs, Tensor) or obs.dim() < 2:
            raise ValueError(f"obs must be a batch-first tensor (B, ...), got {getattr(obs, 'shape', type(obs).__name__)}")
        if self.obs_dim is not None and obs.dim() == 2 and obs.shape[1] != self.obs_dim:
            raise ValueError(f"obs must have shape (B, {self.obs_dim}) for this agent, got {tuple(obs.shape)}")

    def high_level(self, obs: Tensor, deterministic: bool = True) -> Tensor:
        """``z (B, dz)`` for ``obs (B, do)``, projected onto the controller's z bounds."""
        self._check_obs(obs)
        if isinstance(self.actor, nn.Module) and hasattr(self.actor, "sample"):
            z = self.actor(obs, deterministic=deterministic)
        else:
            z = self.actor(obs)
        check_tensor("z (actor output)", z, (obs.shape[0], self.controller.z_dim))
        return self.controller.clamp_z(z)

    def begin(self, obs: Tensor, state0: Tensor, deterministic: bool = True) -> Decision:
        """Start a decision: ``z = actor(obs)``, ``ctx = controller.context(state0)``; ``obs (B, do)``, ``state0 (B, ds)``."""
        check_tensor("state0", state0, ("B", self.controller.state_dim))
        self._check_obs(obs)
        if obs.shape[0] != state0.shape[0]:
            raise ValueError(f"obs and state0 must hold the same batch, got {obs.shape[0]} and {state0.shape[0]} rows")
        z = self.high_level(obs, deterministic).to(state0)
        return Decision(z, self.controller.context(state0), 0)

    def low_level(self, state: Tensor, decision: Decision, step: Optional[int] = None) -> Tensor:
        """Action ``(B, da)`` at low-level step ``step`` (default ``decision.step``) of ``decision``.

        Members the controller cannot serve come back as NaN rows (see
        :mod:`ohio_layers.lowlevel.base`); :meth:`act` raises on them instead.
        """
        step = decision.step if step is None else step
        if not 0 <= step < self.horizon:
            raise ValueError(f"step must be in [0, {self.horizon}), got {step}")
        return self.controller.act(state, decision.z.to(state), decision.context, step)

    def forward(self, obs: Tensor, state: Tensor) -> Tensor:
        """Differentiable first low-level action ``(B, da)`` of a new decision (``step 0``)."""
        return self.low_level(state, self.begin(obs, state))

    @torch.no_grad()
    def act(self, obs: ArrayLike, state: ArrayLike, decision: Optional[Decision] = None,
            deterministic: bool = True) -> Tuple[ArrayLike, Decision]:
        """Low-level action for one env step, carrying the decision explicitly.

        A new decision starts when ``decision`` is ``None`` or finished (``step == horizon``).
        ``obs (do,)|(B, do)``, ``state (ds,)|(B, ds)``; numpy in -> numpy out.

        Returns:
            ``(action, decision)`` with ``decision.step`` advanced by one.

        Example:
            >>> decision = None  # doctest: +SKIP
            >>> for t in range(T):  # doctest: +SKIP
            ...     a, decision = agent.act(obs, get_state(env), decision)
            ...     obs, r, term, trunc, _ = env.step(a)
        """
        as_numpy = not isinstance(state, Tensor)
        st, single = _as_batch(state, self.controller.z_low.dtype if as_numpy else state.dtype, self.controller.z_low.device)
        device, dtype = self._actor_ref()
        ob, _ = _as_batch(obs, dtype, device)
        if decision is None or decision.step >= self.horizon:
            decision = self.begin(ob, st, deterministic)
        a = check_actions(self.controller, self.low_level(st, decision), "HierarchicalAgent.act")
        decision = Decision(decision.z, decision.context, decision.step + 1)
        a = a[0] if single else a
        return (a.cpu().numpy() if as_numpy else a), decision


class HighLevelActionWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Expose the high-level action ``z`` as the action space of a low-level env.

    One ``step(z)`` computes ``ctx = controller.context(get_state(env))`` and then runs up to
    ``k = controller.horizon`` low-level steps with ``controller.act(state_l, z, ctx, l)``,
    summing the rewards (undiscounted, as in the relabelled datasets) and stopping early on
    termination or truncation. ``info`` is the last low-level step's, plus ``"low_level_steps"``.

    Args:
        env: the low-level env (Box action space of size ``controller.action_dim``).
        controller: the low-level controller.
        get_state: ``get_state(env) -> np.ndarray (ds,)``, the controller state of the env now.
        clip_z: project ``z`` onto the controller's bounds (else raise when outside).
    """

    def __init__(self, env: gym.Env, controller: LowLevelController, get_state: Callable[[gym.Env], np.ndarray],
                 clip_z: bool = True) -> None:
        if not isinstance(controller, LowLevelController):
            raise TypeError(f"Expect `controller` to be a LowLevelController, actually: {type(controller).__name__}")
        if not callable(get_state):
            raise TypeError(f"Expect `get_state` to be callable env -> np.ndarray, actually: {type(get_state).__name__}")
        gym.utils.RecordConstructorArgs.__init__(self, controller=controller, get_state=get_state, clip_z=clip_z)
        gym.Wrapper.__init__(self, env)
        if isinstance(env.action_space, gym.spaces.Box) and env.action_space.shape != (controller.action_dim,):
            raise ValueError(f"Expect the env's action space to have shape ({controller.action_dim},) like the controller's "
                             f"actions, actually: {env.action_space.shape}")
        self.controller, self.get_state, self.clip_z = controller, get_state, clip_z
        low = controller.z_low.detach().cpu().numpy().astype(np.float32)
        high = controller.z_high.detach().cpu().numpy().astype(np.float32)
        self.action_space = gym.spaces.Box(low, high, dtype=np.float32)

    def _state(self) -> Tensor:
        s = np.asarray(self.get_state(self.env), dtype=np.float64)
        if s.shape != (self.controller.state_dim,):
            raise ValueError(f"get_state(env) must return shape ({self.controller.state_dim},), got {s.shape}")
        return torch.as_tensor(s, dtype=self.controller.z_low.dtype, device=self.controller.z_low.device)[None]

    @torch.no_grad()
    def step(self, action: ArrayLike) -> Tuple[Any, SupportsFloat, bool, bool, Dict[str, Any]]:
        """Run one high-level step with ``z = action (dz,)``."""
        z = np.asarray(action.detach().cpu() if isinstance(action, Tensor) else action, dtype=np.float64).reshape(-1)
        if z.shape != (self.controller.z_dim,):
            raise ValueError(f"action (z) must have shape ({self.controller.z_dim},), got {np.shape(action)}")
        if not np.isfinite(z).all():
            raise ValueError("action (z) contains NaN or inf")
        state0 = self._state()
        zt = torch.as_tensor(z, dtype=state0.dtype, device=state0.device)[None]
        if self.clip_z:
            zt = self.controller.clamp_z(zt)
        else:
            self.controller.check_inputs(state0, zt)
        ctx = self.controller.context(state0)
        total, terminated, truncated, info, obs = 0.0, False, False, {}, None
        env_dtype = getattr(self.env.action_space, "dtype", np.float64)
        steps = 0
        for step in range(self.controller.horizon):
            state = state0 if step == 0 else self._state()
            a = check_actions(self.controller, self.controller.act(state, zt, ctx, step), "HighLevelActionWrapper.step")
            a = a[0].cpu().numpy().astype(env_dtype)
            obs, reward, terminated, truncated, info = self.env.step(a)
            total += float(reward)
            steps += 1
            if terminated or truncated:
                break
        info = dict(info)
        info["low_level_steps"] = steps
        return obs, total, bool(terminated), bool(truncated), info
