"""Train an offline agent on a dataset file, on one process or data-parallel under ``torchrun``.

    # 2 processes on this machine (gloo on 127.0.0.1); each rank trains on half the episodes
    torchrun --standalone --nproc_per_node=2 -m ohio_layers.train \\
        --data runs/reacher/data/high_k5.npz --action-key z --agent IQL --steps 100000 --out runs/iql-ddp

    # one GPU per rank (NCCL); 2 machines: --nnodes=2 --node_rank=<i> --rdzv_endpoint=<host>:29500
    torchrun --nproc_per_node=4 -m ohio_layers.train --device cuda ...

    # the same without torchrun: one process
    python -m ohio_layers.train --data ... --agent IQL --steps 100000 --out runs/iql

Writes ``<out>/agent.pt`` (an ordinary ``Agent.load`` checkpoint, rank 0 alone, every
``--checkpoint-every`` steps) and ``<out>/ranks.json`` (the world size, the training wall time, every rank's
CPU seconds in the training loop and every rank's parameter digest, which must all be equal). Running the same command again resumes from
``agent.pt``: pass a larger ``--steps`` to train further. ``--set key=value`` overrides
agent config fields (JSON values), e.g. ``--set batch_size=512 --set hidden=[128,128]``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch

AGENTS = ("IQL", "CQL", "BC", "SAC")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ohio_layers.train", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="dataset .npz (ohio_layers.data.Dataset)")
    p.add_argument("--agent", choices=AGENTS, default="IQL")
    p.add_argument("--out", required=True, help="run directory (agent.pt, ranks.json)")
    p.add_argument("--steps", type=int, required=True, help="total gradient steps (a resumed run continues to this)")
    p.add_argument("--action-key", default="actions", help="action column ('z' for relabelled data)")
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda: one GPU per rank, NCCL)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="agent config field (JSON value)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    from .cli import _parse_sets
    from .data.dataset import Dataset
    from .data.io import atomic_write_bytes
    from .rl import Agent
    from .rl.cql import add_mc_returns
    from .rl.distributed import close_distributed, fit_distributed, gather_digests, gather_values, init_distributed

    args = build_parser().parse_args(argv)
    if args.steps < 0:
        raise SystemExit(f"--steps must be >= 0, got {args.steps}")
    torch.set_num_threads(args.threads)
    rank, world, device = init_distributed(args.device)
    try:
        dataset = Dataset.load(args.data)
        config = {**_parse_sets(args.set), "device": device}
        klass = Agent._registry[args.agent]
        try:
            agent = klass.from_dataset(dataset, config, action_key=args.action_key)
        except (TypeError, ValueError) as err:
            raise SystemExit(f"ohio_layers.train: {err}") from None
        if "mc_returns" in agent.required_extra_keys() and "mc_returns" not in dataset:
            dataset = add_mc_returns(dataset, agent.config.discount)
        out = Path(args.out)
        t0, c0 = time.perf_counter(), time.process_time()
        agent = fit_distributed(agent, dataset, args.steps, out / "agent.pt", checkpoint_every=args.checkpoint_every,
                                action_key=args.action_key, log_every=args.log_every,
                                show_progress=not args.no_progress)
        seconds = time.perf_counter() - t0
        cpu = gather_values(time.process_time() - c0)  # per rank: compute and gradient exchange, all threads
        digests = gather_digests(agent)
        if rank == 0:
            summary = {"world_size": world, "step": agent.step, "train_seconds": seconds, "train_cpu_seconds": cpu,
                       "digests": digests}
            atomic_write_bytes(out / "ranks.json", json.dumps(summary, indent=1).encode())
            if len(set(digests)) != 1:
                raise RuntimeError(f"ranks disagree on the parameters after training: {digests}")
            last = agent.history[-1] if agent.history else {}
            print(f"{args.agent}: {agent.step} steps on {world} rank(s); last metrics "
                  + ", ".join(f"{k}={v:.4g}" for k, v in last.items() if k != "step"))
    finally:
        close_distributed()


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
