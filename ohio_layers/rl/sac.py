"""Soft Actor-Critic, used for online fine-tuning of offline-pretrained (CQL / Cal-QL) agents.

References:
    Haarnoja et al. "Soft Actor-Critic Algorithms and Applications", 2018.

Losses (entropies are measured in the unit action box ``[-1, 1]^da`` so that the default
target entropy ``-da`` does not depend on the action scale, e.g. ``±8π`` for a goal ``z``; on the
simplex the default sits one nat per dimension below the uniform Dirichlet's ``-lgamma(n)``)::

    L_Q     = sum_i E[(Q_i(s,a) - (r + gamma (1-d) (min_i Qbar_i(s',a') - alpha log pi(a'|s'))))^2],  a' ~ pi(s')
    L_pi    = E[alpha log pi(a~|s) - min_i Q_i(s, a~)],  a~ ~ pi(s) (reparameterised; Q frozen)
              - bc_weight E[log pi(a|s)]  (optional behaviour cloning of the batch's actions)
    L_alpha = -E[alpha (log pi(a~|s) + H_target)]

:meth:`SAC.fit_online` interacts with a gymnasium env, optionally mixing an offline
:class:`~ohio_layers.data.Dataset` into every batch.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from typing import Any, ClassVar, Dict, Iterator, List, Mapping, Optional, Tuple, Type, Union

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data.dataset import Dataset
from .._validate import check_config_keys
from ..logging import emit
from .base import (Agent, AgentConfig, Batch, ReplayBuffer, TransitionSampler, accumulate, adam, concat_batches,
                   metric_floats, soft_update)
from .networks import ObsNormalizer, TanhGaussianActor, TwinQ

__all__ = ["SACConfig", "SAC", "EpisodeReturns", "frozen"]


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Temporarily ``requires_grad_(False)`` on ``module`` (losses through it do not reach its weights)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


class EpisodeReturns:
    """The running episode's rows in a :class:`ReplayBuffer`, with returns-to-go ``mc_returns`` kept current.

    :meth:`add` appends a row at once with ``mc_returns = r`` and adds its reward to the earlier
    rows of the episode, each times its discount product ``prod gamma_i (1 - d_i)``; so every row
    always holds the discounted return of the rewards seen so far (the unseen tail counts as 0) and,
    at the episode's end, its full return-to-go.
    """

    def __init__(self, buffer: ReplayBuffer) -> None:
        self.buffer = buffer
        self.idx: Optional[Tensor] = None  # (T,) buffer rows of the episode
        self.coef: Optional[Tensor] = None  # (T,) multiplier of the next reward for each row

    def add(self, row: Dict[str, np.ndarray]) -> None:
        """Append one row ``{column: (1, ...)}`` (without ``mc_returns``)."""
        r = float(row["rewards"][0])
        g = float(row["discounts"][0]) * (1.0 - float(row["terminals"][0]))
        if self.idx is not None:
            self.buffer.columns["mc_returns"][self.idx] += (self.coef * r).to(self.buffer.dtype)
        new = self.buffer.add(**row, mc_returns=np.array([r]))
        coef = torch.full((1,), g, dtype=torch.float64, device=new.device)
        if self.idx is None or self.coef is None:
            self.idx, self.coef = new, coef
        else:  # rows older than the buffer's capacity were overwritten: stop tracking them
            self.idx = torch.cat([self.idx, new])[-self.buffer.capacity:]
            self.coef = torch.cat([self.coef * g, coef])[-self.buffer.capacity:]

    def close(self) -> None:
        """End the episode (its rows keep their returns)."""
        self.idx = self.coef = None


@dataclasses.dataclass
class SACConfig(AgentConfig):
    """SAC settings (plus :class:`~ohio_layers.rl.base.AgentConfig`).

    Attributes:
        actor_lr, critic_lr, alpha_lr: Adam learning rates.
        tau: Polyak rate of the target critics.
        init_alpha: initial entropy temperature.
        auto_alpha: tune alpha towards ``target_entropy``.
        target_entropy: entropy target of ``auto_alpha`` in the units of :meth:`SAC.sample_unit`;
            ``None``: ``-da`` for the box (unit scale), ``-lgamma(n) - (n - 1)`` for the Dirichlet
            simplex actor of ``ohio_layers.rl.gnn``. A target at or above the actor's maximum
            entropy (``da log 2``; ``-lgamma(n)`` on the simplex) is refused with ``auto_alpha``.
        log_std_min, log_std_max: clamp of the actor's pre-tanh log-std.
        state_dependent_std: actor std from the network (else a learned vector; inherited by
            :meth:`SAC.from_agent` so an IQL/BC actor can be fine-tuned).
        layer_norm: LayerNorm in the critics (helps fine-tuning stability).
        bc_weight: weight of a behaviour-cloning term ``-log pi(a_batch|s)`` in the actor loss
            (as in TD3+BC / ReBRAC; 0 = plain SAC). It keeps the actor near the batch's actions where
            the critic's action-gradient is not identified by the data (e.g. a deterministic
            behaviour policy); online the batch mixes offline and replayed actions.
        buffer_size: online replay capacity.
        offline_ratio: share of each online batch drawn from the offline dataset (if given).
        start_steps: initial online steps with uniformly random actions.
        update_after: online steps before the first gradient update.
        updates_per_step: gradient updates per online env step.
        critic_warmup: the first env steps of each :meth:`SAC.fit_online` call whose updates train only the critics
            (actor and temperature frozen), so that a critic pre-trained on other targets (e.g. Cal-QL's
            conservative one) first fits the online soft Bellman targets before the actor follows its
            action-gradient (the OHIO reference fine-tunes critic-only for the first 500 steps).
    """

    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    tau: float = 0.005
    init_alpha: float = 1.0
    auto_alpha: bool = True
    target_entropy: Optional[float] = None
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    state_dependent_std: bool = True
    layer_norm: bool = False
    bc_weight: float = 0.0
    buffer_size: int = 1_000_000
    offline_ratio: float = 0.5
    start_steps: int = 0
    update_after: int = 256
    updates_per_step: int = 1
    critic_warmup: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("actor_lr", "critic_lr", "alpha_lr", "init_alpha", "buffer_size", "updates_per_step"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau}")
        if not 0.0 <= self.offline_ratio <= 1.0:
            raise ValueError(f"offline_ratio must be in [0, 1], got {self.offline_ratio}")
        for name in ("start_steps", "update_after", "bc_weight", "critic_warmup"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


class SAC(Agent):
    """Soft Actor-Critic with twin critics, target critics and automatic entropy tuning."""

    config_class: ClassVar[Type[SACConfig]] = SACConfig
    config: SACConfig

    def _build(self) -> None:
        c = self.config
        self.actor = self._make_actor()
        self.q = self._make_q()
        self.target_q = copy.deepcopy(self.q).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(c.init_alpha)))
        self.target_entropy = self._target_entropy()
        self.replay: Optional[ReplayBuffer] = None  # online data of fit_online (not saved by save())
        self.optimizers = {
            "actor": adam(self.actor.parameters(), lr=c.actor_lr),
            "q": adam(self.q.parameters(), lr=c.critic_lr),
            "alpha": adam([self.log_alpha], lr=c.alpha_lr),
        }

    def _target_entropy(self) -> float:
        """``config.target_entropy``, default ``-da`` (unit box); refused when above the actor's maximum."""
        c = self.config
        max_h = self.max_entropy()
        target = self.default_target_entropy() if c.target_entropy is None else float(c.target_entropy)
        if c.auto_alpha and max_h is not None and target >= max_h:
            raise ValueError(f"target_entropy={target:.4g} is unreachable: the actor's entropy is at most {max_h:.4g}, "
                             f"so auto_alpha would raise alpha without bound; pass a target below it")
        return target

    def default_target_entropy(self) -> float:
        """``-da``: well below the box maximum ``da log 2``."""
        return float(-self.action_dim)

    def max_entropy(self) -> Optional[float]:
        """Largest entropy the actor can reach, in the units of :meth:`sample_unit` (``da log 2`` in the unit box)."""
        return self.action_dim * math.log(2.0)

    # network factories: subclasses (e.g. graph networks in ``ohio_layers.rl.gnn``) override these
    def _make_actor(self) -> nn.Module:
        """The policy: ``forward(obs, deterministic)``, ``log_prob``, ``sample`` and a ``scaler``."""
        c = self.config
        return TanhGaussianActor(self.obs_dim, self.action_dim, self.action_low, self.action_high, c.hidden,
                                 c.log_std_min, c.log_std_max, c.state_dependent_std)

    def _make_q(self) -> nn.Module:
        """Twin critics: ``forward(obs, action) -> (q1, q2)`` and ``min(obs, action)``."""
        c = self.config
        return TwinQ(self.obs_dim, self.action_dim, self.action_low, self.action_high, c.hidden, c.layer_norm)

    # -- pieces -----------------------------------------------------------------------------
    @property
    def alpha(self) -> Tensor:
        """Current entropy temperature (detached scalar)."""
        return self.log_alpha.detach().exp()

    def sample_unit(self, obs: Tensor) -> Tuple[Tensor, Tensor]:
        """``(action (B, da) env scale, log-density (B,) in the unit box)``, reparameterised."""
        a, logp = self.actor.sample(obs)
        return a, logp + self.actor.scaler.log_abs_det()

    def sample_unit_n(self, obs: Tensor, n: int) -> Tuple[Tensor, Tensor]:
        """:meth:`sample_unit` of ``n`` actions per row of ``obs (B, do)``: ``((B n, da), (B n,))``, rows of one state
        adjacent (as for ``obs.repeat_interleave(n, 0)``); the actor runs once per state when it has ``sample_n``."""
        if hasattr(self.actor, "sample_n"):
            a, logp = self.actor.sample_n(obs, n)
            return a, logp + self.actor.scaler.log_abs_det()
        return self.sample_unit(obs.repeat_interleave(n, 0))

    def td_target(self, batch: Batch) -> Tensor:
        """Soft Bellman target ``(B,)`` (no gradient)."""
        with torch.no_grad():
            next_a, next_logp = self.sample_unit(batch["next_observations"])
            next_v = self.target_q.min(batch["next_observations"], next_a) - self.alpha * next_logp
            return batch["rewards"] + batch["discounts"] * (1.0 - batch["terminals"]) * next_v

    def td_loss(self, batch: Batch) -> Tuple[Tensor, Tensor, Tensor]:
        """``(L_Q, Q_1(s, a), Q_2(s, a))`` with ``Q_i (B,)``; reaches only ``self.q``."""
        target = self.td_target(batch)
        q1, q2 = self.q(batch["observations"], batch["actions"])
        return (q1 - target).pow(2).mean() + (q2 - target).pow(2).mean(), q1, q2

    def critic_loss(self, batch: Batch) -> Dict[str, Tensor]:
        """``{"loss": L_Q, "q": mean Q(s,a)}``; reaches only ``self.q``."""
        loss, q1, q2 = self.td_loss(batch)
        return {"loss": loss, "q": 0.5 * (q1 + q2).detach().mean()}

    def actor_loss(self, batch: Batch) -> Dict[str, Tensor]:
        """``{"loss": L_pi, "log_prob": (B,) detached}``; reaches only ``self.actor``."""
        obs = batch["observations"]
        a, logp = self.sample_unit(obs)
        with frozen(self.q):
            q = self.q.min(obs, a)
        loss = (self.alpha * logp - q).mean()
        if self.config.bc_weight > 0:
            loss = loss - self.config.bc_weight * self.actor.log_prob(obs, batch["actions"]).mean()
        return {"loss": loss, "log_prob": logp.detach()}

    def alpha_loss(self, log_prob: Tensor) -> Tensor:
        """``L_alpha`` from detached policy log-probs ``(B,)``; reaches only ``log_alpha``."""
        return -(self.log_alpha.exp() * (log_prob.detach() + self.target_entropy)).mean()

    def losses(self, batch: Batch) -> Dict[str, Tensor]:
        """``{"loss_q", "loss_actor", "loss_alpha"}`` on one batch (no optimizer step)."""
        actor = self.actor_loss(batch)
        return {"loss_q": self.critic_loss(batch)["loss"], "loss_actor": actor["loss"],
                "loss_alpha": self.alpha_loss(actor["log_prob"])}

    def update_tensors(self, batch: Batch, update_actor: bool = True) -> Dict[str, Tensor]:
        """Critic step, actor step, temperature step, Polyak update (``update_actor=False``: critic and Polyak only)."""
        with self.autocast():
            critic = self.critic_loss(batch)
        self._optimize("q", critic["loss"], self.q)
        metrics = {"loss_q": critic["loss"].detach(), **{k: v.detach() for k, v in critic.items() if k != "loss"}}
        if not update_actor:
            soft_update(self.target_q, self.q, self.config.tau)
            self.step += 1
            return metrics
        with self.autocast():
            actor = self.actor_loss(batch)
        self._optimize("actor", actor["loss"], self.actor)
        if self.config.auto_alpha:
            loss_alpha = self.alpha_loss(actor["log_prob"])
            self._optimize("alpha", loss_alpha, None)
            metrics["loss_alpha"] = loss_alpha.detach()
        soft_update(self.target_q, self.q, self.config.tau)
        self.step += 1
        metrics.update(loss_actor=actor["loss"].detach(), alpha=self.alpha.detach(),
                       entropy=-actor["log_prob"].detach().mean())
        return metrics

    # -- construction from a pretrained agent -------------------------------------------------
    @classmethod
    def from_agent(cls, agent: Agent, config: Union[SACConfig, Mapping[str, Any], None] = None) -> "SAC":
        """SAC initialised from a pretrained agent's actor (and critics / temperature if it has them).

        Fields of ``agent.config`` that SAC also has are inherited unless ``config`` overrides them.
        """
        config_class = cls.config_class
        known = {f.name for f in dataclasses.fields(config_class)}
        base = {k: v for k, v in agent.config.to_dict().items() if k in known}
        if isinstance(config, SACConfig):
            base.update(config.to_dict())
        elif config is not None:
            check_config_keys(config_class, dict(config))  # names unknown keys; values are checked below
            base.update(dict(config))
        sac = cls(agent.obs_dim, agent.action_dim, agent.action_low.cpu(), agent.action_high.cpu(), base)
        sac.actor.load_state_dict(agent.actor.state_dict())
        for name in ("q", "target_q"):
            src = getattr(agent, name, None)
            if isinstance(src, nn.Module) and type(src) is type(getattr(sac, name)):  # same critic architecture
                getattr(sac, name).load_state_dict(src.state_dict())
        if isinstance(getattr(agent, "log_alpha", None), torch.Tensor):
            with torch.no_grad():
                sac.log_alpha.copy_(agent.log_alpha)
        if bool(agent.obs_stats_set):  # every normaliser of the agent holds the same stats: copy them to all of ours
            norm = next(m for m in agent.modules() if isinstance(m, ObsNormalizer))
            sac.set_obs_stats(norm.mean.cpu(), norm.std.cpu())
        return sac

    # -- online training ------------------------------------------------------------------------
    def fit_online(self, env: gym.Env, steps: int, *, offline: Optional[Dataset] = None, action_key: str = "actions",
                   seed: Optional[int] = None, show_progress: bool = True, log_every: int = 1000,
                   logger: Optional[Any] = None) -> List[Dict[str, float]]:
        """Interact with ``env`` for ``steps`` env steps, updating after each (see the config).

        Args:
            env: gymnasium env with a flat Box observation of size ``obs_dim`` and a Box action
                space of size ``action_dim`` (actions are clipped to it).
            steps: environment steps.
            offline: optional dataset mixed into every batch with share ``config.offline_ratio``.
            action_key: action column of ``offline``.
            seed: seed of the first ``env.reset`` (default ``config.seed``).
            log_every: env steps per history row (mean losses and finished episode returns).
            logger: receives each history row (see :meth:`Agent.fit`).

        Online rows enter the replay buffer at once. When the agent needs ``mc_returns`` (Cal-QL)
        a row carries the discounted return of the rewards seen so far, completed as the episode
        goes on (:class:`EpisodeReturns`; a truncated or unfinished tail counts as 0 and stays
        non-terminal). The buffer persists in ``self.replay`` across calls.

        Returns:
            ``self.history``; rows carry ``"env_step"`` and ``"episode_return"`` (when episodes ended).
        """
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        c = self.config
        box = env.action_space
        if not isinstance(box, gym.spaces.Box) or box.shape != (self.action_dim,):
            raise ValueError(f"env.action_space must be a Box of shape ({self.action_dim},), got {box}")
        offline_sampler: Optional[TransitionSampler] = None
        if offline is not None:
            offline_sampler = self.make_sampler(offline, action_key)
            if c.obs_norm and not bool(self.obs_stats_set):
                self.set_obs_stats_from(offline)
        extra = self.required_extra_keys()
        if extra and extra != ("mc_returns",):
            raise NotImplementedError(f"online data cannot provide the columns {extra}")
        if self.replay is None:
            self.replay = ReplayBuffer(c.buffer_size, c.device)
        buffer = self.replay
        episode = EpisodeReturns(buffer) if extra else None
        returns: List[float] = []
        sums: Dict[str, Tensor] = {}
        counts: Dict[str, int] = {}  # per metric: warm-up updates report no actor metrics
        low, high = box.low.astype(np.float64), box.high.astype(np.float64)
        self.train()
        with self.rng_scope():
            obs, _ = env.reset(seed=c.seed if seed is None else seed)
            env.action_space.seed(c.seed if seed is None else seed)
            ep_return = 0.0
            bar = tqdm(range(steps), desc=f"{type(self).__name__} online", disable=not show_progress, leave=False)
            for t in bar:
                if t < c.start_steps:
                    action = env.action_space.sample().astype(np.float64)
                else:
                    action = np.asarray(self.act(np.asarray(obs, dtype=np.float32), deterministic=False), dtype=np.float64)
                action = np.clip(action, low, high)
                next_obs, reward, terminated, truncated, _ = env.step(action.astype(box.dtype))
                ep_return += float(reward)
                row = {"observations": np.asarray(obs, np.float64)[None], "actions": action[None],
                       "rewards": np.array([float(reward)]), "next_observations": np.asarray(next_obs, np.float64)[None],
                       "terminals": np.array([float(terminated)]), "discounts": np.array([c.discount])}
                if episode is not None:
                    episode.add(row)
                else:
                    buffer.add(**row)
                obs = next_obs
                if terminated or truncated:
                    if episode is not None:
                        episode.close()
                    returns.append(ep_return)
                    ep_return = 0.0
                    obs, _ = env.reset()
                can_sample = len(buffer) > 0 or (offline_sampler is not None and c.offline_ratio > 0)
                if can_sample and t + 1 >= c.update_after:
                    for _ in range(c.updates_per_step):
                        accumulate(sums, self.update_tensors(self._mixed_batch(buffer, offline_sampler),
                                                             update_actor=t >= c.critic_warmup), counts)
                if (t + 1) % log_every == 0 or t == steps - 1:
                    hist = {"step": float(self.step), "env_step": float(t + 1), **metric_floats(sums, counts)}
                    if returns:
                        hist["episode_return"] = float(np.mean(returns))
                    self.history.append(hist)
                    emit(logger, hist)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in hist.items() if k not in ("step", "env_step")})
                    sums, counts, returns = {}, {}, []
        self.eval()
        return self.history

    def _mixed_batch(self, buffer: ReplayBuffer, offline: Optional[TransitionSampler]) -> Batch:
        b = self.config.batch_size
        if offline is None or self.config.offline_ratio == 0.0:
            return buffer.sample(b)
        n_off = int(round(b * self.config.offline_ratio))
        if n_off >= b or len(buffer) == 0:
            return offline.sample(b)
        return concat_batches(offline.sample(n_off), buffer.sample(b - n_off))
