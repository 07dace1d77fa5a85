"""Benchmark: MinCostFlowController vs a networkx network-simplex loop (40-node complete graph).

    python benchmarks/bench_min_cost_flow.py [--nodes 40] [--batch 64] [--repeats 3]

Problems as in anchor-libraries-measured.md §4: nodes uniform in the unit square, complete
directed graph (N=40: 1560 edges), travel time = distance * (1 + 0.3 U) + 0.05 (different per
problem), idle counts and targets ~ multinomial(5N). The networkx baseline solves each problem
in a Python loop with network_simplex on the graph itself (node demand = target - idle, integer
weights round(1e4 t)), as measured there (about 6 ms/problem). The controller solves the
one-hop transportation LP with HiGHS (mode "lp"), or the quadratically regularised problem with
its batched Newton solver (mode "qp"); backward = implicit differentiation. Loss = <g, flows>.
Reported: median over repeats of the per-problem time; ratio = networkx time / method time.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, List

import networkx as nx
import numpy as np
import torch

from ohio_layers.lowlevel.min_cost_flow import MinCostFlowController


def make_problems(n: int, batch: int, seed: int):
    rng = np.random.default_rng(seed)
    pts = rng.random((n, 2))
    g = nx.complete_graph(n, create_using=nx.DiGraph)
    ctrl_edges = [(u, v) for u, v in g.edges if u != v]
    dist = np.array([np.linalg.norm(pts[u] - pts[v]) for u, v in ctrl_edges])
    for (u, v), d in zip(ctrl_edges, dist):
        g.edges[u, v]["time"] = float(d + 0.05)
    costs = dist[None, :] * (1 + 0.3 * rng.random((batch, len(ctrl_edges)))) + 0.05
    idle = rng.multinomial(5 * n, np.ones(n) / n, size=batch).astype(np.float64)
    target = rng.multinomial(5 * n, np.ones(n) / n, size=batch).astype(np.float64)
    return g, ctrl_edges, costs, idle, target


def networkx_loop(n: int, edges, costs: np.ndarray, idle: np.ndarray, target: np.ndarray) -> List[float]:
    out = []
    for b in range(len(idle)):
        G = nx.DiGraph()
        for i in range(n):
            G.add_node(i, demand=int(target[b, i] - idle[b, i]))
        w = np.round(costs[b] * 1e4).astype(np.int64)
        for (u, v), wi in zip(edges, w):
            G.add_edge(u, v, weight=int(wi))
        cost, _ = nx.network_simplex(G)
        out.append(cost / 1e4)
    return out


def timed(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (builds the HiGHS model, allocations)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    n, B = args.nodes, args.batch
    g, edges, costs, idle, target = make_problems(n, B, args.seed)
    lp = MinCostFlowController(g, mode="lp")
    qp = MinCostFlowController(g, mode="qp", reg=0.01)
    assert [tuple(e) for e in lp.edge_index.T.tolist()] == edges
    idle_t = torch.as_tensor(idle)
    z_t = torch.as_tensor(target / target.sum(1, keepdims=True))
    cost_t = torch.as_tensor(costs)
    g_t = torch.randn(B, len(edges), generator=torch.Generator().manual_seed(args.seed), dtype=torch.float64)

    # sanity: same optimum as networkx (transportation LP = min-cost flow on a metric complete graph)
    nx_obj = np.array(networkx_loop(n, edges, costs[:8], idle[:8], target[:8]))
    lp_obj = lp.solve(idle_t[:8], z_t[:8], cost_t[:8]).objective.numpy()
    gap = float(np.abs(nx_obj - lp_obj).max())

    def fwd(ctrl, b):
        def run():
            with torch.no_grad():
                ctrl.solve(idle_t[:b], z_t[:b], cost_t[:b])
        return run

    def fwd_bwd(ctrl, b):
        def run():
            z = z_t[:b].clone().requires_grad_(True)
            c = cost_t[:b].clone().requires_grad_(True)
            (ctrl.solve(idle_t[:b], z, c).flows * g_t[:b]).sum().backward()
        return run

    rows = []
    t_nx1 = timed(lambda: networkx_loop(n, edges, costs[:1], idle[:1], target[:1]), args.repeats)
    t_nxB = timed(lambda: networkx_loop(n, edges, costs, idle, target), args.repeats) / B
    rows.append(("networkx network_simplex loop", "fwd", t_nx1, t_nxB))
    for name, ctrl in (("controller lp (HiGHS; QP-surrogate grad)", lp), ("controller qp (batched Newton, reg 0.01)", qp)):
        rows.append((name, "fwd", timed(fwd(ctrl, 1), args.repeats), timed(fwd(ctrl, B), args.repeats) / B))
        rows.append((name, "fwd+bwd", timed(fwd_bwd(ctrl, 1), args.repeats), timed(fwd_bwd(ctrl, B), args.repeats) / B))

    print(f"min-cost flow, N={n} complete graph ({len(edges)} edges), torch threads=1, median of {args.repeats}")
    print(f"LP objective gap controller vs networkx (8 problems, weights quantised 1e-4): {gap:.2e}")
    head = f"| {'method':<42} | {'mode':<7} | {'B=1 ms/problem':>14} | {f'B={B} ms/problem':>15} | {'ratio nx/method (B=' + str(B) + ')':>24} |"
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for name, mode, t1, tB in rows:
        print(f"| {name:<42} | {mode:<7} | {1e3 * t1:>14.2f} | {1e3 * tB:>15.2f} | {t_nxB / tB:>24.2f} |")


if __name__ == "__main__":
    main()
