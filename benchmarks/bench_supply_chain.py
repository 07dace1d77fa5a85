"""Benchmark: the supply-chain lower level per problem -- batched closed form, batched HiGHS, per-sample HiGHS loop.

    python benchmarks/bench_supply_chain.py [--batch 256] [--repeats 3]

Problems: random states and z of a one-factory star with S = 10 (1W10S: capacities 15, factory
80, C = 60) and S = 100 (a 1W100S star: capacities 15, factory 800, C = 600); integer mode.
Methods: ``closed_form`` (batched torch, one call per batch), ``highs`` (the two lexicographic
stages as one block-diagonal LP each for the whole batch) and the anchor, a per-sample HiGHS
loop (``solve`` on one problem at a time, two LPs each). Every method is checked to give the
same stage objectives (1e-9). Reported: median over repeats of the time per problem (us), and
ratio = per-sample-loop time / method time. Methods are interleaved within each repeat, so a
loaded machine slows them alike.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from ohio_layers.lowlevel.supply_chain import SupplyChainController


def problems(S: int, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    cap_f, C = 8.0 * S, 6.0 * S
    I = torch.randint(0, 20, (batch, S), generator=g).double()
    D = torch.rand(batch, S, generator=g, dtype=torch.float64) * 25
    A = torch.randint(0, 8, (batch, S), generator=g).double()
    If = torch.randint(0, int(cap_f) // 2, (batch,), generator=g).double()
    Af = torch.minimum(torch.randint(0, int(C) + 1, (batch,), generator=g).double(), cap_f - If)
    u = torch.distributions.Dirichlet(torch.ones(S + 1)).sample((batch,)).double()
    q = torch.rand(batch, 1, generator=g, dtype=torch.float64) * C
    return SupplyChainController([15.0] * S, cap_f, C), torch.cat([I, D, A, If[:, None], Af[:, None]], 1), torch.cat([u, q], 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--loop", type=int, default=32, help="problems solved by the per-sample loop per repeat")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"{'problem':<10} {'method':<26} {'us/problem':>12} {'ratio vs loop':>14}")
    for S in (10, 100):
        c, state, z = problems(S, args.batch, S)
        ref = c.solve(state, z, "closed_form")
        times = {"closed form (batched)": [], "HiGHS (batched LP)": [], "HiGHS per-sample loop": []}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            c.solve(state, z, "closed_form")
            times["closed form (batched)"].append((time.perf_counter() - t0) / args.batch)
            t0 = time.perf_counter()
            lp = c.solve(state, z, "highs")
            times["HiGHS (batched LP)"].append((time.perf_counter() - t0) / args.batch)
            t0 = time.perf_counter()
            loop = [c.solve(state[i:i + 1], z[i:i + 1], "highs") for i in range(args.loop)]
            times["HiGHS per-sample loop"].append((time.perf_counter() - t0) / args.loop)
        assert torch.allclose(lp.stage1, ref.stage1, atol=1e-9) and torch.allclose(lp.stage2, ref.stage2, atol=1e-9)
        assert all(abs(float(s.stage2[0] - ref.stage2[i])) <= 1e-9 for i, s in enumerate(loop))
        anchor = statistics.median(times["HiGHS per-sample loop"])
        for name, ts in times.items():
            t = statistics.median(ts)
            print(f"{'1W' + str(S) + 'S':<10} {name:<26} {1e6 * t:>12.1f} {anchor / t:>14.1f}")


if __name__ == "__main__":
    main()
