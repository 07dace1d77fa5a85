"""Shared machinery of the RL agents: configs, seeding, batch sampling, the ``Agent`` base.

Every algorithm (:class:`~ohio_layers.rl.iql.IQL`, :class:`~ohio_layers.rl.bc.BC`,
:class:`~ohio_layers.rl.sac.SAC`, :class:`~ohio_layers.rl.cql.CQL`) is an :class:`Agent`:

* built from ``(obs_dim, action_dim, action_low, action_high, config)`` or
  :meth:`Agent.from_dataset`; ``config`` is its dataclass or a dict (unknown keys raise, naming them);
* networks are initialised from ``config.seed`` and training draws randomness from the agent's
  own generator ``agent.generator`` on ``config.device`` (the global torch RNG is left untouched,
  see :mod:`~ohio_layers.rl.rng`), so the same seed gives identical weights and batches, and a
  saved agent resumes the same stream;
* ``fit(dataset, steps)`` samples batches with :class:`TransitionSampler` and calls
  ``update(batch) -> metrics``; a tqdm bar shows the running losses and ``agent.history`` keeps
  the averaged metrics every ``log_every`` steps;
* ``act(obs, deterministic=True)`` for numpy or torch observations, ``forward(obs)`` is the
  differentiable deterministic action;
* ``save(path)`` / ``Agent.load(path)``: weights, optimizers, step, RNG state, history and
  config in one ``torch.save`` file written atomically, loaded with ``weights_only=True``.

A batch is a ``dict`` of tensors: ``observations (B, do)``, ``actions (B, da)``,
``rewards (B,)``, ``next_observations (B, do)``, ``terminals (B,)`` (float 0/1), ``discounts (B,)``
and any extra columns requested (e.g. ``mc_returns (B,)``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import random
import warnings
from abc import abstractmethod
from typing import Any, Callable, ClassVar, ContextManager, Dict, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._validate import check_tensor
from ..config import Config, setting
from ..data.dataset import Dataset
from ..data.io import PathLike, atomic_write_bytes
from ..logging import emit
from .networks import BoundLike, ObsNormalizer, bound_tensor
from .fused import ReluMLPKernel, fused_enabled, hooks_present, step_optimizer
from .optim import adam
from .rng import generator_scope, make_generator, restore_generator_state
from .sampling import Batch, ReplayBuffer, TransitionSampler, concat_batches, row_discount_key

C = TypeVar("C", bound="AgentConfig")
A = TypeVar("A", bound="Agent")

__all__ = ["AgentConfig", "Agent", "Batch", "TransitionSampler", "ReplayBuffer", "concat_batches",
           "seed_everything", "soft_update", "adam"]


def seed_everything(seed: int) -> None:
    """Seed ``random``, numpy and torch (for scripts; the agents themselves never touch global RNGs)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging ``target <- (1 - tau) target + tau source`` (parameters only, one fused call)."""
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


# ---------------------------------------------------------------------------------- configs
@dataclasses.dataclass
class AgentConfig(Config):
    """Settings every agent shares.

    Attributes:
        seed: initialises the networks and the training RNG stream.
        batch_size: transitions per gradient step.
        hidden: hidden layer sizes of every MLP.
        steps: default number of gradient steps of :meth:`Agent.fit`.
        discount: ``gamma`` per row (per *high-level* step for k-step datasets), unless the
            dataset provides a per-row discount column (``fit(..., discount_key=...)``).
        grad_clip: max global grad norm per network (``None``: no clipping).
        obs_norm: normalise observations with the dataset mean/std (stored as buffers).
        device: torch device of the networks and batches.
        mixed_precision: ``None`` (float32) or ``"bf16"``: the updates' forward passes run under
            ``torch.autocast`` in bfloat16 (weights, optimizer states and losses stay float32); the
            autograd-free BC and IQL updates (:mod:`~ohio_layers.rl.fused`) round at the same points
            (inputs, weights, activations and their gradients in bfloat16; outputs, losses and
            parameter gradients in float32).
    """

    seed: int = 0
    batch_size: int = setting(256, ge=1)
    hidden: Tuple[int, ...] = setting((256, 256), ge=1)
    steps: int = setting(100_000, ge=1)
    discount: float = setting(0.99, ge=0.0, le=1.0)
    grad_clip: Optional[float] = setting(None, gt=0.0)
    obs_norm: bool = False
    device: str = "cpu"
    mixed_precision: Optional[str] = setting(None, choices=("bf16",))


# ---------------------------------------------------------------------------------- agent
class Agent(nn.Module):
    """Base of all agents: construction, seeding, ``fit``, ``act``, ``save``/``load``.

    Subclasses set ``config_class``, implement :meth:`_build` (create ``self.actor`` -- a
    :class:`~ohio_layers.rl.networks.TanhGaussianActor` -- the other networks and
    ``self.optimizers``) and :meth:`update`.

    Args:
        obs_dim: ``do``.
        action_dim: ``da``.
        action_low, action_high: per-dimension action bounds (scalars or ``(da,)``); the actor's
            outputs lie in this box.
        config: the agent's config dataclass, or a dict of its fields.
    """

    config_class: ClassVar[Type[AgentConfig]] = AgentConfig
    _registry: ClassVar[Dict[str, Type["Agent"]]] = {}
    # set by rl/distributed.py for data-parallel training: averages an optimizer's grads over the ranks
    grad_sync: Optional[Callable[[torch.optim.Optimizer], None]] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Agent._registry[cls.__name__] = cls

    def __init__(self, obs_dim: int, action_dim: int, action_low: BoundLike = -1.0, action_high: BoundLike = 1.0,
                 config: Union[AgentConfig, Mapping[str, Any], None] = None) -> None:
        super().__init__()
        for name, v in (("obs_dim", obs_dim), ("action_dim", action_dim)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.config = self.config_class.coerce(config)
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        low, high = bound_tensor(action_low, self.action_dim, "action_low"), bound_tensor(action_high, self.action_dim, "action_high")
        if bool((low >= high).any()):
            raise ValueError(f"action_low must be < action_high in every dimension, got {low.tolist()} / {high.tolist()}")
        self.register_buffer("action_low", low)
        self.register_buffer("action_high", high)
        self.register_buffer("obs_stats_set", torch.zeros((), dtype=torch.bool))
        self.step = 0
        self.history: List[Dict[str, float]] = []
        self.optimizers: Dict[str, torch.optim.Optimizer] = {}
        self._disjoint_checked: set = set()  # optimizer-name tuples checked by _optimize_together
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            self._build()
            cpu_state = torch.get_rng_state()
        self.to(self.config.device)
        self.generator = make_generator(self.config.device, self.config.seed, cpu_state)

    # -- to implement -------------------------------------------------------------------
    @abstractmethod
    def _build(self) -> None:
        """Create the networks (``self.actor`` at least) and ``self.optimizers``."""
        raise NotImplementedError(f"{type(self).__name__} must implement _build()")

    @abstractmethod
    def update_tensors(self, batch: Batch) -> Dict[str, Tensor]:
        """One gradient step on ``batch``; increments ``self.step``; returns detached 0-dim metric tensors
        on the agent's device (no host sync: :meth:`fit` averages them there and syncs once per log row)."""
        raise NotImplementedError(f"{type(self).__name__} must implement update_tensors()")

    def update(self, batch: Batch) -> Dict[str, float]:
        """:meth:`update_tensors` with the metrics as floats (one host sync per call on a GPU)."""
        return metric_floats(self.update_tensors(batch))

    def required_extra_keys(self) -> Tuple[str, ...]:
        """Per-row dataset columns besides the standard ones that batches must carry."""
        return ()

    def rng_scope(self) -> ContextManager[torch.Generator]:
        """Block in which torch's global RNG of the agent's device draws from ``self.generator``."""
        return generator_scope(self.generator)

    def autocast(self) -> ContextManager[Any]:
        """``torch.autocast`` of ``config.mixed_precision`` on the agent's device (a no-op for float32)."""
        if self.config.mixed_precision is None:
            return contextlib.nullcontext()
        return torch.autocast(self.action_low.device.type, dtype=torch.bfloat16)

    # -- construction helpers -----------------------------------------------------------
    @classmethod
    def from_dataset(cls: Type[A], dataset: Dataset, config: Union[AgentConfig, Mapping[str, Any], None] = None, *,
                     action_key: str = "actions", action_low: Optional[BoundLike] = None,
                     action_high: Optional[BoundLike] = None) -> A:
        """Agent sized for ``dataset``; observation statistics are set when ``config.obs_norm``.

        Bounds default to ``dataset.metadata[f"{action_key}_low"/"_high"]`` if present, else to
        the data range widened by 1 % of its width on each side (pass the controller's z bounds
        for high-level data).
        """
        dataset.require(["observations", action_key])
        if len(dataset) == 0:
            raise ValueError(f"dataset is empty: {cls.__name__}.from_dataset needs at least one transition to size the agent")
        obs, act = np.asarray(dataset["observations"]), np.asarray(dataset[action_key])
        if obs.ndim != 2 or act.ndim != 2:
            raise ValueError(f"observations and {action_key!r} must be 2-D, got {obs.shape} / {act.shape}")
        meta = dataset.metadata
        if action_low is None:
            action_low = meta.get(f"{action_key}_low")
        if action_high is None:
            action_high = meta.get(f"{action_key}_high")
        if action_low is None or action_high is None:
            lo, hi = act.min(0).astype(np.float64), act.max(0).astype(np.float64)
            pad = np.maximum(0.01 * (hi - lo), 1e-3)
            action_low = lo - pad if action_low is None else action_low
            action_high = hi + pad if action_high is None else action_high
        agent = cls(obs.shape[1], act.shape[1], action_low, action_high, config)
        if agent.config.obs_norm:
            agent.set_obs_stats_from(dataset)
        return agent

    def set_obs_stats(self, mean: Union[np.ndarray, Tensor], std: Union[np.ndarray, Tensor]) -> None:
        """Set the observation normalisation ``mean, std (do,)`` of every network of the agent."""
        for m in self.modules():
            if isinstance(m, ObsNormalizer):
                m.set_stats(torch.as_tensor(np.asarray(mean, dtype=np.float64)), torch.as_tensor(np.asarray(std, dtype=np.float64)))
        self.obs_stats_set.fill_(True)

    def set_obs_stats_from(self, dataset: Dataset) -> None:
        """Observation mean/std of ``dataset["observations"]``."""
        obs = np.asarray(dataset["observations"], dtype=np.float64)
        self.set_obs_stats(obs.mean(0), obs.std(0))

    # -- training -----------------------------------------------------------------------
    def make_sampler(self, dataset: Dataset, action_key: str = "actions", discount_key: Optional[str] = None) -> TransitionSampler:
        """A :class:`TransitionSampler` checked against the agent's dims and bounds.

        Without ``discount_key`` a ``"discounts"`` column (the per-row ``gamma^k`` that
        :func:`~ohio_layers.inverse.relabel` stores when given ``discount``) is used when present.
        """
        discount_key = row_discount_key(dataset, discount_key, self.config.discount)
        sampler = TransitionSampler(dataset, action_key, self.config.discount, discount_key, self.required_extra_keys(),
                                    obs_dim=self.obs_dim, action_dim=self.action_dim, device=self.config.device)
        self._warn_out_of_bounds(sampler.columns["actions"], action_key)
        return sampler

    def _warn_out_of_bounds(self, act: Tensor, action_key: str) -> None:
        tol = 1e-4 * (self.action_high - self.action_low)
        outside = ((act < self.action_low - tol) | (act > self.action_high + tol)).any(0)
        if bool(outside.any()):
            warnings.warn(f"dataset[{action_key!r}] lies outside [action_low, action_high] in dimensions "
                          f"{outside.nonzero().flatten().tolist()}; it is clamped to the bounds for the likelihood",
                          stacklevel=4)

    def fit(self, dataset: Dataset, steps: Optional[int] = None, *, action_key: str = "actions",
            discount_key: Optional[str] = None, show_progress: bool = True, log_every: int = 100,
            callback: Optional[Callable[["Agent", int, Dict[str, float]], None]] = None,
            logger: Optional[Any] = None) -> List[Dict[str, float]]:
        """Train for ``steps`` gradient steps (default ``config.steps``) on ``dataset``.

        Args:
            dataset: transitions (see :class:`TransitionSampler`).
            action_key: column holding the actions (``"z"`` for relabelled high-level data).
            discount_key: optional per-row discount column; else ``config.discount``.
            show_progress: tqdm bar with the running losses.
            log_every: average the metrics over this many steps into ``self.history``.
            callback: ``callback(agent, step, metrics)`` after every step.
            logger: receives each averaged history row: a :class:`ohio_layers.logging.Logger`
                (``log(step, **scalars)``; JSONL, CSV, TensorBoard) or a callable ``row -> None``.
        Returns:
            ``self.history`` (list of ``{"step": ..., metric: mean}``).
        """
        steps = self.config.steps if steps is None else int(steps)
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {log_every}")
        sampler = self.make_sampler(dataset, action_key, discount_key)
        if self.config.obs_norm and not bool(self.obs_stats_set):
            self.set_obs_stats_from(dataset)
        self.train()
        with self.rng_scope():
            sums: Dict[str, Tensor] = {}
            count = 0
            bar = tqdm(range(steps), desc=type(self).__name__, disable=not show_progress, leave=False)
            for i in bar:
                metrics = self.update_tensors(sampler.sample(self.config.batch_size))
                accumulate(sums, metrics)
                count += 1
                if callback is not None:  # the callback's floats cost a host sync per step on a GPU
                    callback(self, self.step, metric_floats(metrics))
                if count == log_every or i == steps - 1:
                    row = {"step": float(self.step), **metric_floats(sums, count)}
                    self.history.append(row)
                    emit(logger, row)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k != "step"})
                    sums, count = {}, 0
        self.eval()
        return self.history

    def _optimize(self, name: str, loss: Tensor, module: Optional[nn.Module]) -> None:
        """``zero_grad -> backward -> clip module's grads (config.grad_clip) -> step`` for optimizer ``name``."""
        self._optimize_together([(name, loss, module)])

    def _optimize_together(self, steps: Sequence[Tuple[str, Tensor, Optional[nn.Module]]]) -> None:
        """:meth:`_optimize` for ``[(optimizer name, loss, module)]`` with one backward pass over all losses.

        Only for losses that each reach only their own optimizer's parameters: then the gradients are
        exactly those of separate backward passes, and one autograd run replaces several.
        """
        names = tuple(name for name, _, _ in steps)
        if len(steps) > 1 and names not in self._disjoint_checked:  # once per combination: no parameter in two of them
            seen: Dict[int, str] = {}
            for name in names:
                for group in self.optimizers[name].param_groups:
                    for p in group["params"]:
                        if seen.setdefault(id(p), name) != name:
                            raise ValueError(f"optimizers {seen[id(p)]!r} and {name!r} share parameters: their losses "
                                             f"need separate _optimize calls, not one backward pass")
            self._disjoint_checked.add(names)
        for name in names:
            self.optimizers[name].zero_grad(set_to_none=True)
        torch.autograd.backward([loss for _, loss, _ in steps])
        self._step_optimizers([(name, module) for name, _, module in steps])

    def _step_optimizers(self, steps: Sequence[Tuple[str, Optional[nn.Module]]]) -> None:
        """For ``[(optimizer name, module)]`` whose ``.grad`` are set: sync across ranks (:attr:`grad_sync`),
        clip the module's grads (``config.grad_clip``), step."""
        for name, module in steps:
            opt = self.optimizers[name]
            if self.grad_sync is not None:
                self.grad_sync(opt)
            if self.config.grad_clip is not None and module is not None:
                nn.utils.clip_grad_norm_(module.parameters(), self.config.grad_clip)
            step_optimizer(opt)

    def _fused_kernels(self, trained: Mapping[str, nn.Module], frozen: Mapping[str, nn.Module] = {}
                       ) -> Optional[Dict[str, "ReluMLPKernel"]]:
        """Kernels (:mod:`~ohio_layers.rl.fused`) for the MLPs ``trained`` (backward too) and ``frozen``
        (forward only), or ``None`` when the fused path does not apply: switched off, not on the CPU, a
        network that is not a plain trainable float32 ReLU MLP, or a hook (module or gradient, on any of the
        agent's modules and parameters, or global) that autograd would run. With ``mixed_precision="bf16"``
        the kernels compute in bfloat16. Cached while the same modules are in place; the parameters and
        every module's hooks are re-checked at every call (attribute reads); the module list is rebuilt when the
        agent's networks or their direct parts change (deeper swaps inside an MLP rebuild its kernel)."""
        if not fused_enabled() or not self.action_low.is_cpu:
            return None
        dtype = torch.bfloat16 if self.config.mixed_precision == "bf16" else torch.float32
        key = (dtype,) + tuple((k, id(m)) for k, m in trained.items()) + tuple((k, id(m)) for k, m in frozen.items())
        cache = self.__dict__.get("_fused_cache")
        if cache is None or cache[0] != key:
            if (all(ReluMLPKernel.supports(m) for m in trained.values())
                    and all(ReluMLPKernel.supports(m, trainable=False) for m in frozen.values())):
                kernels: Optional[Dict[str, ReluMLPKernel]] = {
                    **{k: ReluMLPKernel(m, dtype=dtype) for k, m in trained.items()},
                    **{k: ReluMLPKernel(m, trainable=False, dtype=dtype) for k, m in frozen.items()}}
                params = [p for m in trained.values() for p in m.parameters()]
                allp = params + [p for m in frozen.values() for p in m.parameters()]
            else:
                kernels, params, allp = None, [], []
            cache = (key, kernels, params, allp, None, [], [])
        tree = tuple(id(c) for child in self.children() for c in (child, *child.children()))
        if cache[4] != tree:  # a network or one of its parts (e.g. a normaliser) was swapped in: list them anew
            cache = cache[:4] + (tree, list(self.modules()), list(self.parameters()))
        self.__dict__["_fused_cache"] = cache
        _, kernels, params, allp, _, modules, agent_params = cache
        if kernels is None or hooks_present(modules, agent_params):
            return None
        for kernel in kernels.values():
            if not kernel.current():  # a parameter was replaced: rebuild at the next call
                self.__dict__.pop("_fused_cache", None)
                return self._fused_kernels(trained, frozen)
        for p in params:
            if not p.requires_grad:
                return None
        for p in allp:
            if p.dtype is not torch.float32 or not p.is_cpu:
                return None
        return kernels

    # -- acting -------------------------------------------------------------------------
    def forward(self, obs: Tensor) -> Tensor:
        """Deterministic, differentiable action ``(B, da)`` for ``obs (B, do)``."""
        return self.actor(obs, deterministic=True)

    @torch.no_grad()
    def act(self, obs: Union[np.ndarray, Tensor, Sequence[float]], deterministic: bool = True) -> Union[np.ndarray, Tensor]:
        """Action for ``obs (do,)`` or ``(B, do)``; numpy in -> numpy out, tensor in -> tensor out.

        Stochastic actions (``deterministic=False``) draw from the global torch RNG.
        """
        as_numpy = not isinstance(obs, Tensor)
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32) if as_numpy else obs)
        single = x.dim() == 1
        x = x[None] if single else x
        check_tensor("obs", x, ("B", self.obs_dim))
        dev = self.action_low.device
        a = self.actor(x.to(device=dev, dtype=torch.float32), deterministic=deterministic)
        a = a[0] if single else a
        return a.cpu().numpy() if as_numpy else a.to(obs.device)

    # -- persistence --------------------------------------------------------------------
    def save(self, path: PathLike) -> None:
        """Weights, optimizers, step, RNG state, history and config, written atomically."""
        payload = {
            "format": "ohio_layers.rl.agent/1",
            "class": type(self).__name__,
            "config": self.config.to_dict(),
            "spec": {"obs_dim": self.obs_dim, "action_dim": self.action_dim,
                     "action_low": self.action_low.tolist(), "action_high": self.action_high.tolist()},
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "step": self.step,
            "rng_state": self.generator.get_state(),
            "rng_device": self.generator.device.type,
            "history": list(self.history),
        }
        buf = io.BytesIO()
        torch.save(payload, buf)
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls: Type[A], path: PathLike, map_location: Union[str, torch.device, None] = None) -> A:
        """Rebuild a saved agent (``Agent.load`` dispatches on the stored class)."""
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != "ohio_layers.rl.agent/1":
            raise ValueError(f"{path} is not an ohio_layers.rl agent checkpoint")
        klass = Agent._registry.get(payload["class"])
        if klass is None:
            raise ValueError(f"{path} holds an unknown agent class {payload['class']!r}; import its module first")
        if not issubclass(klass, cls):
            raise TypeError(f"{path} holds a {klass.__name__}, not a {cls.__name__}")
        config = dict(payload["config"])
        if map_location is not None:
            config["device"] = str(map_location)
        spec = payload["spec"]
        agent = klass(spec["obs_dim"], spec["action_dim"], spec["action_low"], spec["action_high"], config)
        agent.load_state_dict(payload["state_dict"])
        for k, sd in payload["optimizers"].items():
            agent.optimizers[k].load_state_dict(sd)
        agent.step = int(payload["step"])
        restore_generator_state(agent.generator, payload["rng_state"], payload.get("rng_device", "cpu"))
        agent.history = list(payload["history"])
        return agent  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return f"obs_dim={self.obs_dim}, action_dim={self.action_dim}, step={self.step}"


