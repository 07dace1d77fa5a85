"""Dataset interop: export/import times of Minari (HDF5) and d3rlpy conversion against the ohio .npz.

    python benchmarks/bench_interop.py [--episodes 1000] [--steps 100]

Data: reacher-shaped low-level rows (observations (10,) float32, states (4,) float64, actions (2,),
rewards, flags, episode ids, z_true (4,)); every episode ends on a timeout. Each method runs
once in one process (imports excluded); ratios are against ``Dataset.save`` / ``Dataset.load``.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ohio_layers.data import Dataset


def make(episodes: int, steps: int, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    n = episodes * steps
    states = rng.normal(size=(episodes, steps + 1, 4))
    obs = rng.normal(size=(episodes, steps + 1, 10)).astype(np.float32)
    flat = lambda a, s: a[:, s].reshape(n, *a.shape[2:])  # noqa: E731
    timeouts = np.zeros((episodes, steps), bool)
    timeouts[:, -1] = True
    return Dataset({"observations": flat(obs, slice(0, -1)), "next_observations": flat(obs, slice(1, None)),
                    "states": flat(states, slice(0, -1)), "next_states": flat(states, slice(1, None)),
                    "actions": rng.uniform(-1, 1, (n, 2)), "rewards": rng.normal(size=n), "terminals": np.zeros(n, bool),
                    "timeouts": timeouts.reshape(n), "episode_ids": np.repeat(np.arange(episodes), steps),
                    "z_true": rng.normal(size=(n, 4))}, {"behaviour": "benchmark"})


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    data = make(args.episodes, args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MINARI_DATASETS_PATH"] = str(Path(tmp) / "minari")
        import logging

        import d3rlpy  # noqa: F401  (imports are not timed)
        import minari  # noqa: F401
        import structlog

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
        from ohio_layers.data.d3rlpy import to_d3rlpy
        from ohio_layers.data.minari import export_minari, import_minari

        _, t_save = timed(lambda: data.save(Path(tmp) / "d.npz"))
        _, t_load = timed(lambda: Dataset.load(Path(tmp) / "d.npz"))
        folder, t_exp = timed(lambda: export_minari(data, "bench/interop-v0"))
        back, t_imp = timed(lambda: import_minari("bench/interop-v0"))
        mdp, t_d3 = timed(lambda: to_d3rlpy(data))
        assert all(np.array_equal(back[k], data[k]) for k in data.keys())
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        npz = (Path(tmp) / "d.npz").stat().st_size
    rows = [("ohio .npz save", t_save, t_save, npz), ("ohio .npz load", t_load, t_load, npz),
            ("export_minari (hdf5)", t_exp, t_save, size), ("import_minari", t_imp, t_load, size),
            ("to_d3rlpy", t_d3, t_load, None)]
    print(f"{args.episodes} episodes x {args.steps} steps = {len(data)} rows; round trip bit-exact; "
          f"d3rlpy transitions {mdp.transition_count}")
    print(f"{'operation':<22}{'seconds':>9}{'x npz':>8}{'MiB':>8}")
    for name, t, ref, b in rows:
        print(f"{name:<22}{t:>9.3f}{t / ref:>8.1f}{(b / 2**20 if b else float('nan')):>8.1f}")


if __name__ == "__main__":
    main()
