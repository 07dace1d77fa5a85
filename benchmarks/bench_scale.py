"""Scale-out: sharded relabelling on local Ray workers and data-parallel training under torchrun.

    python benchmarks/bench_scale.py [--episodes 200] [--repeat 2] [--ddp-steps 300] [--job-steps 300]

Relabel: the reacher-like 5-step LQR loop (4 states, clipped torques, z in R^4), windows
of k=5 steps. Two inverters: Levenberg-Marquardt from the analytic warm start (chunks of 256
windows; cheap, so the engine's overheads show) and 300 Adam iterations (chunks of 64; the
solver dominates, as with the reference's numerical inverse). Rows: the serial path, then
``engine="ray"`` with 1 and 2 tasks in flight on one local 2-CPU Ray (started once; its
start-up and the workers' first task are reported apart). The three are interleaved
``--repeat`` times and the best time is kept. Every Ray output is checked byte for byte
against the serial one.

Stage: an experiment stage of 4 seeded IQL training jobs through ``run_jobs`` (a spawn
process pool, as the experiments use) and ``run_jobs(..., engine="ray")``, after one warm-up
of the Ray workers.

DDP: ``torchrun --standalone --nproc_per_node=W -m ohio_layers.train`` on a synthetic dataset,
IQL with 256x256 networks. "weak" keeps 256 transitions per rank (the global batch grows
with W). "strong" splits a global batch of 256 over the ranks. steps/s counts the training
loop only (``train_seconds`` in ranks.json), not process start-up and torch import
(~5 s per launch).

Efficiency = speed-up / workers, against the 1-worker row of the same engine (and the serial
path for relabelling).

Scaling model (N machines, each with w worker slots):

* Relabel. The shared work sits on the driver: the dataset's content hash (~1 us per window
  here), ``window_starts`` (~8 us), shipping each shard's rows, and the final serial pass
  that replays the solved z, gathers the non-z columns and writes the chunks and the file
  (~100 us per window, measured on the loaded machine where serial LM took ~1.2 ms per
  window). Per shard: one task and one transfer of its rows and the inverter. Time ~
  T_driver + ceil(shards / (N w)) * T_shard + T_task * shards / (N w). With 4 shards per
  worker slot, the last wave costs at most a quarter of a slot's share. The driver is the
  bottleneck once T_solve / (N w) falls to T_driver: about 4-10 slots for LM
  (0.4-1 ms per window against ~0.1 ms), about 200 for Adam-300 (~20 ms per window). Two
  other limits: the dataset must fit in the driver's memory, and it is shipped from there.
  Past them, shards should read their rows from shared storage and the replay pass should
  write columns directly.
* Training. Every step all-reduces the gradients once per optimizer: 3 x (~0.2 M float32)
  for IQL at 256x256. On gloo over TCP that costs about 2(W-1)/W x 0.8 MB / bandwidth plus
  latency, per step. Weak scaling stays efficient while that is small next to the per-rank
  step (ms on a CPU core, sub-ms on a GPU, which is why NCCL is used there). Strong scaling
  stops paying once the per-rank batch is too small to keep a core or GPU busy. Checkpoints
  are written by rank 0 only (every ``checkpoint_every`` steps), and every rank loads the
  dataset and keeps its shard.

The machine this was written on has 2 cores shared with other jobs: 2 workers cannot beat
1 by more than the free core allows. Read the ratios, not the absolute times.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from helpers import make_inverter, reacher_like_lqr, synthetic_dataset  # noqa: E402

from ohio_layers.data import Dataset  # noqa: E402
from ohio_layers.experiments.common import format_table  # noqa: E402
from ohio_layers.inverse import AdamSolver, InverseProblem, ProblemInverter, relabel  # noqa: E402
from ohio_layers.lowlevel import LinearizedDynamics  # noqa: E402
from ohio_layers._ray import init_ray  # noqa: E402
from ohio_layers.inverse.sharded import relabel_sharded  # noqa: E402


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bench_relabel(episodes: int, repeat: int, tmp: Path) -> list:
    """Two solvers: LM from the analytic start (~0.3 ms/window, overhead-bound) and 300 Adam iterations
    (compute-bound, like the reference's numerical inverse)."""
    import ray

    c = reacher_like_lqr(action_bound=1.0)
    cases = [("LM", make_inverter(c), synthetic_dataset(c, episodes=episodes, length=100), 256),
             ("Adam-300", ProblemInverter(InverseProblem(c, LinearizedDynamics()), AdamSolver(max_iter=300, ftol=0.0)),
              synthetic_dataset(c, episodes=max(4, episodes // 5), length=100), 64)]
    for _, inverter, data, chunk in cases:  # first-call costs, in this process
        relabel(data.select(slice(0, 500)), inverter, 5, tmp / "warm-serial.npz", chunk_size=chunk, progress=False)
    t = time.perf_counter()
    init_ray(2)
    ray_start = time.perf_counter() - t
    t = time.perf_counter()
    relabel_sharded(relabel, cases[0][2], cases[0][1], 5, tmp / "warm.npz", workers=2, chunk_size=256, progress=False)
    cold = time.perf_counter() - t
    rows = []
    for label, inverter, data, chunk in cases:
        windows = len(data) // 5
        runs = {"serial": [], "ray, 1 worker": [], "ray, 2 workers": []}
        for i in range(repeat):
            for name in runs:
                out = tmp / f"{label}-{name.replace(' ', '').replace(',', '_')}-{i}.npz"
                t = time.perf_counter()
                if name == "serial":
                    relabel(data, inverter, 5, out, chunk_size=chunk, progress=False)
                else:
                    relabel_sharded(relabel, data, inverter, 5, out, workers=1 if "1" in name else 2, chunk_size=chunk,
                                    progress=False)
                runs[name].append(time.perf_counter() - t)
                if name != "serial" and digest(out) != digest(tmp / f"{label}-serial-{i}.npz"):
                    raise AssertionError(f"{label} {name}: output differs from the serial path")
        base = min(runs["serial"])
        for name, times in runs.items():
            w = 1 if name == "serial" else int(name.split()[1])
            best = min(times)
            rows.append([f"relabel {label}, {windows} windows, {name}", f"{windows / best:,.0f} windows/s",
                         f"{best:.2f}", f"{base / best:.2f}", f"{base / best / w:.2f}"])
    ray.shutdown()
    rows.append(["ray start-up (init, once)", "-", f"{ray_start:.2f}", "-", "-"])
    rows.append(["ray first relabel (cold workers), LM", "-", f"{cold:.2f}", "-", "-"])
    return rows


def train_job(job: dict) -> dict:
    """One experiment-stage job: a seeded IQL run on the toy dataset (like the experiments' train stage)."""
    from ohio_layers.rl import IQL

    data = toy_dataset(episodes=8, length=100, seed=job["seed"])
    agent = IQL.from_dataset(data, {"hidden": [64, 64], "batch_size": 64, "seed": job["seed"]})
    agent.fit(data, job["steps"], show_progress=False)
    return {"seed": job["seed"], "loss_q": agent.history[-1]["loss_q"]}


def bench_jobs(steps: int, repeat: int, tmp: Path) -> list:
    """Experiment-stage wall time: 4 training jobs through run_jobs on a process pool and on Ray."""
    import ray

    from ohio_layers.experiments.common import run_jobs

    jobs = [{"name": f"job{i}", "seed": i, "steps": steps} for i in range(4)]
    init_ray(2)
    run_jobs(train_job, jobs[:2], tmp / "warm-jobs", workers=2, engine="ray")  # worker start-up and imports
    names = ["process pool, 1 process", "process pool, 2 processes", "ray, 1 worker", "ray, 2 workers"]
    times: dict = {n: [] for n in names}
    for i in range(repeat):
        for name in names:
            w = int(name.split(", ")[1][0])
            out = tmp / f"jobs-{name.replace(' ', '').replace(',', '_')}-{i}"
            t = time.perf_counter()
            run_jobs(train_job, jobs, out, workers=w, desc=name, engine="ray" if "ray" in name else "process")
            times[name].append(time.perf_counter() - t)
    ray.shutdown()
    base = min(times[names[0]])
    return [[f"stage: 4 IQL jobs x {steps} steps, {n}", f"{4 / min(t):.2f} jobs/s", f"{min(t):.2f}",
             f"{base / min(t):.2f}", f"{base / min(t) / int(n.split(', ')[1][0]):.2f}"] for n, t in times.items()]


def toy_dataset(episodes: int = 40, length: int = 250, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    n = episodes * length
    obs = rng.normal(size=(n, 17)).astype(np.float32)
    act = np.tanh(obs[:, :6] + 0.1 * rng.normal(size=(n, 6))).astype(np.float32)
    return Dataset({"observations": obs, "actions": act, "rewards": -np.abs(obs[:, 0] - act[:, 0]),
                    "next_observations": obs + 0.1, "terminals": np.zeros(n, bool),
                    "episode_ids": np.repeat(np.arange(episodes), length)})


def ddp_run(data: Path, out: Path, ranks: int, steps: int, batch: int) -> float:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", "-m",
           "ohio_layers.train", "--data", str(data), "--agent", "IQL", "--out", str(out), "--steps", str(steps),
           "--checkpoint-every", str(steps), "--no-progress", "--set", f"batch_size={batch}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    info = json.loads((out / "ranks.json").read_text())
    if len(set(info["digests"])) != 1:
        raise AssertionError("ranks disagree on the parameters")
    return steps / info["train_seconds"]


def bench_ddp(steps: int, repeat: int, tmp: Path) -> list:
    toy_dataset().save(tmp / "ddp.npz")
    cases = [("weak", 1, 256), ("weak", 2, 256), ("strong", 2, 128)]
    rates = {c: [] for c in cases}
    for i in range(repeat):
        for case in cases:
            rates[case].append(ddp_run(tmp / "ddp.npz", tmp / f"ddp-{case[0]}-{case[1]}-{i}", case[1], steps, case[2]))
    base = max(rates[("weak", 1, 256)])
    rows = []
    for (kind, w, b), r in rates.items():
        best = max(r)
        speed = best * w * b / (base * 256)  # transitions/s relative to 1 rank
        rows.append([f"DDP IQL {w} rank{'s' if w > 1 else ''}, {kind} (batch {b}/rank)", f"{best:.1f} steps/s",
                     f"{steps / best:.2f}", f"{speed if kind == 'weak' else best / base:.2f}",
                     f"{(speed if kind == 'weak' else best / base) / w:.2f}"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=200, help="relabel: episodes of 100 steps (20 windows each)")
    ap.add_argument("--ddp-steps", type=int, default=300)
    ap.add_argument("--job-steps", type=int, default=300, help="stage: gradient steps per training job")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as d:
        rows = (bench_relabel(args.episodes, args.repeat, Path(d)) + bench_jobs(args.job_steps, args.repeat, Path(d))
                + bench_ddp(args.ddp_steps, args.repeat, Path(d)))
    print(format_table(rows, ["case", "throughput", "seconds (best)", "speed-up", "efficiency"]))
    print("speed-up: relabel vs serial, stage vs 1 process; DDP weak: transitions/s vs 1 rank, "
          "strong: steps/s vs 1 rank; efficiency = speed-up / workers. Scaling model: see this file's docstring.")


if __name__ == "__main__":
    main()
