"""Scale-out: sharded relabelling and experiment stages on local Ray workers, data-parallel training under torchrun.

    python benchmarks/bench_scale.py [--episodes 200] [--collect-episodes 16] [--job-steps 300] [--ddp-steps 300] [--repeat 2]

Relabel: the reacher-like 5-step LQR loop (4 states, clipped torques, z in R^4), windows of k=5
steps. Two inverters: Levenberg-Marquardt from the analytic warm start (chunks of 256 windows;
cheap, so the engine's overheads show) and 300 Adam iterations (chunks of 64; the solver
dominates, as with the reference's numerical inverse). Rows: the serial path, then
``engine="ray"`` with 1 and 2 tasks in flight on one local 2-CPU Ray (started once; its start-up
and the workers' first task are reported apart). Every Ray output is checked byte for byte
against the serial one.

Stages: the reacher's collection stage (episode-range shards, :func:`~ohio_layers.experiments.shards.collect_episodes`)
and a training stage of 4 seeded IQL jobs (:func:`~ohio_layers.experiments.common.run_jobs`), each in this process
(the serial path), on a spawn process pool of 2 (``engine="process"``, as the experiments use) and on Ray with 1
and 2 workers, after warm-up calls there and here. Collections are checked byte for byte against the serial one.

DDP: ``torchrun --standalone --nproc_per_node=W -m ohio_layers.train`` on a synthetic dataset, IQL with 256x256
networks. "weak" keeps 256 transitions per rank (the global batch grows with W), "strong" splits a global batch
of 256 over the ranks. Training loop only (``train_seconds`` and every rank's ``train_cpu_seconds`` in
ranks.json), not process start-up and torch import (~5 s per launch).

**Reading it on a shared machine.** Wall-time speed-ups there measure the other users as much as the engine: with
2 cores and a load average of 14, one busy thread gets a third of a core, and 2 workers cannot beat 1 by more
than the free share allows. So every row also reports CPU seconds (``_cpu_snapshot``: the driver, the worker
processes -- reaped pool children and torchrun ranks, live ``ray::`` workers --, and Ray's own processes as
"engine") and the cores the rest of the machine used meanwhile ("others' cores"), and two load-independent
ratios: "speed-up (CPU)" = the base row's driver + worker CPU over this row's driver CPU + CPU per worker,
the speed-up if the driver and each worker had a core of their own (the critical path), and "CPU vs base" =
all CPU of the row over the base row's, the engine's overhead. Best of ``--repeat`` runs by wall time; the
interleaving (serial, 1, 2 workers, again) spreads the load over the compared rows. Caveat: on
hyper-threaded or oversubscribed vCPUs a CPU second under contention also does less work, so the CPU
ratios carry some of the load too (treat them as +-20 %, the wall ratios as +-2x).

**Scaling model (N machines with w worker slots each, S = N w).**

* What is shared (the driver, once per stage). Stage keys: SHA-256 of the input files (~1 GB/s). Planning:
  episode ranges, ``window_starts`` (~8 us per window), the dataset hash for relabelling (~1 us per window).
  Results: run_jobs writes each job's JSON (training, evaluation) from the task's return value; the
  collection merge reads every shard file, concatenates and writes the artefact (O(dataset bytes): ~50 MB for
  the reacher's 300 episodes, < 1 s); the relabel replay pass re-runs the serial chunk loop with the solved z
  (~0.1 ms per window). Ray itself: start-up (3-15 s here), a few ms per task, and each worker's first task
  imports torch/MuJoCo (~2-3 CPU s, once per worker and session). A process pool pays that import at every
  stage (``run_jobs`` spawns a new pool per call: 2-4 CPU s per worker in the table), which is why it loses
  on small stages and Ray, whose workers stay warm across stages, does not.
* What is per shard. Collection: the episodes of its range (env steps and the policy) and one atomic npz
  write; evaluation: one policy's episodes (a job, because the behaviour heuristics draw from one random
  stream across their episodes); relabelling: the inverter's calls on its chunks and one atomic npz;
  training: a whole job (the data file is read by the worker). Shard outputs are named by SHA-256 keys of
  their inputs, so a retried or resumed shard is idempotent and a stale one is never reused.
* Where the driver becomes the bottleneck: when the per-shard work divided over S slots falls to the
  driver's share. From the CPU columns (loaded machine, two runs agreeing within 10 %): relabel LM
  0.19 ms of solver CPU per window against 0.025 ms of driver CPU per window on Ray (hash, shipping,
  replay): S ~ 8; Adam-300 4.9 ms against 0.14 ms: S ~ 35; collection 46 ms of CPU per reacher episode
  (500 steps) against ~2 ms of driver CPU per episode (merge): S ~ 25. Before that, the per-task overhead
  shows: a worker spends 3-12 % more CPU on its windows than the serial loop, and with Ray's own
  processes a run costs 1.05-1.3x the serial CPU ("CPU vs base"). Training and evaluation jobs return
  small results: they are bounded by the number of jobs (seeds x methods x datasets, 16-48 in the
  defaults) and by the longest job, not by the driver; the reference stages by their number of policies
  (3-6). Two limits beyond CPU: the driver ships relabel shards' rows and holds the dataset in memory,
  and the workers of more than one machine must see the run directory (a shared filesystem), because
  shards and training data are files. Past them, shards should read their rows from shared storage and
  the merge and replay should write columns directly.
* Training (DDP). Every step all-reduces the gradients once per optimizer: 3 x (~0.2 M float32) for IQL at
  256x256, 2 (W-1)/W x 0.8 MB per step over gloo/TCP. Measured here (two runs): weak scaling costs
  +27-36 % CPU per transition at 2 ranks (speed-up 1.5-1.6 if each rank had a core), strong scaling at 128
  transitions per rank does not pay on CPU (the per-rank step barely shrinks, speed-up 1.0): use weak scaling, a larger per-rank
  batch, or NCCL on GPUs where the step is sub-millisecond and the exchange runs on NVLink/IB. Checkpoints
  are written by rank 0 only; every rank loads the dataset and keeps its shard.
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


# ------------------------------------------------------------------------------ CPU accounting
def _cpu_snapshot() -> dict:
    """CPU seconds so far of this process, of its reaped children (process pools, torchrun and its ranks) and of
    every live descendant (a local Ray's workers ``ray::...`` and its own processes), plus the machine's busy
    CPU seconds over all cores."""
    import ray  # noqa: F401  (puts the psutil that Ray bundles on the path)
    import psutil

    me = psutil.Process()
    live = {}
    for p in me.children(recursive=True):
        try:
            with p.oneshot():
                t = p.cpu_times()
                live[p.pid] = (p.create_time(), t.user + t.system, p.name().startswith("ray::"))
        except psutil.Error:  # exited meanwhile
            pass
    t = me.cpu_times()
    machine = psutil.cpu_times()
    return {"self": t.user + t.system, "reaped": t.children_user + t.children_system, "live": live,
            "busy": machine.user + machine.nice + machine.system + getattr(machine, "irq", 0.0) + getattr(machine, "softirq", 0.0),
            "wall": time.perf_counter()}


def measured(fn, *args, **kwargs) -> dict:
    """Run ``fn`` and return wall seconds, CPU seconds of the driver, of the workers (pool processes or Ray
    workers) and of the engine (Ray's raylet, GCS and helpers), and the cores the rest of the machine kept
    busy meanwhile (``others``: the load of the other users, over this run)."""
    a = _cpu_snapshot()
    value = fn(*args, **kwargs)
    b = _cpu_snapshot()
    new = {pid: v for pid, v in b["live"].items() if not (pid in a["live"] and a["live"][pid][0] == v[0])}
    grown = {pid: v[1] - a["live"][pid][1] for pid, v in b["live"].items() if pid not in new}
    ray_cpu = sum(v[1] for v in new.values() if v[2]) + sum(c for pid, c in grown.items() if b["live"][pid][2])
    engine = sum(v[1] for v in new.values() if not v[2]) + sum(c for pid, c in grown.items() if not b["live"][pid][2])
    wall = b["wall"] - a["wall"]
    driver, workers = b["self"] - a["self"], b["reaped"] - a["reaped"] + ray_cpu
    ours = driver + workers + engine
    return {"value": value, "wall": wall, "driver": driver, "workers": workers, "engine": engine,
            "others": max(0.0, (b["busy"] - a["busy"] - ours) / wall)}


def load_probe(seconds: float = 1.0) -> dict:
    """The machine's load now: 1-minute load average, cores, and the share of one core a single-threaded busy
    loop gets at normal priority (1.0 on an idle machine)."""
    t0, c0 = time.perf_counter(), time.process_time()
    x = 0
    while time.perf_counter() - t0 < seconds:
        x += sum(range(1000))
    return {"loadavg": os.getloadavg()[0], "cores": os.cpu_count(),
            "core_share": (time.process_time() - c0) / (time.perf_counter() - t0)}


def row(case: str, throughput: str, m: dict, w: int, base: dict) -> list:
    """A table row: wall, CPU (driver, per worker, engine), others' load; speed-up and efficiency against
    ``base`` on the wall clock; the speed-up the CPU times imply if the driver and every worker had a core of
    their own (``base``'s driver + worker CPU over this run's driver CPU + CPU per worker: the critical path);
    and all CPU seconds against ``base``'s (the engine's overhead, which the machine's load does not change)."""
    total = m["driver"] + m["workers"] + m["engine"]
    base_total = base["driver"] + base["workers"] + base["engine"]
    in_process = m["workers"] < 1e-3 * max(m["driver"], 1e-9)  # the serial rows: the driver does the work
    per_worker = m["driver"] if in_process else m["workers"] / w
    critical = m["driver"] + (0.0 if in_process else per_worker)
    return [case, throughput, f"{m['wall']:.2f}", f"{m['driver']:.2f}", f"{per_worker:.2f}", f"{m['engine']:.2f}",
            f"{m['others']:.1f}", f"{base['wall'] / m['wall']:.2f}", f"{base['wall'] / m['wall'] / w:.2f}",
            f"{(base['driver'] + base['workers']) / critical:.2f}", f"{total / base_total:.2f}"]


HEADER = ["case", "throughput", "wall s", "CPU s driver", "CPU s/worker", "CPU s engine", "others' cores",
          "speed-up", "efficiency", "speed-up (CPU)", "CPU vs base"]


def fastest(runs: list) -> dict:
    return min(runs, key=lambda m: m["wall"])


def bench_relabel(episodes: int, repeat: int, tmp: Path, ray_start: float) -> list:
    """Two solvers: LM from the analytic start (~0.3 ms/window, overhead-bound) and 300 Adam iterations
    (compute-bound, like the reference's numerical inverse)."""
    c = reacher_like_lqr(action_bound=1.0)
    cases = [("LM", make_inverter(c), synthetic_dataset(c, episodes=episodes, length=100), 256),
             ("Adam-300", ProblemInverter(InverseProblem(c, LinearizedDynamics()), AdamSolver(max_iter=300, ftol=0.0)),
              synthetic_dataset(c, episodes=max(4, episodes // 5), length=100), 64)]
    for _, inverter, data, chunk in cases:  # first-call costs, in this process
        relabel(data.select(slice(0, 500)), inverter, 5, tmp / "warm-serial.npz", chunk_size=chunk, progress=False)
    cold = measured(relabel_sharded, relabel, cases[0][2], cases[0][1], 5, tmp / "warm.npz", workers=2, chunk_size=256,
                    progress=False)
    rows = []
    for label, inverter, data, chunk in cases:
        windows = len(data) // 5
        runs: dict = {"serial": [], "ray, 1 worker": [], "ray, 2 workers": []}
        for i in range(repeat):
            for name in runs:
                out = tmp / f"{label}-{name.replace(' ', '').replace(',', '_')}-{i}.npz"
                if name == "serial":
                    m = measured(relabel, data, inverter, 5, out, chunk_size=chunk, progress=False)
                else:
                    m = measured(relabel_sharded, relabel, data, inverter, 5, out, workers=1 if "1" in name else 2,
                                 chunk_size=chunk, progress=False)
                runs[name].append(m)
                if name != "serial" and digest(out) != digest(tmp / f"{label}-serial-{i}.npz"):
                    raise AssertionError(f"{label} {name}: output differs from the serial path")
        base = fastest(runs["serial"])
        for name, ms in runs.items():
            best = fastest(ms)
            rows.append(row(f"relabel {label}, {windows} windows, {name}", f"{windows / best['wall']:,.0f} windows/s",
                            best, 1 if name == "serial" else int(name.split()[1]), base))
    rows.append(["ray start-up (init, once)", "-", f"{ray_start:.2f}"] + ["-"] * (len(HEADER) - 3))
    rows.append(row("ray first relabel (cold workers), LM", "-", cold, 2, cold)[:7] + ["-"] * 4)
    return rows


def train_job(job: dict) -> dict:
    """One experiment-stage job: a seeded IQL run on the toy dataset (like the experiments' train stage)."""
    from ohio_layers.rl import IQL

    data = toy_dataset(episodes=8, length=100, seed=job["seed"])
    agent = IQL.from_dataset(data, {"hidden": [64, 64], "batch_size": 64, "seed": job["seed"]})
    agent.fit(data, job["steps"], show_progress=False)
    return {"seed": job["seed"], "loss_q": agent.history[-1]["loss_q"]}


ENGINES = ["in-process (serial)", "process pool, 2 processes", "ray, 1 worker", "ray, 2 workers"]


def _engine(name: str) -> tuple:
    return ("ray" if "ray" in name else "process"), (1 if "serial" in name or "1 worker" in name else 2)


def bench_jobs(steps: int, repeat: int, tmp: Path) -> list:
    """Experiment-stage wall time: 4 training jobs through run_jobs in this process, a process pool and on Ray."""
    from ohio_layers.experiments.common import run_jobs

    jobs = [{"name": f"job{i}", "seed": i, "steps": steps} for i in range(4)]
    run_jobs(train_job, jobs[:2], tmp / "warm-jobs", workers=2, engine="ray")  # worker start-up and imports
    run_jobs(train_job, jobs[:1], tmp / "warm-jobs-here", workers=1)  # the same first-call costs in this process
    runs: dict = {n: [] for n in ENGINES}
    for i in range(repeat):
        for name in ENGINES:
            engine, w = _engine(name)
            out = tmp / f"jobs-{name.replace(' ', '').replace(',', '_').replace('(', '').replace(')', '')}-{i}"
            runs[name].append(measured(run_jobs, train_job, jobs, out, workers=w, desc=name, engine=engine))
    base = fastest(runs[ENGINES[0]])
    return [row(f"stage: 4 IQL jobs x {steps} steps, {n}", f"{4 / fastest(ms)['wall']:.2f} jobs/s", fastest(ms),
                _engine(n)[1], base) for n, ms in runs.items()]


def bench_collect(episodes: int, repeat: int, tmp: Path) -> list:
    """Experiment-stage wall time: the reacher's collection stage (episode-range shards, ``collect_episodes``)."""
    from ohio_layers.experiments import reacher
    from ohio_layers.experiments.shards import collect_episodes

    job = {"dataset": "expert", "seed": 0, "expert_noise": 0.1, "hierarchical_noise": [0.05]}
    for engine, w in (("ray", 2), ("process", 1)):  # worker start-up, imports, MuJoCo's first model: there and here
        collect_episodes(reacher._collect_range, job, 2 * w, tmp / f"warm-collect-{engine}.npz", stage_key={}, workers=w,
                         engine=engine, per_episode=("returns",))
    runs: dict = {n: [] for n in ENGINES}
    for i in range(repeat):
        for name in ENGINES:
            engine, w = _engine(name)
            out = tmp / f"collect-{engine}-{w}-{i}.npz"
            runs[name].append(measured(collect_episodes, reacher._collect_range, job, episodes, out, stage_key={},
                                       workers=w, engine=engine, per_episode=("returns",)))
            if digest(out) != digest(tmp / f"collect-process-1-{i}.npz"):
                raise AssertionError(f"collection on {name} differs from the serial path")
    base = fastest(runs[ENGINES[0]])
    return [row(f"stage: collect {episodes} reacher episodes, {n}", f"{episodes / fastest(ms)['wall']:.1f} episodes/s",
                fastest(ms), _engine(n)[1], base) for n, ms in runs.items()]


def toy_dataset(episodes: int = 40, length: int = 250, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    n = episodes * length
    obs = rng.normal(size=(n, 17)).astype(np.float32)
    act = np.tanh(obs[:, :6] + 0.1 * rng.normal(size=(n, 6))).astype(np.float32)
    return Dataset({"observations": obs, "actions": act, "rewards": -np.abs(obs[:, 0] - act[:, 0]),
                    "next_observations": obs + 0.1, "terminals": np.zeros(n, bool),
                    "episode_ids": np.repeat(np.arange(episodes), length)})


def ddp_run(data: Path, out: Path, ranks: int, steps: int, batch: int) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", "-m",
           "ohio_layers.train", "--data", str(data), "--agent", "IQL", "--out", str(out), "--steps", str(steps),
           "--checkpoint-every", str(steps), "--no-progress", "--set", f"batch_size={batch}"]
    m = measured(subprocess.run, cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if m["value"].returncode != 0:
        raise RuntimeError(m["value"].stderr[-3000:])
    info = json.loads((out / "ranks.json").read_text())
    if len(set(info["digests"])) != 1:
        raise AssertionError("ranks disagree on the parameters")
    # the training loop only: its wall time and each rank's CPU time (process start-up and imports excluded)
    return {"wall": info["train_seconds"], "driver": 0.0, "workers": float(sum(info["train_cpu_seconds"])),
            "engine": 0.0, "others": m["others"], "launch_wall": m["wall"], "rate": steps / info["train_seconds"]}


def bench_ddp(steps: int, repeat: int, tmp: Path) -> list:
    toy_dataset().save(tmp / "ddp.npz")
    cases = [("weak", 1, 256), ("weak", 2, 256), ("strong", 2, 128)]
    runs: dict = {c: [] for c in cases}
    for i in range(repeat):
        for case in cases:
            runs[case].append(ddp_run(tmp / "ddp.npz", tmp / f"ddp-{case[0]}-{case[1]}-{i}", case[1], steps, case[2]))
    base = fastest(runs[("weak", 1, 256)])
    rows = []
    for (kind, w, b), ms in runs.items():
        best = fastest(ms)
        r = row(f"DDP IQL {w} rank{'s' if w > 1 else ''}, {kind} (batch {b}/rank)", f"{best['rate']:.1f} steps/s",
                best, w, base)
        if kind == "weak":  # weak scaling: transitions/s against 1 rank (each rank does a full batch)
            speed = best["rate"] * w * b / (base["rate"] * 256)
            r[7], r[8] = f"{speed:.2f}", f"{speed / w:.2f}"
            work_base = (base["workers"]) / (steps * 256)  # CPU s per transition
            r[9] = f"{w * b / 256 * base['workers'] / (best['workers'] / w):.2f}"  # transitions/s, a core per rank
            r[10] = f"{best['workers'] / (steps * w * b) / work_base:.2f}"
        r[3] = "-"
        rows.append(r)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=200, help="relabel: episodes of 100 steps (20 windows each)")
    ap.add_argument("--ddp-steps", type=int, default=300)
    ap.add_argument("--job-steps", type=int, default=300, help="stage: gradient steps per training job")
    ap.add_argument("--collect-episodes", type=int, default=16, help="stage: reacher episodes (500 steps each)")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import ray

    before = load_probe()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as d:
        t = time.perf_counter()
        init_ray(2)
        ray_start = time.perf_counter() - t
        try:
            rows = (bench_relabel(args.episodes, args.repeat, Path(d), ray_start)
                    + bench_collect(args.collect_episodes, args.repeat, Path(d))
                    + bench_jobs(args.job_steps, args.repeat, Path(d)))
        finally:
            ray.shutdown()
        rows += bench_ddp(args.ddp_steps, args.repeat, Path(d))
    after = load_probe()
    print(format_table(rows, HEADER))
    print("best of --repeat runs by wall time. speed-up and efficiency (= speed-up / workers): wall time against the "
          "serial row of the same block (relabel: serial path; stages: in-process; DDP weak: transitions/s, strong: "
          "steps/s, against 1 rank). 'CPU vs base': all CPU seconds of the run (driver, workers, Ray's own processes) "
          "over the base row's: the engine's overhead, which the load does not change. 'others' cores': CPU the rest "
          "of the machine used during the run. DDP: training loop only (per-rank CPU from ranks.json).")
    print(f"machine: {before['cores']} cores; load average {before['loadavg']:.1f} before, {after['loadavg']:.1f} after "
          f"({(time.perf_counter() - t0) / 60:.1f} min); a 1-thread busy loop got {100 * before['core_share']:.0f} % / "
          f"{100 * after['core_share']:.0f} % of a core before / after. Scaling model: see this file's docstring.")


if __name__ == "__main__":
    main()
