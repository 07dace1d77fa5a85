"""Data-parallel training of the offline agents (IQL, CQL, BC, SAC) under ``torch.distributed``.

Launch with ``torchrun`` (see :mod:`ohio_layers.train`); every rank runs :func:`fit_distributed`:

* **Same start.** Every rank builds the agent from ``config.seed``, so the networks start
  identical. Parameters and buffers are then broadcast from rank 0 anyway, in case a caller
  built them differently. Observation statistics come from the *whole* dataset.
* **Data sharded per rank.** Rank ``r`` of ``W`` samples only from its share of the episodes
  (:func:`shard_dataset`). ``config.batch_size`` is per rank: a step sees ``W * batch_size``
  transitions.
* **Synchronous gradients.** After each loss's ``backward`` the agent's ``grad_sync`` hook
  (``Agent._optimize``) averages that optimizer's gradients over the ranks with one
  ``all_reduce``. The optimizers then step identically, so parameters, target networks and
  optimizer states stay equal on every rank: this is DDP's arithmetic. ``DistributedDataParallel``
  is not used itself: the agents run several losses and optimizers per step over partly shared
  networks, and its one-backward-per-forward bucketing does not fit that.
* **Seeded per rank, resumable.** Training runs in segments of ``checkpoint_every`` steps.
  Each segment starts the rank's RNG stream from ``(seed, rank, step)``, so a run resumed from
  a checkpoint continues exactly as the uninterrupted run would. Rank 0 alone writes the
  checkpoint (an ordinary :meth:`Agent.save` file, atomically) after every segment. On start,
  every rank loads the checkpoint if it exists, so the path must be visible to all ranks (a
  shared filesystem).
* gloo on CPU, NCCL on GPU (``device="cuda"``: rank ``r`` uses ``cuda:<LOCAL_RANK>``).
  ``dist.barrier()`` runs before ``destroy_process_group``: without it a rank that finishes
  early makes torchrun exit 1.
"""
from __future__ import annotations

import hashlib
import os
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist

from ..data.dataset import Dataset
from ..data.io import PathLike
from .base import Agent

__all__ = ["shard_dataset", "make_grad_sync", "rank_seed", "fit_distributed", "parameter_digest", "init_distributed",
           "close_distributed"]


def _rank_world() -> tuple:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: str = "cpu", timeout_s: float = 600.0) -> tuple:
    """Join the process group torchrun set up (``RANK``/``WORLD_SIZE`` in the environment).

    Returns ``(rank, world_size, device)``. Without torchrun it is one process: ``(0, 1, device)``.
    ``device="cuda"`` picks ``cuda:<LOCAL_RANK>`` and NCCL; otherwise gloo on CPU.
    """
    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was requested but torch.cuda.is_available() is False")
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1, device
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size(), device


def close_distributed() -> None:
    """Barrier, then leave the process group (no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard_dataset(dataset: Dataset, rank: int, world: int) -> Dataset:
    """Rank ``rank``'s share of ``dataset``: a contiguous block of whole episodes (of rows without ``episode_ids``).

    Blocks hold near-equal numbers of episodes, and every rank gets at least one row.
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, {world}), got {rank}")
    n = len(dataset)
    if "episode_ids" in dataset:
        ids = dataset["episode_ids"]
        bounds = np.r_[np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]), n]  # episode start rows + end
    else:
        bounds = np.arange(n + 1)
    units = len(bounds) - 1
    if units < world:
        raise ValueError(f"cannot shard {units} episodes over {world} ranks: every rank needs data")
    cuts = np.linspace(0, units, world + 1).round().astype(int)
    return dataset.select(slice(int(bounds[cuts[rank]]), int(bounds[cuts[rank + 1]])))


