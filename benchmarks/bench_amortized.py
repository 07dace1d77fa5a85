"""Amortised inverse on the reacher and the OSC: training time, throughput, accuracy, fallback share, 1M relabel.

    python benchmarks/bench_amortized.py [--domains reacher,osc] [--train-episodes 80] [--test-episodes 20]
                                         [--epochs 200] [--relabel-transitions 1000000]
                                         [--osc-train-episodes 40] [--osc-test-episodes 10] [--osc-epochs 100]
                                         [--out benchmarks/results/amortized.json]

``--domains`` runs a subset; the other domains' entries of an existing ``--out`` are kept.

*Reacher.*

Data: the flat expert (IK + PD, action noise 0.1) on the multi-goal reacher, seeded. The network is
trained on every 5-step window (stride 1) of the training episodes, without labels; everything else
is measured on held-out episodes (stride 5, the relabelling grid). The exact reference is the
context-bound path of ``ohio reacher``: FD linearisation + Riccati per window, analytic start, 30 LM
iterations. z errors are max-abs over the 4 z entries against that reference (rad, rad/s).

Throughputs are windows (high-level transitions) per second, one torch thread, including reading
the windows from the dataset; the methods are timed interleaved in one process (best of
``--repeat``), so their ratios stay meaningful on a loaded machine. The 1M relabel runs
``relabel()`` end to end (chunks written atomically, merged, saved) with the network alone on a
dataset of ``--relabel-transitions`` low-level rows tiled from the test episodes, stride 1.

*OSC* (robosuite Lift, OSC_POSE with the original gains, clipped torques). Data: the scripted Lift
policy (noise 0.05/0.1/0.15 cycled) under the original controller, 250-step episodes, collected once
into ``--osc-data-dir`` (about 3 min; reused afterwards). A window is one recorded transition: 5
sub-step states and torques (k = 1). The network (:func:`~ohio_layers.inverse.osc_amortized.osc_amortized_inverse`:
the first sub-step closed form corrected by an MLP) is trained on every transition of the first
``--osc-train-episodes`` episodes, without labels, through the clipped controller over all 5 sub-steps;
everything is measured on the next ``--osc-test-episodes`` episodes against ``OSCInverse``'s labels
(the exact structured inverse, as ``ohio manipulation`` relabels). Errors: position in mm and
orientation in rad (Euclidean norms of the difference of the 3-vectors); residual: Euclidean norm over
the 35 sub-step torques (N m). ``closed form alone`` is the network's input estimate without the network.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ohio_layers.data import Dataset, window_starts
from ohio_layers.data.io import atomic_write_bytes
from ohio_layers.envs import ExpertPolicy, collect, make_reacher_lqr
from ohio_layers.inverse import AmortizedInverse, AnalyticSolver, BestStart, InverseProblem, LevenbergMarquardt, relabel
from ohio_layers.lowlevel import LinearizedDynamics

K = 5
DOMAINS = ("reacher", "osc")


def quantiles(x: np.ndarray) -> dict:
    x = np.asarray(x, dtype=np.float64)
    q = np.quantile(x, [0.5, 0.9, 0.99])
    return {"median": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "max": float(x.max())}


def interleaved(fns: dict, repeat: int) -> dict:
    """``{name: (best seconds, output)}``: every function once per round, ``repeat`` rounds (ratios survive load)."""
    timings: dict = {}
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time.perf_counter()
            out = fn()
            t = time.perf_counter() - t
            if name not in timings or t < timings[name][0]:
                timings[name] = (t, out)
    return timings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--domains", type=str, default=",".join(DOMAINS))
    ap.add_argument("--train-episodes", type=int, default=80)
    ap.add_argument("--test-episodes", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--hidden", type=str, default="128,128")
    ap.add_argument("--delta", type=float, default=0.01, help="robust-loss scale (normalised z units)")
    ap.add_argument("--relabel-transitions", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--osc-train-episodes", type=int, default=40)
    ap.add_argument("--osc-test-episodes", type=int, default=10)
    ap.add_argument("--osc-epochs", type=int, default=100)
    ap.add_argument("--osc-delta", type=float, default=1.0, help="robust-loss scale of the OSC network")
    ap.add_argument("--osc-hidden", type=str, default="256,256")
    ap.add_argument("--osc-data-dir", type=str, default="runs/bench-amortized/lift")
    ap.add_argument("--out", type=str, default=str(Path(__file__).resolve().parent / "results" / "amortized.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    domains = [d.strip() for d in args.domains.split(",") if d.strip()]
    if not domains or not set(domains) <= set(DOMAINS):
        raise SystemExit(f"--domains must be a subset of {DOMAINS}, got {args.domains!r}")
    out = Path(args.out)
    results: dict = json.loads(out.read_text()) if out.exists() else {}
    results["machine"] = f"{platform.machine()} {platform.processor()}, torch {torch.__version__}, 1 thread"
    args_by_domain = results.get("args", {})
    if not set(args_by_domain) <= set(DOMAINS):  # a file written before the OSC domain: its args are the reacher's
        args_by_domain = {"reacher": args_by_domain}
    results["args"] = args_by_domain
    for domain in domains:
        results["args"][domain] = vars(args)
        results[domain] = {"reacher": bench_reacher, "osc": bench_osc}[domain](args)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, json.dumps(results, indent=2).encode())
    print(f"wrote {out}")


def bench_reacher(args: argparse.Namespace) -> dict:
    """The reacher entry of the results (module docstring)."""
    hidden = tuple(int(h) for h in args.hidden.split(","))

    print(f"collecting {args.train_episodes} + {args.test_episodes} expert episodes")
    train_data = collect(ExpertPolicy(0.1), args.train_episodes, seed=1000, progress=False)
    test_data = collect(ExpertPolicy(0.1), args.test_episodes, seed=500_000, progress=False)
    c = make_reacher_lqr()
    problem = InverseProblem(c, LinearizedDynamics())

    # ---------------------------------------------------------------- training
    t0 = time.perf_counter()
    train_batch = problem.batch_from_dataset(train_data, window_starts(train_data, K, 1))
    t_ctx = time.perf_counter() - t0
    inv = AmortizedInverse(problem, hidden=hidden, drop_dims=(0,), delta=args.delta)
    t0 = time.perf_counter()
    history = inv.fit(train_batch, epochs=args.epochs, batch_size=4096, lr=3e-3, patience=50, seed=0)
    t_fit = time.perf_counter() - t0
    r: dict = {}
    r["training"] = {"windows": len(train_batch), "context_seconds": t_ctx, "fit_seconds": t_fit,
                     "epochs_run": len(history["val_loss"]), "best_epoch": history["best_epoch"][0],
                     "best_val_loss": min(history["val_loss"])}
    print(f"trained on {len(train_batch)} windows: context {t_ctx:.1f} s, fit {t_fit:.1f} s "
          f"({len(history['val_loss'])} epochs, best {history['best_epoch'][0]})")

    # ---------------------------------------------------------------- accuracy and throughput
    starts = window_starts(test_data, K, K)
    exact_solver = LevenbergMarquardt(max_iter=30)

    def exact():
        b = problem.batch_from_dataset(test_data, starts)
        return exact_solver.solve(problem, b, AnalyticSolver().solve(problem, b).z)

    def network():
        with torch.no_grad():
            return inv(problem.batch_from_dataset(test_data, starts, with_context=False))

    def with_fallback(tol):
        inv.tolerance, inv.fallback = tol, BestStart(AnalyticSolver(), LevenbergMarquardt(max_iter=30))
        return inv.solve(problem, problem.batch_from_dataset(test_data, starts))

    n = len(starts)
    timings = interleaved({"lm": exact, "network": network, "fallback_1e-6": lambda: with_fallback(1e-6),
                           "fallback_1e-2": lambda: with_fallback(1e-2)}, args.repeat)
    ref = timings["lm"][1]
    z_net = timings["network"][1]
    batch = problem.batch_from_dataset(test_data, starts)
    with torch.no_grad():
        res_net = problem.residual(z_net, batch).norm(dim=-1)
    err_net = (z_net - ref.z).abs().amax(-1).numpy()
    exact_ok = (ref.residual <= 1e-6).numpy()
    r["test_windows"] = n
    r["exact_reproduced_1e-6"] = float(exact_ok.mean())
    r["throughput"] = {k: n / v[0] for k, v in timings.items()}
    r["speedup_network_vs_lm"] = r["throughput"]["network"] / r["throughput"]["lm"]
    r["network"] = {"z_error": quantiles(err_net), "z_error_exact_windows": quantiles(err_net[exact_ok]),
                    "residual": quantiles(res_net.numpy())}
    for tol in ("1e-6", "1e-2"):
        out = timings[f"fallback_{tol}"][1]
        ok = (out.residual <= float(tol)).numpy()
        r[f"fallback_{tol}"] = {
            "share_sent_to_fallback": float(out.flagged.double().mean()),
            "share_within_tolerance": float(ok.mean()),
            "share_within_tolerance_exact_solver": float((ref.residual <= float(tol)).double().mean()),
            "z_error": quantiles((out.z - ref.z).abs().amax(-1).numpy()),
            "residual": quantiles(out.residual.numpy()),
            "time_vs_exact": timings[f"fallback_{tol}"][0] / timings["lm"][0],
        }

    # ---------------------------------------------------------------- 1M relabel, network alone
    reps = int(np.ceil(args.relabel_transitions / len(test_data)))
    parts = []
    for i in range(reps):
        part = Dataset(dict(test_data.arrays))
        part.arrays["episode_ids"] = test_data["episode_ids"] + i * (int(test_data["episode_ids"].max()) + 1)
        parts.append(part)
    big = Dataset.concatenate(parts).select(slice(0, args.relabel_transitions))
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        high, _ = relabel(big, inv.inverter(compute_residual=False), K, Path(tmp) / "big.npz", chunk_size=65_536,
                          stride=1, resume=False)
        t_big, cpu_big = time.perf_counter() - t0, time.process_time() - c0
    # wall time includes waiting for a core and the disk on a shared machine; CPU time is this process's own work
    r["relabel_1m"] = {"low_level_rows": len(big), "windows": len(high), "seconds": t_big, "cpu_seconds": cpu_big,
                       "windows_per_second": len(high) / t_big}

    # ---------------------------------------------------------------- report
    tp = r["throughput"]
    print(f"\nreacher, {n} held-out windows (one thread; on a shared machine read the ratios)")
    print(f"{'method':<34}{'windows/s':>12}{'vs LM':>8}{'z err median':>14}{'z err p90':>11}{'within tol':>12}")
    print(f"{'LM 30 it + analytic (context)':<34}{tp['lm']:>12,.0f}{1:>7.1f}x{0:>14.1e}{0:>11.1e}"
          f"{r['exact_reproduced_1e-6']:>12.4f}")
    print(f"{'network alone':<34}{tp['network']:>12,.0f}{tp['network'] / tp['lm']:>7.1f}x"
          f"{r['network']['z_error']['median']:>14.2e}{r['network']['z_error']['p90']:>11.2e}{'-':>12}")
    for tol in ("1e-6", "1e-2"):
        f = r[f"fallback_{tol}"]
        print(f"{'network + fallback, tol ' + tol:<34}{tp['fallback_' + tol]:>12,.0f}{tp['fallback_' + tol] / tp['lm']:>7.1f}x"
              f"{f['z_error']['median']:>14.2e}{f['z_error']['p90']:>11.2e}{f['share_within_tolerance']:>12.4f}"
              f"   sent to fallback {100 * f['share_sent_to_fallback']:.1f}%")
    print(f"1M relabel (network alone, relabel() end to end): {r['relabel_1m']['windows']} windows from "
          f"{r['relabel_1m']['low_level_rows']} rows in {t_big:.1f} s wall, {cpu_big:.1f} s CPU "
          f"({r['relabel_1m']['windows_per_second']:,.0f}/s wall)")
    return r


def bench_osc(args: argparse.Namespace) -> dict:
    """The OSC entry of the results (module docstring)."""
    from ohio_layers.envs.manipulation import controller_setting
    from ohio_layers.envs.manipulation.data import collect_manipulation
    from ohio_layers.inverse import OSCInverse
    from ohio_layers.inverse.osc_amortized import osc_amortized_inverse, osc_windows

    n_train, n_test = args.osc_train_episodes, args.osc_test_episodes
    print(f"OSC: {n_train} + {n_test} scripted Lift episodes (collected once into {args.osc_data_dir})")
    data = collect_manipulation("lift", n_train + n_test, Path(args.osc_data_dir) / "episodes", seed=0, horizon=250,
                                workers=1, progress=False)
    ep = data["episode_ids"]
    train_rows, test_rows = np.flatnonzero(ep < n_train), np.flatnonzero(ep >= n_train)
    c = controller_setting("lift", "original").make_controller()
    inv = osc_amortized_inverse(c, hidden=tuple(int(h) for h in args.osc_hidden.split(",")), delta=args.osc_delta)
    problem = inv.problem
    t0 = time.perf_counter()
    history = inv.fit(osc_windows(problem, data, train_rows), epochs=args.osc_epochs, batch_size=2048, lr=3e-3,
                      patience=50, seed=0)
    r: dict = {"training": {"windows": int(train_rows.size), "fit_seconds": time.perf_counter() - t0,
                            "epochs_run": len(history["val_loss"]), "best_epoch": history["best_epoch"][0],
                            "best_val_loss": min(history["val_loss"])}}
    print(f"trained on {train_rows.size} windows in {r['training']['fit_seconds']:.1f} s")
    exact_solver = OSCInverse()

    def exact():
        b = osc_windows(problem, data, test_rows, with_context=False)
        return exact_solver.invert(c, b.states, b.actions)

    def network():
        with torch.no_grad():
            return inv(osc_windows(problem, data, test_rows, with_context=False))

    def closed_form():
        b = osc_windows(problem, data, test_rows, with_context=False)
        with torch.no_grad():
            return c.clamp_z(inv.custom_features.closed_form(b.states[:, 0], b.actions[:, 0])[0])

    def with_fallback(tol):
        inv.tolerance, inv.fallback = tol, exact_solver
        return inv.solve(problem, osc_windows(problem, data, test_rows))

    timings = interleaved({"osc_inverse": exact, "network": network, "closed_form": closed_form,
                           "fallback_1e-6": lambda: with_fallback(1e-6), "fallback_1e-2": lambda: with_fallback(1e-2)},
                          args.repeat)
    ref = timings["osc_inverse"][1]
    batch = osc_windows(problem, data, test_rows)
    clipped = (batch.actions.abs() >= c.action_high - 1e-9).any(-1)  # (B, 5)

    def accuracy(z: torch.Tensor) -> dict:
        with torch.no_grad():
            res = OSCInverse.residual(c, z, batch.states, batch.actions).norm(dim=-1)
        pos = 1000 * (z[:, :3] - ref.z[:, :3]).norm(dim=-1).numpy()
        ori = (z[:, 3:] - ref.z[:, 3:]).norm(dim=-1).numpy()
        hard = clipped[:, 0].numpy()  # the closed form's guesswork: a joint clipped at the first sub-step
        return {"position_error_mm": quantiles(pos), "orientation_error_rad": quantiles(ori), "residual": quantiles(res.numpy()),
                "position_error_mm_clipped_first_substep": quantiles(pos[hard]) if hard.any() else None}

    n = int(test_rows.size)
    r.update({"test_windows": n, "windows_clipped_first_substep": float(clipped[:, 0].double().mean()),
              "windows_clipped_any_substep": float(clipped.any(1).double().mean()),
              "exact_reproduced_1e-6": float((ref.residual <= 1e-6).double().mean()),
              "throughput": {k: n / v[0] for k, v in timings.items()}})
    r["speedup_network_vs_osc_inverse"] = r["throughput"]["network"] / r["throughput"]["osc_inverse"]
    r["network"] = accuracy(timings["network"][1])
    r["closed_form"] = accuracy(timings["closed_form"][1])
    for tol in ("1e-6", "1e-2"):
        out = timings[f"fallback_{tol}"][1]
        r[f"fallback_{tol}"] = {**accuracy(out.z), "share_sent_to_fallback": float(out.flagged.double().mean()),
                                "share_within_tolerance": float((out.residual <= float(tol)).double().mean()),
                                "share_within_tolerance_exact_solver": float((ref.residual <= float(tol)).double().mean()),
                                "time_vs_exact": timings[f"fallback_{tol}"][0] / timings["osc_inverse"][0]}

    tp = r["throughput"]
    print(f"\nOSC (Lift), {n} held-out transitions, {100 * r['windows_clipped_first_substep']:.0f}% with a joint clipped "
          f"at the first sub-step (one thread; on a shared machine read the ratios)")
    print(f"{'method':<32}{'windows/s':>11}{'vs exact':>9}{'pos mm med':>11}{'p90':>9}{'p99':>9}{'ori rad med':>12}"
          f"{'p90':>9}{'within tol':>11}")
    rows = [("OSCInverse (exact)", "osc_inverse", None), ("closed form alone", "closed_form", r["closed_form"]),
            ("network alone", "network", r["network"])]
    rows += [(f"network + fallback, tol {t}", f"fallback_{t}", r[f"fallback_{t}"]) for t in ("1e-6", "1e-2")]
    for label, key, acc in rows:
        line = f"{label:<32}{tp[key]:>11,.0f}{tp[key] / tp['osc_inverse']:>8.1f}x"
        if acc is None:
            line += f"{0:>11.1e}{0:>9.1e}{0:>9.1e}{0:>12.1e}{0:>9.1e}{r['exact_reproduced_1e-6']:>11.4f}"
        else:
            pe, oe = acc["position_error_mm"], acc["orientation_error_rad"]
            within = f"{acc['share_within_tolerance']:>11.4f}   sent to fallback {100 * acc['share_sent_to_fallback']:.1f}%" \
                if "share_within_tolerance" in acc else f"{'-':>11}"
            line += f"{pe['median']:>11.2e}{pe['p90']:>9.2e}{pe['p99']:>9.2e}{oe['median']:>12.2e}{oe['p90']:>9.2e}{within}"
        print(line)
    return r


if __name__ == "__main__":
    main()
