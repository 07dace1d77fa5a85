"""Offline-RL training throughput: ohio IQL / CQL / BC against d3rlpy's, and against the GEMM floor.

    python benchmarks/bench_rl.py [--blocks 9] [--steps 10] [--algos iql,cql,bc] [--no-amp] [--profile] [--shapes]
                                   [--clock wall|thread] [--autograd] [--torch-losses]

Shapes: obs 42, action 7, batch 256, 2x256 ReLU MLPs, float32, one torch thread; CQL with 10
sampled actions per proposal (uniform, pi(s), pi(s')) and a fixed conservative weight 5 (d3rlpy:
``alpha_learning_rate=0``); BC maximises the Gaussian likelihood on both sides (d3rlpy
``policy_type="stochastic"``). Each block runs ``--steps`` updates of one implementation; the
blocks of all implementations are interleaved (rotating order) in this one process, and the table
gives the median ms per update and the ratio ``d3rlpy / ohio`` (> 1: ohio is faster). The ohio
step includes drawing its batch from a ``TransitionSampler``; d3rlpy's gets prebuilt numpy
minibatches (its own ``fit`` samples batches in Python and would be slower).

ohio's BC and IQL take the autograd-free path of ``ohio_layers.rl.fused`` (their default networks on
CPU; with numba installed, the extra ``fastqp``, the element-wise parts of their losses run as
compiled loops, ``--torch-losses`` uses the torch ops instead); ``--autograd`` switches the fused
path off to compare. ``bf16``: the same ohio agent with ``mixed_precision="bf16"`` (autocast on
the forward passes; bf16 kernels on the fused path).
``floor``: the time of the GEMMs a minimal implementation of the algorithm needs at these shapes
(forward, weight and input gradients of every linear layer), run back to back with ``torch.mm``
in float32 (``bf16 floor``: bfloat16) as one more interleaved contender, so machine load hits it
like the updates; the table gives its GFLOPS and ``floor / ohio``, the share of the update's time
the GEMMs alone would take (100 %: at the floor). The floor reuses one operand pair per distinct
shape, so its operands stay in cache; with distinct operands per GEMM, as an update's six networks
have, the same GEMMs were measured 8 % (fp32) and 12 % (bf16) slower. A closing line says which of issue 16's targets
are met. ``--profile`` adds where an update's time goes (forward / backward / optimizer, GEMMs vs
the rest, aten ops per update; the fused path has no autograd engine, so all of it counts as
forward); ``--clock thread`` times the thread's CPU time instead of wall time (preemption by other
processes on a loaded machine then does not count, cache and memory contention still does);
``--shapes`` the fp32 and bf16 GEMM rate of every shape in the
floors. d3rlpy is skipped with a message when it is not installed (``pip install -e ".[bench]"
-c constraints.txt``; 2.8.0 installs next to numpy<2).
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Tuple

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import random_transitions  # noqa: E402

from ohio_layers.data import Dataset  # noqa: E402
from ohio_layers.rl import BC, CQL, IQL  # noqa: E402
from ohio_layers.rl.fused import set_fused  # noqa: E402
from ohio_layers.rl.fused_kernels import compiled_enabled, set_compiled  # noqa: E402

OBS, ACT, BATCH, HIDDEN, SAMPLES = 42, 7, 256, (256, 256), 10
Gemm = Tuple[int, int, int]  # (M, N, K): (M, K) @ (K, N)


# ------------------------------------------------------------------------------------ GEMM floor
def mlp_gemms(rows: int, in_dim: int, out_dim: int, mode: str) -> List[Gemm]:
    """GEMMs of one pass through an ``in -> 256 -> 256 -> out`` MLP.

    ``mode``: ``"fwd"`` (no gradient), ``"train"`` (weight gradients; input gradients except at the
    input layer), ``"through"`` (input gradients down to the input, no weight gradients).
    """
    dims = [in_dim, *HIDDEN, out_dim]
    out: List[Gemm] = []
    for i, (fi, fo) in enumerate(zip(dims[:-1], dims[1:])):
        out.append((rows, fo, fi))  # y = x W^T
        if mode == "train":
            out.append((fo, fi, rows))  # dW = dy^T x
        if (mode == "train" and i > 0) or mode == "through":
            out.append((rows, fi, fo))  # dx = dy W
    return out


def algorithm_gemms(algo: str) -> List[Gemm]:
    """The GEMMs a minimal implementation needs per update at the benchmark's shapes."""
    b, sa = BATCH, OBS + ACT
    if algo == "bc":  # Gaussian actor with a state-dependent std: mean and log-std heads
        return mlp_gemms(b, OBS, 2 * ACT, "train")
    if algo == "iql":
        g = 2 * mlp_gemms(b, sa, 1, "fwd")  # target critics at (s, a), shared by the V and actor losses
        g += mlp_gemms(b, OBS, 1, "train")  # V(s)
        g += mlp_gemms(2 * b, OBS, 1, "fwd")  # updated V(s) for the advantage and V(s') for the TD target
        g += mlp_gemms(b, OBS, ACT, "train")  # actor (state-independent std, as in the paper)
        g += 2 * mlp_gemms(b, sa, 1, "train")  # critics
        return g
    if algo == "cql":
        g = 2 * mlp_gemms(b, OBS, 2 * ACT, "fwd")  # actor at s and s' (the sampled proposals and a')
        g += 2 * mlp_gemms(b, sa, 1, "fwd")  # target critics at (s', a')
        g += 2 * mlp_gemms(b * (1 + 3 * SAMPLES), sa, 1, "train")  # critics: data actions + 3 x 10 proposals
        g += mlp_gemms(b, OBS, 2 * ACT, "train") + 2 * mlp_gemms(b, sa, 1, "through")  # actor loss through Q
        return g
    raise ValueError(f"unknown algorithm {algo!r}")


