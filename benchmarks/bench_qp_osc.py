"""Benchmark: the native QP layer vs qpth / cvxpylayers / an unconstrained solve, and the OSC inverse.

Run:  python benchmarks/bench_qp_osc.py        (one torch thread; about a minute)

QP problems are OSC-shaped (as in /work/shared/reference/anchor-libraries-measured.md, section 3):
n = 7, 14 bounds, Q = M^{-1} + 1e-3 I for a random SPD "mass matrix" M (eigenvalues 0.05-3),
p = -Q tau_des with tau_des ~ N(0, 2^2), |x| <= 1.5, float64. "fwd" = forward under no_grad,
"fwd+bwd" = forward + backward of sum(x) w.r.t. Q and p. Times are medians; every ratio is
measured in this run.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

from ohio_layers.inverse.osc_inverse import OSCInverse
from ohio_layers.lowlevel.osc import OperationalSpaceController, OSCStateLayout
from ohio_layers.lowlevel.qp import solve_qp
from ohio_layers.lowlevel.rotations import axis_angle_to_matrix

F64 = torch.float64
REPEATS = {1: 50, 64: 15, 1024: 7}
ANCHOR_NOTE = ("anchor-libraries-measured.md (same machine type, earlier run, 1 thread, B=1024 fwd+bwd f64): "
               "qpth 170 us/problem, cvxpylayers diffcp/SCS 1574 us, diffcp/Clarabel 1403 us")


def osc_qp(B: int, n: int = 7, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    R = torch.linalg.qr(torch.randn(B, n, n, generator=g, dtype=F64))[0]
    M = R @ torch.diag_embed(0.05 + 2.95 * torch.rand(B, n, generator=g, dtype=F64)) @ R.transpose(1, 2)
    Q = torch.linalg.inv(M) + 1e-3 * torch.eye(n, dtype=F64)
    Q = 0.5 * (Q + Q.transpose(1, 2))
    p = -(Q @ (2.0 * torch.randn(B, n, 1, generator=g, dtype=F64))).squeeze(-1)
    lim = torch.full((n,), 1.5, dtype=F64)
    return Q, p, -lim, lim


def median_time(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def qp_methods() -> Dict[str, Optional[Callable]]:
    methods: Dict[str, Optional[Callable]] = {
        "ohio_layers native QP": lambda Q, p, lo, hi: solve_qp(Q, p, lo, hi).x,
    }
    try:
        import qpth  # noqa: F401

        methods["qpth PDIPM"] = lambda Q, p, lo, hi: solve_qp(Q, p, lo, hi, backend="qpth", check_psd=False).x
    except ImportError:
        methods["qpth PDIPM"] = None
    try:
        import cvxpylayers  # noqa: F401

        methods["cvxpylayers"] = lambda Q, p, lo, hi: solve_qp(Q, p, lo, hi, backend="cvxpylayers", check_psd=False).x
    except ImportError:
        methods["cvxpylayers"] = None
    methods["torch.linalg.solve (no bounds)"] = lambda Q, p, lo, hi: torch.linalg.solve(Q, -p)
    return methods


def bench_qp(batches: List[int]) -> List[Tuple[str, str, int, Optional[float]]]:
    rows = []
    for B in batches:
        Q0, p0, lo, hi = osc_qp(B)
        for name, fn in qp_methods().items():
            for mode in ("fwd", "fwd+bwd"):
                if fn is None:
                    rows.append((name, mode, B, None))
                    continue
                Q, p = Q0.clone().requires_grad_(mode == "fwd+bwd"), p0.clone().requires_grad_(mode == "fwd+bwd")

                def run() -> None:
                    if mode == "fwd":
                        with torch.no_grad():
                            fn(Q, p, lo, hi)
                    else:
                        fn(Q, p, lo, hi).sum().backward()

                rows.append((name, mode, B, median_time(run, REPEATS.get(B, 5))))
    return rows


def print_qp_table(rows: List[Tuple[str, str, int, Optional[float]]]) -> None:
    ours = {(mode, B): t for name, mode, B, t in rows if name.startswith("ohio_layers")}
    print(f"{'method':32s} {'mode':8s} {'B':>5s} {'total ms':>10s} {'us/problem':>11s} {'x native time':>14s}")
    for name, mode, B, t in rows:
        if t is None:
            print(f"{name:32s} {mode:8s} {B:5d} {'not installed':>10s}")
            continue
        ratio = t / ours[(mode, B)]
        print(f"{name:32s} {mode:8s} {B:5d} {1e3 * t:10.3f} {1e6 * t / B:11.2f} {ratio:13.2f}x")


def accuracy() -> None:
    Q, p, lo, hi = osc_qp(256, seed=1)
    sol = solve_qp(Q, p, lo, hi)
    x = sol.x
    opt = (x - torch.clamp(x - ((Q @ x.unsqueeze(-1)).squeeze(-1) + p), lo, hi)).abs().max()
    line = f"native: optimal {int(sol.ok.sum())}/256, projected-gradient optimality residual {float(opt):.1e}"
    try:
        import qpth  # noqa: F401

        xq = solve_qp(Q, p, lo, hi, backend="qpth").x
        line += f"; max |x_native - x_qpth| {float((x - xq).abs().max()):.1e}"
    except ImportError:
        pass
    print(line)


# ------------------------------------------------------------------ OSC inverse
def osc_transitions(N: int, k: int = 5, seed: int = 0) -> Tuple[OperationalSpaceController, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthetic sub-step states, true z and clipped torques generated by the controller."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    layout = OSCStateLayout(7)
    A = r(N, 7, 7)
    base = dict(q=r(N, 7), qdot=0.3 * r(N, 7), q0=r(N, 7), pos=r(N, 3), rot=axis_angle_to_matrix(2 * r(N, 3)),
                lin_vel=0.1 * r(N, 3), ang_vel=0.3 * r(N, 3), mass=0.05 * A @ A.transpose(1, 2) + 0.3 * torch.eye(7, dtype=F64),
                jac_pos=0.5 * r(N, 3, 7), jac_ori=r(N, 3, 7), bias=5 * r(N, 7))
    steps = []
    for j in range(k):
        s = dict(base, q=base["q"] + 0.002 * j * r(N, 7), qdot=base["qdot"] + 0.05 * j * r(N, 7),
                 pos=base["pos"] + 0.001 * j * r(N, 3), rot=axis_angle_to_matrix(0.003 * j * r(N, 3)) @ base["rot"])
        steps.append(layout.pack(s))
    states = torch.stack(steps, 1)
    z = torch.cat([0.05 * (2 * torch.rand(N, 3, generator=g, dtype=F64) - 1), 0.5 * (2 * torch.rand(N, 3, generator=g, dtype=F64) - 1)], -1)
    c = OperationalSpaceController(150.0, 1.0)
    ctx = c.context(states[:, 0])
    torques = torch.stack([c.act(states[:, j], z, ctx, j) for j in range(k)], 1)
    return c, states, torques, z


def bench_inverse(N: int = 1024, loop_n: int = 64) -> None:
    c, states, torques, z = osc_transitions(N)
    solver = OSCInverse()
    result = solver.invert(c, states, torques)
    t_batch = median_time(lambda: solver.invert(c, states, torques), 3)
    t_loop = median_time(lambda: [solver.invert(c, states[i:i + 1], torques[i:i + 1]) for i in range(loop_n)], 1)
    err = (result.z - z).abs().amax(-1)
    per_batch, per_loop = N / t_batch, loop_n / t_loop
    print(f"{'OSC inverse':32s} {'transitions/s':>14s} {'us/transition':>14s}")
    print(f"{'batched (N=%d)' % N:32s} {per_batch:14.0f} {1e6 / per_batch:14.1f}")
    print(f"{'per-sample loop (%d samples)' % loop_n:32s} {per_loop:14.0f} {1e6 / per_loop:14.1f}")
    print(f"batched / loop speed-up: {per_batch / per_loop:.1f}x; recovered to 1e-5: {float((err <= 1e-5).float().mean()) * 100:.1f} %, "
          f"mean iterations {float(result.iterations.float().mean()):.1f}, clipped sub-steps "
          f"{float((torques.abs() >= c.action_high - 1e-9).any(-1).float().mean()) * 100:.0f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, float64\n")
    print("== OSC-shaped box QP (n=7, 14 bounds) ==")
    print_qp_table(bench_qp(args.batches))
    print(ANCHOR_NOTE)
    accuracy()
    print("\n== OSC inverse (k=5 sub-steps, 35 torque equations, 6 unknowns) ==")
    bench_inverse()


if __name__ == "__main__":
    main()
