"""Measurement behind ``OSCInverse.max_iter = 200``: recovered share and time per iteration cap.

    python benchmarks/bench_osc_inverse_iterations.py [--transitions 1500] [--seed 21]

Synthetic OSC sub-step states (tests/helpers.py ``substep_states``), z uniform in a box of
``--dp`` m / ``--dw`` rad (default 0.3 / 1.5: hard, far outside robosuite's 0.05 / 0.5 box, most
torques clipped), torques recorded by an unbounded controller with kp 150 and 300. For each
``max_iter`` the table shows the share of transitions whose z is recovered to 1e-5, the share the
common ``converged`` test accepts, the largest iteration count used and the wall time. Caps are
interleaved in one process; times are indicative on a shared machine (report the load).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import substep_states  # noqa: E402

from ohio_layers.inverse.osc_inverse import OSCInverse  # noqa: E402
from ohio_layers.lowlevel.osc import OperationalSpaceController  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transitions", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--dp", type=float, default=0.3)
    ap.add_argument("--dw", type=float, default=1.5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    F = torch.float64
    N = args.transitions
    states = substep_states(N, seed=args.seed)
    g = torch.Generator().manual_seed(5)
    z = torch.cat([args.dp * (2 * torch.rand(N, 3, generator=g, dtype=F) - 1),
                   args.dw * (2 * torch.rand(N, 3, generator=g, dtype=F) - 1)], -1)
    print("| kp | saturated share | max_iter | z err <= 1e-5 | converged | max iterations | seconds |")
    print("|---|---|---|---|---|---|---|")
    OSCInverse(max_iter=5).invert(OperationalSpaceController(delta_limit=None), states[:8], torch.zeros(8, 5, 7, dtype=F))  # warm-up
    for kp in (150.0, 300.0):
        c = OperationalSpaceController(kp, delta_limit=None)
        ctx = c.context(states[:, 0])
        torques = torch.stack([c.act(states[:, j], z, ctx, j) for j in range(5)], 1)
        saturated = float((torques.abs() >= c.action_high - 1e-9).any(-1).any(-1).double().mean())
        for max_iter in (30, 60, 100, 200):
            t = time.perf_counter()
            res = OSCInverse(max_iter=max_iter).invert(c, states, torques)
            dt = time.perf_counter() - t
            ok = float(((res.z - z).abs().amax(-1) <= 1e-5).double().mean())
            print(f"| {kp:g} | {saturated:.3f} | {max_iter} | {ok:.4f} | {float(res.converged.double().mean()):.4f} | "
                  f"{int(res.iterations.max())} | {dt:.2f} |")


if __name__ == "__main__":
    main()