def accumulate(sums: Dict[str, Tensor], metrics: Mapping[str, Any], counts: Optional[Dict[str, int]] = None) -> None:
    """Add one step's metrics to ``sums`` in float64 on their device (no host sync); ``counts`` (if given)
    counts the steps per name, for steps that do not report every metric (e.g. SAC's critic warm-up)."""
    for k, v in metrics.items():
        v = v.detach().to(torch.float64) if isinstance(v, Tensor) else torch.tensor(float(v), dtype=torch.float64)
        sums[k] = v if k not in sums else sums[k] + v.to(sums[k].device)
        if counts is not None:
            counts[k] = counts.get(k, 0) + 1


def metric_floats(metrics: Mapping[str, Any], count: Union[int, Mapping[str, int]] = 1) -> Dict[str, float]:
    """``{name: value / count}`` as floats, with one host sync for all tensors (``count``: steps summed,
    or per name as :func:`accumulate` counts them)."""
    keys = list(metrics)
    tensors = [metrics[k] for k in keys if isinstance(metrics[k], Tensor)]
    if tensors:
        stacked = torch.stack([t.detach().to(tensors[0].device, torch.float64).reshape(()) for t in tensors])
        values = iter(stacked.tolist())  # the one sync
    per = count if isinstance(count, Mapping) else dict.fromkeys(keys, count)
    return {k: (next(values) if isinstance(metrics[k], Tensor) else float(metrics[k])) / per[k] for k in keys}
