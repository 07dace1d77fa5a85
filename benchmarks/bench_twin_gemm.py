"""Would merging the twin critics' matrix products speed up the fused IQL update? (issue 16)

    python benchmarks/bench_twin_gemm.py [--reps 1000] [--rounds 15]

The twin critics (and the twin target critics) of IQL read the same input ``x (B, obs + action)``,
so their first layers could run as one wider GEMM and their other layers as one ``bmm`` over the
stacked pair. This script times each matrix product of the fused kernels
(:class:`ohio_layers.rl.fused.ReluMLPKernel`, its exact layouts: ``addmm(b, h, W^T)``, weight
gradient ``g^T h``, input gradient ``g W``; bfloat16 forward: oneDNN's fused linear) for the two
networks separately ("two") against the merged form ("merged"), at the benchmark shapes (obs 42,
action 7, batch 256, 2x256 ReLU MLPs), float32 and bfloat16, one torch thread. The two forms run
in interleaved rounds (alternating order) and each is timed with the thread's CPU time; the table
gives the median microseconds per pair of networks and ``merged / two`` (< 1: merging is faster).
It also compares the value network's forward on ``[s; s']`` (one GEMM of 2B rows, what the fused
update does) against two B-row GEMMs.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, List, Tuple

import torch

OBS, ACT, BATCH, HIDDEN = 42, 7, 256, 256


def interleaved(two: Callable[[], object], merged: Callable[[], object], reps: int, rounds: int) -> Tuple[float, float]:
    """Median thread-CPU microseconds per call of ``two`` and of ``merged`` over ``rounds`` blocks of ``reps`` calls
    (the blocks alternate which runs first)."""
    for _ in range(max(reps // 10, 10)):
        two()
        merged()
    t_two: List[float] = []
    t_merged: List[float] = []
    for r in range(rounds):
        order = ((two, t_two), (merged, t_merged)) if r % 2 == 0 else ((merged, t_merged), (two, t_two))
        for fn, times in order:
            t0 = time.thread_time_ns()
            for _ in range(reps):
                fn()
            times.append((time.thread_time_ns() - t0) / reps / 1e3)
    return statistics.median(t_two), statistics.median(t_merged)


def cases(dtype: torch.dtype, gen: torch.Generator) -> List[Tuple[str, Callable[[], object], Callable[[], object]]]:
    """``(name, two networks, merged)`` callables of every matrix product a merged twin kernel would change."""
    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(dtype)

    def empty(*shape: int) -> torch.Tensor:
        return torch.empty(*shape, dtype=dtype)

    B, H, D = BATCH, HIDDEN, OBS + ACT
    x = rand(B, D)
    w1, w2 = rand(H, D), rand(H, D)
    b1, b2 = rand(H), rand(H)
    w_cat, b_cat = torch.cat([w1, w2]), torch.cat([b1, b2])
    o1, o2, o_cat = empty(B, H), empty(B, H), empty(B, 2 * H)
    out: List[Tuple[str, Callable[[], object], Callable[[], object]]] = []
    linear = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if dtype == torch.bfloat16 and linear is not None:
        out.append((f"L1 fwd, oneDNN linear+relu: 2x ({B},{D})@({D},{H}) | ({B},{D})@({D},{2 * H})",
                    lambda: (linear(x, w1, b1, "relu", [], ""), linear(x, w2, b2, "relu", [], "")),
                    lambda: linear(x, w_cat, b_cat, "relu", [], "")))
    else:
        out.append((f"L1 fwd, addmm+relu_: 2x ({B},{D})@({D},{H}) | ({B},{D})@({D},{2 * H})",
                    lambda: (torch.addmm(b1, x, w1.t(), out=o1).relu_(), torch.addmm(b2, x, w2.t(), out=o2).relu_()),
                    lambda: torch.addmm(b_cat, x, w_cat.t(), out=o_cat).relu_()))
    g1, g2 = rand(B, H), rand(B, H)
    g_cat = torch.cat([g1, g2], 1)
    d1, d2, d_cat = empty(H, D), empty(H, D), empty(2 * H, D)
    out.append((f"L1 dW = g^T x: 2x ({H},{B})@({B},{D}) | ({2 * H},{B})@({B},{D})",
                lambda: (torch.mm(g1.t(), x, out=d1), torch.mm(g2.t(), x, out=d2)),
                lambda: torch.mm(g_cat.t(), x, out=d_cat)))
    out.append((f"L1 dW as x^T g into dW^T: 2x | one ({D},{B})@({B},{2 * H})",
                lambda: (torch.mm(g1.t(), x, out=d1), torch.mm(g2.t(), x, out=d2)),
                lambda: torch.mm(x.t(), g_cat, out=d_cat.t())))
    s1, s2, s_cat = empty(H), empty(H), empty(2 * H)
    out.append(("L1 db = sum g: 2x | one",
                lambda: (torch.sum(g1, 0, out=s1), torch.sum(g2, 0, out=s2)), lambda: torch.sum(g_cat, 0, out=s_cat)))
    h1, h2 = rand(B, H).relu_(), rand(B, H).relu_()
    h_st = torch.stack([h1, h2])
    v1, v2 = rand(H, H), rand(H, H)
    v_st = torch.stack([v1, v2])
    c1, c2 = rand(H), rand(H)
    c_st = torch.stack([c1, c2]).unsqueeze(1)
    o_st = empty(2, B, H)
    g_st = torch.stack([g1, g2])
    e1, e2, e_st = empty(H, H), empty(H, H), empty(2, H, H)
    if dtype == torch.bfloat16 and linear is not None:  # the bf16 kernel's forward: oneDNN's linear (+ relu)
        out.append((f"L2 fwd: 2x oneDNN linear+relu ({B},{H})@({H},{H}) | baddbmm+relu_",
                    lambda: (linear(h1, v1, c1, "relu", [], ""), linear(h2, v2, c2, "relu", [], "")),
                    lambda: torch.baddbmm(c_st, h_st, v_st.transpose(1, 2), out=o_st).relu_()))
    else:
        out.append((f"L2 fwd: 2x addmm+relu_ ({B},{H})@({H},{H}) | baddbmm+relu_",
                    lambda: (torch.addmm(c1, h1, v1.t(), out=o1).relu_(), torch.addmm(c2, h2, v2.t(), out=o2).relu_()),
                    lambda: torch.baddbmm(c_st, h_st, v_st.transpose(1, 2), out=o_st).relu_()))
    out.append(("L2 dW = g^T h: 2x mm | bmm",
                lambda: (torch.mm(g1.t(), h1, out=e1), torch.mm(g2.t(), h2, out=e2)),
                lambda: torch.bmm(g_st.transpose(1, 2), h_st, out=e_st)))
    out.append(("L2 input grad g W: 2x mm | bmm",
                lambda: (torch.mm(g1, v1, out=o1), torch.mm(g2, v2, out=o2)), lambda: torch.bmm(g_st, v_st, out=o_st)))
    u1, u2 = rand(1, H), rand(1, H)
    u_st = torch.stack([u1, u2])
    a1, a2 = rand(1), rand(1)
    q1, q2, q_st = empty(B, 1), empty(B, 1), empty(2, B, 1)
    a_st = torch.stack([a1, a2]).unsqueeze(1)
    if dtype == torch.bfloat16 and linear is not None:
        out.append((f"out fwd: 2x oneDNN linear ({B},{H})@({H},1) | baddbmm",
                    lambda: (linear(h1, u1, a1, "none", [], ""), linear(h2, u2, a2, "none", [], "")),
                    lambda: torch.baddbmm(a_st, h_st, u_st.transpose(1, 2), out=q_st)))
    else:
        out.append((f"out fwd: 2x addmm ({B},{H})@({H},1) | baddbmm",
                    lambda: (torch.addmm(a1, h1, u1.t(), out=q1), torch.addmm(a2, h2, u2.t(), out=q2)),
                    lambda: torch.baddbmm(a_st, h_st, u_st.transpose(1, 2), out=q_st)))
    go1, go2 = rand(B, 1), rand(B, 1)
    go_st = torch.stack([go1, go2])
    f1, f2, f_st = empty(1, H), empty(1, H), empty(2, 1, H)
    out.append(("out dW = g^T h: 2x mm | bmm",
                lambda: (torch.mm(go1.t(), h1, out=f1), torch.mm(go2.t(), h2, out=f2)),
                lambda: torch.bmm(go_st.transpose(1, 2), h_st, out=f_st)))
    out.append(("out input grad g W: 2x mm | bmm",
                lambda: (torch.mm(go1, u1, out=o1), torch.mm(go2, u2, out=o2)), lambda: torch.bmm(go_st, u_st, out=o_st)))
    s, s_next = rand(B, OBS), rand(B, OBS)
    both = torch.cat([s, s_next])
    wv = rand(H, OBS)
    o_both = empty(2 * B, H)
    h_both = torch.cat([h1, h2])
    if dtype == torch.bfloat16 and linear is not None:
        out.append((f"value L1 fwd on s, s': 2x ({B},{OBS})@({OBS},{H}) | ({2 * B},{OBS}), oneDNN",
                    lambda: (linear(s, wv, c1, "relu", [], ""), linear(s_next, wv, c1, "relu", [], "")),
                    lambda: linear(both, wv, c1, "relu", [], "")))
        out.append((f"value L2 fwd on s, s': 2x ({B},{H})@({H},{H}) | ({2 * B},{H}), oneDNN",
                    lambda: (linear(h1, v1, c1, "relu", [], ""), linear(h2, v1, c1, "relu", [], "")),
                    lambda: linear(h_both, v1, c1, "relu", [], "")))
    else:
        out.append((f"value L1 fwd on s, s': 2x ({B},{OBS})@({OBS},{H}) | ({2 * B},{OBS})",
                    lambda: (torch.addmm(c1, s, wv.t(), out=o1), torch.addmm(c1, s_next, wv.t(), out=o2)),
                    lambda: torch.addmm(c1, both, wv.t(), out=o_both)))
        out.append((f"value L2 fwd on s, s': 2x ({B},{H})@({H},{H}) | ({2 * B},{H})",
                    lambda: (torch.addmm(c1, h1, v1.t(), out=o1), torch.addmm(c1, h2, v1.t(), out=o2)),
                    lambda: torch.addmm(c1, h_both, v1.t(), out=o_both)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1000, help="calls per timed block")
    ap.add_argument("--rounds", type=int, default=15, help="timed blocks per form (median)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, one thread, thread CPU time, median us per pair of networks")
    for dtype in (torch.float32, torch.bfloat16):
        print(f"\n{str(dtype).replace('torch.', ''):9s} {'case':74s} {'two':>8s} {'merged':>8s} {'merged/two':>10s}")
        for name, two, merged in cases(dtype, gen):
            t_two, t_merged = interleaved(two, merged, args.reps, args.rounds)
            print(f"{'':9s} {name:74s} {t_two:8.1f} {t_merged:8.1f} {t_merged / t_two:10.3f}")


if __name__ == "__main__":
    main()
