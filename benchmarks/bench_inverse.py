"""Inverse throughput: transitions/s of each solver, batched vs a per-sample loop.

    python benchmarks/bench_inverse.py [--n 100000] [--loop-n 200]

Problem: the reacher's 5-step LQR loop (4 states, 2 clipped torques, z in R^4) with a
reacher-like linearisation given per window (the MuJoCo finite differences are a simulator
cost and are timed separately by the reacher tooling). "relabel" rows include building the
context (Riccati gains) and the residual report, i.e. everything of
``ohio_layers.inverse.relabel`` except reading the dataset. One torch thread.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import reacher_like_lqr  # noqa: E402

from ohio_layers.inverse import AdamSolver, AnalyticSolver, CEMSolver, InverseProblem, LevenbergMarquardt  # noqa: E402
from ohio_layers.lowlevel import LinearizedDynamics, rollout  # noqa: E402


def make_data(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    c = reacher_like_lqr(action_bound=1.0)
    x0 = torch.randn(n, 4, generator=g, dtype=torch.float64)
    z = 3 * torch.randn(n, 4, generator=g, dtype=torch.float64)
    traj, _ = rollout(c, LinearizedDynamics(), x0, z)
    return c, x0, traj[:, -1]


def run(solver, problem, x0, target, warm):
    batch = problem.batch(x0, target=target)  # context (Riccati) included in the timing
    z0 = AnalyticSolver().solve(problem, batch).z if warm else None
    return solver.solve(problem, batch, z0)


def timeit(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="transitions in the batched run")
    ap.add_argument("--loop-n", type=int, default=200, help="transitions in the per-sample loop")
    args = ap.parse_args()
    torch.set_num_threads(1)
    c, x0, target = make_data(args.n)
    problem = InverseProblem(c, LinearizedDynamics())
    solvers = [
        ("analytic (relabel)", AnalyticSolver(), False, args.n),
        ("LM 30 it, analytic init", LevenbergMarquardt(max_iter=30), True, min(args.n, 20_000)),
        ("Adam 1000 it", AdamSolver(max_iter=1000), False, min(args.n, 5_000)),
        ("CEM 128x100", CEMSolver(), False, min(args.n, 2_000)),
    ]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, float64")
    print(f"{'solver':<26}{'batched tr/s':>14}{'loop tr/s':>12}{'ratio':>9}{'median residual':>17}")
    for name, solver, warm, n in solvers:
        run(solver, problem, x0[:64], target[:64], warm)  # warm-up
        tb = timeit(lambda: run(solver, problem, x0[:n], target[:n], warm), repeat=2 if n > 10_000 else 3)
        res = run(solver, problem, x0[:n], target[:n], warm)
        m = min(args.loop_n, n) if not isinstance(solver, (AdamSolver, CEMSolver)) else min(20, n)
        tl = timeit(lambda: [run(solver, problem, x0[i:i + 1], target[i:i + 1], warm) for i in range(m)], repeat=1)
        print(f"{name:<26}{n / tb:>14,.0f}{m / tl:>12,.0f}{(n / tb) / (m / tl):>8.0f}x{float(res.residual.median()):>17.2e}")


if __name__ == "__main__":
    main()
