"""A reacher dynamics model learned from scratch: k-step error on held-out episodes, and relabelling through it.

    python benchmarks/bench_learned_dynamics.py [--transitions 40000] [--epochs 150] [--hidden 128,128]
                                                [--out benchmarks/results/learned_dynamics.json]

Data: the flat expert (action noise 0.1) on the multi-goal reacher; the model sees at most
``--transitions`` low-level transitions of the training episodes (no FD prior, no simulator) and is
evaluated on 20 held-out episodes, windows of k = 5 steps on the relabelling grid. "k-step error" =
Euclidean norm of the predicted minus observed state after 5 open-loop steps on the observed actions
(q in rad, qdot in rad/s). Models: least-squares linear (the first stage of ``LearnedDynamics``),
``LearnedDynamics`` (linear + control-affine MLP, multi-step loss) and ``LearnedLinearization``
without a prior (``A(s) s + B(s) u``, one-step loss; the library's earlier option).

Relabelling through the learned model: z from analytic start + 30 LM iterations with the *learned*
model as the inverse's dynamics (the controller keeps its FD gains, as deployed), against the same
solver with the FD linearisation; max-abs z error. One torch thread.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ohio_layers.data import window_starts
from ohio_layers.data.io import atomic_write_bytes
from ohio_layers.envs import ExpertPolicy, collect, make_reacher_lqr
from ohio_layers.inverse import AnalyticSolver, InverseProblem, LevenbergMarquardt
from ohio_layers.lowlevel import LearnedDynamics, LearnedLinearization, LinearizedDynamics, sequence_windows

K = 5


def stats(e: torch.Tensor) -> dict:
    e = e.double()
    return {"median": float(e.median()), "mean": float(e.mean()), "p90": float(e.quantile(0.9)), "p99": float(e.quantile(0.99))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transitions", type=int, default=40_000)
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--hidden", type=str, default="128,128")
    ap.add_argument("--out", type=str, default=str(Path(__file__).resolve().parent / "results" / "learned_dynamics.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    episodes = int(np.ceil(args.transitions / 500))
    train = collect(ExpertPolicy(0.1), episodes, seed=1000, progress=False).select(slice(0, args.transitions))
    test = collect(ExpertPolicy(0.1), 20, seed=500_000, progress=False)
    arr = lambda d: (d["states"], d["next_states"], d["actions"], d["episode_ids"])  # noqa: E731
    x, u = sequence_windows(*arr(train), horizon=K)
    xt, ut = sequence_windows(*arr(test), horizon=K, stride=K)
    out: dict = {"transitions": len(train), "train_windows": int(x.shape[0]), "test_windows": int(xt.shape[0]), "models": {}}

    def k_step(model) -> dict:
        with torch.no_grad():
            pred = xt[:, 0]
            for l in range(K):
                pred = model(pred, ut[:, l], None)
        return stats((pred - xt[:, -1]).norm(dim=-1))

    linear = LearnedDynamics(4, 2, hidden=())
    linear.fit(x, u, progress=False)
    out["models"]["least-squares linear"] = {"k_step_error": k_step(linear), "fit_seconds": 0.0}

    hidden = tuple(int(h) for h in args.hidden.split(","))
    model = LearnedDynamics(4, 2, hidden=hidden, drop_dims=(0,))
    t0 = time.perf_counter()
    hist = model.fit(x, u, epochs=args.epochs, batch_size=1024, lr=3e-3, seed=0)
    out["models"]["LearnedDynamics"] = {"k_step_error": k_step(model), "fit_seconds": time.perf_counter() - t0,
                                        "epochs_run": len(hist["val_loss"]), "hidden": list(hidden)}

    ll = LearnedLinearization(4, 2)
    t0 = time.perf_counter()
    ll.fit(x[:, 0], u[:, 0], x[:, 1], epochs=20, batch_size=256, lr=1e-3)
    out["models"]["LearnedLinearization (no prior)"] = {"k_step_error": k_step(LinearizedDynamics(ll)),
                                                        "fit_seconds": time.perf_counter() - t0}

    # relabelling through the learned model vs through the FD linearisation
    c = make_reacher_lqr()
    starts = window_starts(test, K, K)
    lm = LevenbergMarquardt(max_iter=30)
    zs = {}
    for name, dyn in (("fd", LinearizedDynamics()), ("learned", model), ("linear", linear)):
        p = InverseProblem(c, dyn)
        b = p.batch_from_dataset(test, starts)
        zs[name] = lm.solve(p, b, AnalyticSolver().solve(p, b).z).z
    out["relabel_z_error_vs_fd"] = {n: stats((zs[n] - zs["fd"]).abs().amax(-1)) for n in ("learned", "linear")}

    print(f"reacher dynamics from {len(train)} transitions; k = {K}-step error on {xt.shape[0]} held-out windows")
    print(f"{'model':<34}{'median':>10}{'mean':>10}{'p90':>10}{'fit s':>8}")
    for name, m in out["models"].items():
        e = m["k_step_error"]
        print(f"{name:<34}{e['median']:>10.2e}{e['mean']:>10.2e}{e['p90']:>10.2e}{m['fit_seconds']:>8.0f}")
    for name, e in out["relabel_z_error_vs_fd"].items():
        print(f"z relabelled through {name} model vs FD: median {e['median']:.2e}, p90 {e['p90']:.2e}")
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(out, indent=2).encode())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