def floor_step(gemms: List[Gemm], dtype: torch.dtype) -> Callable[[], None]:
    """One ``torch.mm`` per GEMM of ``gemms`` on preallocated ``dtype`` operands (timed like an update)."""
    operands = {shape: (torch.randn(shape[0], shape[2], dtype=dtype), torch.randn(shape[2], shape[1], dtype=dtype))
                for shape in set(gemms)}
    calls = [operands[shape] for shape in gemms]

    def step() -> None:
        for a, w in calls:
            torch.mm(a, w)
    return step


# ------------------------------------------------------------------------------------ contenders
def make_data(n: int = 20_000, seed: int = 0) -> Dataset:
    return random_transitions(n, OBS, ACT, seed, episodes=n // 200, terminal_rate=0.01, action_bound=0.99)


def ohio_step(algo: str, data: Dataset, precision: Optional[str]) -> Callable[[], None]:
    cfg = {"batch_size": BATCH, "hidden": HIDDEN, "mixed_precision": precision}
    if algo == "iql":
        agent = IQL(OBS, ACT, -1.0, 1.0, cfg)
    elif algo == "cql":
        agent = CQL(OBS, ACT, -1.0, 1.0, {**cfg, "num_samples": SAMPLES, "cql_alpha": 5.0})
    else:
        agent = BC(OBS, ACT, -1.0, 1.0, cfg)
    sampler = agent.make_sampler(data)
    agent.train()
    # like ``fit``: the agent's generator drives the global RNG for the whole run (entered once, not per step),
    # and the metrics stay tensors (``fit`` turns them into floats once per log row)
    scope = agent.rng_scope()
    scope.__enter__()

    def step() -> None:
        agent.update_tensors(sampler.sample(BATCH))
    return step


def d3rlpy_step(algo: str, data: Dataset) -> Optional[Callable[[], None]]:
    try:
        import logging

        import d3rlpy
        import structlog
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    except ImportError:
        return None
    from d3rlpy.dataset import TransitionMiniBatch

    if algo == "iql":
        algo_ = d3rlpy.algos.IQLConfig(batch_size=BATCH).create(device="cpu:0")
    elif algo == "cql":
        algo_ = d3rlpy.algos.CQLConfig(batch_size=BATCH, n_action_samples=SAMPLES, conservative_weight=5.0,
                                       alpha_learning_rate=0.0).create(device="cpu:0")
    else:
        algo_ = d3rlpy.algos.BCConfig(batch_size=BATCH, policy_type="stochastic").create(device="cpu:0")
    algo_.create_impl((OBS,), ACT)
    rng = np.random.default_rng(1)
    pool = []
    for _ in range(16):
        i = rng.integers(0, len(data), BATCH)
        col = lambda k, i=i: np.ascontiguousarray(np.asarray(data[k])[i], dtype=np.float32)  # noqa: E731
        pool.append(TransitionMiniBatch(
            observations=col("observations"), actions=col("actions"), rewards=col("rewards")[:, None],
            next_observations=col("next_observations"), next_actions=col("actions"),
            terminals=col("terminals")[:, None], intervals=np.ones((BATCH, 1), np.float32), transitions=[]))
    count = [0]

    def step() -> None:
        algo_.update(pool[count[0] % len(pool)])
        count[0] += 1
    return step


# ------------------------------------------------------------------------------------ timing
CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}
CLOCK = [time.perf_counter]