def make_grad_sync(world: int) -> Callable[[torch.optim.Optimizer], None]:
    """Hook that averages an optimizer's gradients over ``world`` ranks with one flat ``all_reduce``.

    Parameters without a gradient are skipped. Every rank runs the same losses, so they skip
    the same ones.
    """

    def sync(opt: torch.optim.Optimizer) -> None:
        params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= world
        offset = 0
        for p in params:
            n = p.grad.numel()
            p.grad.copy_(flat[offset: offset + n].view_as(p.grad))
            offset += n

    return sync


def rank_seed(seed: int, rank: int, step: int) -> int:
    """Seed of rank ``rank``'s training stream for the segment starting at ``step`` (63 bits)."""
    return int.from_bytes(hashlib.sha256(f"{seed}|{rank}|{step}".encode()).digest()[:8], "little") >> 1


def _reseed(agent: Agent, seed: int) -> None:
    """Restart the agent's training RNG stream from ``seed``.

    Handles both an agent with a ``generator`` (``torch.Generator``) and one that keeps a CPU
    ``_rng_state``.
    """
    gen = getattr(agent, "generator", None)
    if isinstance(gen, torch.Generator):
        gen.manual_seed(seed)
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        agent._rng_state = torch.get_rng_state()
    if str(agent.config.device).startswith("cuda"):
        torch.cuda.manual_seed(seed)  # the sampler and the agents' noise draw from the GPU's global RNG


def parameter_digest(agent: Agent) -> str:
    """SHA-256 of the agent's state dict (parameters and buffers, on CPU, in key order)."""
    h = hashlib.sha256()
    for key, value in sorted(agent.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _broadcast_state(agent: Agent) -> None:
    with torch.no_grad():
        for t in list(agent.parameters()) + list(agent.buffers()):
            dist.broadcast(t.data, src=0)


def fit_distributed(agent: Agent, dataset: Dataset, steps: int, checkpoint: PathLike, *, checkpoint_every: int = 1000,
                    action_key: str = "actions", discount_key: Optional[str] = None, log_every: int = 100,
                    show_progress: bool = True,
                    logger: Optional[Callable[[Dict[str, float]], None]] = None) -> Agent:
    """Train ``agent`` to ``steps`` total gradient steps on this rank's shard of ``dataset``; returns the agent.

    If ``checkpoint`` exists, the agent is loaded from it first (resume); the returned agent may
    therefore be a new object. Works without a process group too (one rank). Every rank must
    call this with the same arguments.
    """
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    rank, world = _rank_world()
    checkpoint = Path(checkpoint)
    device = agent.config.device
    if checkpoint.exists():
        agent = Agent.load(checkpoint, map_location=device)
    if agent.config.obs_norm and not bool(agent.obs_stats_set):
        agent.set_obs_stats_from(dataset)  # the whole dataset's statistics, equal on every rank
    shard = shard_dataset(dataset, rank, world)
    if world > 1:
        _broadcast_state(agent)
        agent.grad_sync = make_grad_sync(world)
    try:
        while agent.step < steps:
            end = min(steps, (agent.step // checkpoint_every + 1) * checkpoint_every)
            _reseed(agent, rank_seed(agent.config.seed, rank, agent.step))
            agent.fit(shard, end - agent.step, action_key=action_key, discount_key=discount_key,
                      show_progress=show_progress and rank == 0, log_every=log_every,
                      logger=logger if rank == 0 else None)
            if rank == 0:
                agent.save(checkpoint)
            if world > 1:
                dist.barrier()
    finally:
        agent.grad_sync = None
    return agent


def gather_digests(agent: Agent) -> List[str]:
    """Every rank's :func:`parameter_digest` (a collective: all ranks must call it)."""
    return [str(d) for d in gather_values(parameter_digest(agent))]


def gather_values(value: Any) -> List[Any]:
    """Every rank's ``value`` (picklable), in rank order (a collective: all ranks must call it)."""
    rank, world = _rank_world()
    if world == 1:
        return [value]
    out: List[Any] = [None] * world
    dist.all_gather_object(out, value)
    return out