def interleaved(contenders: Dict[str, Callable[[], None]], blocks: int, steps: int) -> Dict[str, float]:
    """Median ms per step of each contender over ``blocks`` interleaved blocks of ``steps`` steps
    (``--clock``: wall time, or this thread's CPU time, which a loaded machine's preemptions do not inflate)."""
    clock = CLOCK[0]
    names = list(contenders)
    for fn in contenders.values():  # warm-up
        for _ in range(3):
            fn()
    times: Dict[str, List[float]] = {n: [] for n in names}
    for b in range(blocks):
        for name in names[b % len(names):] + names[:b % len(names)]:
            fn = contenders[name]
            t = clock()
            for _ in range(steps):
                fn()
            times[name].append(1e3 * (clock() - t) / steps)
    return {n: statistics.median(v) for n, v in times.items()}


def shape_rates(gemms: List[Gemm], blocks: int) -> List[Tuple[Gemm, int, float, float]]:
    """``[(shape, count per update, fp32 us, bf16 us)]``: median time of one ``torch.mm`` per distinct shape."""
    shapes = sorted(set(gemms), key=lambda s: -s[0] * s[1] * s[2])
    contenders = {}
    for shape in shapes:
        for dtype in (torch.float32, torch.bfloat16):
            a, w = torch.randn(shape[0], shape[2], dtype=dtype), torch.randn(shape[2], shape[1], dtype=dtype)
            contenders[(shape, dtype)] = lambda a=a, w=w: torch.mm(a, w)
    med = interleaved(contenders, blocks, 20)
    return [(s, gemms.count(s), 1e3 * med[(s, torch.float32)], 1e3 * med[(s, torch.bfloat16)]) for s in shapes]


GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation")


def profile_split(step: Callable[[], None], steps: int, sessions_count: int = 5) -> Dict[str, float]:
    """Median over ``sessions_count`` profiled runs of ``steps`` updates: ops per update and ms per update by phase.

    Phases: ``optimizer`` (under ``Optimizer.*`` / ``zero_grad``), ``backward`` (under the autograd
    engine), ``forward`` (the rest: sampling, forward passes, losses, Polyak); each split into its
    GEMMs (``aten::mm/addmm/bmm/baddbmm`` self time) and everything else. Profiler overhead
    inflates the small ops, so the split is a guide, not a timing.
    """
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):
        step()
    sessions: List[Dict[str, float]] = []
    for _ in range(sessions_count):  # the median over sessions drops most preemptions of a loaded machine
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
        out: Dict[str, float] = defaultdict(float)
        for ev in prof.events():
            phase, parent = "forward", ev
            while parent is not None:
                if parent.name.startswith("Optimizer."):
                    phase = "optimizer"
                    break
                if parent.name.startswith("autograd::engine"):
                    phase = "backward"
                parent = parent.cpu_parent
            kind = "gemm" if ev.name in GEMM_OPS else "other"
            out[f"{phase} {kind}"] += ev.self_cpu_time_total / 1e3 / steps
            if ev.name.startswith("aten::"):
                out["aten ops"] += 1.0 / steps
        sessions.append(out)
    return {k: statistics.median(s.get(k, 0.0) for s in sessions) for k in set().union(*sessions)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=9)
    ap.add_argument("--steps", type=int, default=10, help="updates per block (CQL uses a third)")
    ap.add_argument("--algos", default="iql,cql,bc")
    ap.add_argument("--no-amp", action="store_true", help="skip the bf16 autocast rows")
    ap.add_argument("--profile", action="store_true",
                    help="also print where an ohio update's time goes (torch.profiler)")
    ap.add_argument("--shapes", action="store_true", help="also print the GEMM rate of every shape of the floors")
    ap.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                    help="wall time, or the thread's CPU time (robust to other processes on a loaded machine)")
    ap.add_argument("--autograd", action="store_true",
                    help="ohio's BC and IQL take the autograd path (ohio_layers.rl.fused switched off), to compare")
    ap.add_argument("--torch-losses", action="store_true",
                    help="the fused path computes its losses with torch ops, not the numba loops, to compare")
    args = ap.parse_args()
    CLOCK[0] = CLOCKS[args.clock]
    if args.autograd:
        set_fused(False)
    if args.torch_losses:
        set_compiled(False)
    torch.set_num_threads(1)
    data = make_data()
    rows = []
    splits = []
    missing = False
    for algo in args.algos.split(","):
        contenders: Dict[str, Callable[[], None]] = {"fp32": ohio_step(algo, data, None)}
        if not args.no_amp:
            contenders["bf16"] = ohio_step(algo, data, "bf16")
        gemms = algorithm_gemms(algo)
        contenders["floor32"] = floor_step(gemms, torch.float32)
        contenders["floor16"] = floor_step(gemms, torch.bfloat16)
        d3 = d3rlpy_step(algo, data)
        if d3 is None:
            missing = True
        else:
            contenders["d3rlpy"] = d3
        steps = max(1, args.steps // 3) if algo == "cql" else args.steps
        med = interleaved(contenders, args.blocks, steps)
        floor32, floor16 = med.pop("floor32"), med.pop("floor16")
        gflop = sum(2 * m * n * k for m, n, k in gemms) / 1e9
        rows.append((algo, med, floor32, floor16, gflop))
        if args.profile:
            for prec in ("fp32", "bf16") if "bf16" in contenders else ("fp32",):
                splits.append((algo, prec, profile_split(contenders[prec], steps)))

    def fmt(v: Optional[float], spec: str = ".2f") -> str:
        return "-" if v is None else format(v, spec)

    path = ("autograd" if args.autograd else "default (fused where it applies, losses "
            + ("in numba loops)" if compiled_enabled() else "in torch ops)"))
    print(f"clock={args.clock}  path={path}  "
          f"threads={torch.get_num_threads()}  obs={OBS} act={ACT} batch={BATCH} hidden={HIDDEN} cql samples={SAMPLES}")
    print("| algo | ohio fp32 ms | ohio bf16 ms | d3rlpy ms | fp32 x d3rlpy | bf16 x d3rlpy "
          "| GEMM floor fp32 ms (GFLOP, GFLOPS) "
          "| floor / ohio fp32 | GEMM floor bf16 ms (GFLOPS) | bf16 floor / ohio bf16 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    verdicts = []
    for algo, med, f32, f16, gflop in rows:
        d3, bf = med.get("d3rlpy"), med.get("bf16")
        r32 = d3 / med["fp32"] if d3 else None
        r16 = d3 / bf if d3 and bf else None
        print(f"| {algo.upper()} | {fmt(med['fp32'])} | {fmt(bf)} | {fmt(d3)} | {fmt(r32)} | {fmt(r16)} | "
              f"{f32:.2f} ({gflop:.2f}, {gflop / f32 * 1e3:.0f}) | {100 * f32 / med['fp32']:.0f} % | "
              f"{f16:.2f} ({gflop / f16 * 1e3:.0f}) | {f'{100 * f16 / bf:.0f} %' if bf else '-'} |")
        target32, target16 = TARGETS[algo]
        verdicts.append(f"{algo.upper()} fp32 >= {target32}x d3rlpy: {_met(r32, target32)}, within 15 % of the floor: "
                        f"{'met' if med['fp32'] <= 1.15 * f32 else 'unmet'}"
                        + (f"; bf16 >= {target16}x d3rlpy: {_met(r16, target16)}" if target16 else ""))
    print("targets (issue 16): " + " | ".join(verdicts))
    if splits:
        keys = ["forward gemm", "forward other", "backward gemm", "backward other", "optimizer gemm", "optimizer other"]
        shown = [k for k in keys if k != "optimizer gemm"]
        print("\nwhere an ohio update's time goes (torch.profiler self time, ms per update; "
              "the profiler inflates small ops)")
        print("| algo | precision | aten ops | " + " | ".join(shown) + " | GEMM share |")
        print("|---|---|---|" + "---|" * (len(keys) - 1) + "---|")
        for algo, prec, sp in splits:
            total = sum(v for k, v in sp.items() if k != "aten ops")
            gemm = sum(v for k, v in sp.items() if k.endswith("gemm"))
            print(f"| {algo.upper()} | {prec} | {sp.get('aten ops', 0):.0f} | "
                  + " | ".join(f"{sp.get(k, 0.0):.2f}" for k in shown) + f" | {100 * gemm / total:.0f} % |")
    if args.shapes:
        print("\nGEMM rate per shape (one torch.mm, median of interleaved blocks; M x N x K = (M, K) @ (K, N))")
        print("| algo | M x N x K | per update | fp32 us | fp32 GFLOPS | bf16 us | bf16 GFLOPS |")
        print("|---|---|---|---|---|---|---|")
        for algo in args.algos.split(","):
            for (m, n, k), count, t32, t16 in shape_rates(algorithm_gemms(algo), args.blocks):
                flop = 2 * m * n * k / 1e3
                print(f"| {algo.upper()} | {m} x {n} x {k} | {count} | {t32:.1f} | {flop / t32:.0f} | "
                      f"{t16:.1f} | {flop / t16:.0f} |")
    if missing:
        print("d3rlpy is not installed: its columns are empty (pip install -e '.[bench]' -c constraints.txt)")


TARGETS = {"iql": (1.6, 2.0), "cql": (1.1, 2.0), "bc": (2.5, None)}


def _met(ratio: Optional[float], target: float) -> str:
    return "no d3rlpy" if ratio is None else ("met" if ratio >= target else "unmet")


if __name__ == "__main__":
    main()
