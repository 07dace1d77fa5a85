"""Behaviour data for robosuite Lift / Door and the observed-next-state labels.

Collection (:func:`collect_manipulation`): episode ``i`` runs the scripted policy with noise
``noise_levels[i % len]`` on ``reset(seed=seed + i)`` (policy noise seeded by the same number),
under the *original* controller, and is written atomically to ``<out_dir>/episode_<i>.npz`` as
soon as it finishes. A rerun skips finished episodes (resumable); a manifest refuses to mix
episodes of different settings. Episodes run in ``workers`` processes (one env each).

Per-step arrays (``ohio_layers.data.dataset`` format, ``T`` steps per episode)::

    observations, next_observations (T, do)   proprio-state + object-state
    actions (T, 7)              executed normalised OSC_POSE action (delta in [-1, 1], gripper)
    z_executed (T, 6)           the pose delta robosuite applied (m, rad) = actions[:, :6] * 0.05 / 0.5
    rewards, terminals (never), timeouts (last step), episode_ids, success (after the step)
    substep_states (T, 5, 137)  OSC inputs at every physics sub-step (OSCStateLayout)
    substep_torques (T, 5, 7)   applied (clipped) arm torques at every sub-step
    pose, next_pose (T, 12)     grip-site position and row-major rotation before / after the step

:func:`next_state_labels` is the observed-next-state baseline. The OHIO relabelling of this data
(and its dynamics-free verification) is in :mod:`ohio_layers.inverse.osc_relabel`,
since it joins this domain to the inverse package.
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from ...data.dataset import Dataset
from ...data.io import PathLike, atomic_write_bytes
from .env import ManipulationEnv, rotation_log

#: Action-noise levels cycled over episodes. Larger noise (0.2-0.3) drives the Panda's torques into
#: their limits on 73-89 % of Lift transitions (0.1: 24 %), and under *changed* gains a saturated
#: transition has no well-defined relabelled z (the inverse then trades position against orientation;
#: 31 % of noise-0.3 labels were > 2 cm off in position vs 3 % at noise 0.1, measured).
DEFAULT_NOISE = (0.05, 0.1, 0.15)
SUBSTEP_KEYS = ("substep_states", "substep_torques")


# ------------------------------------------------------------------------------ one episode
def record_episode(env: ManipulationEnv, policy: Any, seed: int, episode_id: int = 0) -> Dataset:
    """Run ``policy`` for one seeded episode of a recording env; per-step arrays as a Dataset."""
    if not env.record:
        raise ValueError("env must be created with record=True to log sub-step states and torques")
    obs, _ = env.reset(seed=seed)
    policy.reset(env, seed)
    rows: Dict[str, List[np.ndarray]] = {k: [] for k in (
        "observations", "next_observations", "actions", "z_executed", "rewards", "success", "substep_states",
        "substep_torques", "pose", "next_pose")}
    done = False
    while not done:
        pos, rot = env.grip_pose()
        action = policy.act(env, obs)
        next_obs, reward, term, trunc, info = env.step(action)
        log = info["substeps"]
        npos, nrot = env.grip_pose()
        normalised = np.r_[np.clip(action[:6] / np.asarray(env.setting.output_max), -1, 1), np.clip(action[6], -1, 1)]
        for key, value in (("observations", obs), ("next_observations", next_obs), ("actions", normalised),
                           ("z_executed", log["z"]), ("rewards", reward), ("success", info["success"]),
                           ("substep_states", log["states"]), ("substep_torques", log["torques"]),
                           ("pose", np.r_[pos, rot.ravel()]), ("next_pose", np.r_[npos, nrot.ravel()])):
            rows[key].append(np.asarray(value))
        obs, done = next_obs, term or trunc
    T = len(rows["rewards"])
    arrays = {k: np.stack(v) for k, v in rows.items()}
    arrays["rewards"] = arrays["rewards"].astype(np.float64)
    arrays["success"] = arrays["success"].astype(bool)
    arrays["terminals"] = np.zeros(T, bool)
    arrays["timeouts"] = np.r_[np.zeros(T - 1, bool), True]
    arrays["episode_ids"] = np.full(T, episode_id, np.int64)
    first = np.flatnonzero(arrays["success"])
    meta = {"seed": int(seed), "return": float(arrays["rewards"].sum()), "success": bool(first.size),
            "first_success": int(first[0]) + 1 if first.size else None, "policy": repr(policy)}
    return Dataset(arrays, meta)


# ------------------------------------------------------------------------------ collection
_WORKER: Dict[str, Any] = {}


def _worker_init(task: str, horizon: int) -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    _WORKER["env"] = ManipulationEnv(task, "original", horizon=horizon, record=True)
    _WORKER["for"] = (task, horizon)


def _collect_in_task(job: Dict[str, Any], horizon: int) -> Dict[str, Any]:
    """Ray task body: :func:`_collect_one` with the worker's env built on its first episode (Ray workers have no
    initializer); the episode file is written atomically, so a re-run task rewrites it whole."""
    if _WORKER.get("for") != (job["task"], horizon):
        _worker_init(job["task"], horizon)
    return _collect_one(job)


def _collect_one(job: Dict[str, Any]) -> Dict[str, Any]:
    from .policies import scripted_policy

    t0 = time.perf_counter()
    policy = scripted_policy(job["task"], job["noise"], **job.get("policy_kwargs", {}))
    ep = record_episode(_WORKER["env"], policy, job["seed"], job["episode"])
    ep.metadata.update(noise=job["noise"], episode=job["episode"], seconds=time.perf_counter() - t0)
    ep.save(job["path"])
    return {"episode": job["episode"], "return": ep.metadata["return"], "success": ep.metadata["success"]}


def collect_manipulation(task: str, episodes: int, out_dir: PathLike, *, noise_levels: Sequence[float] = DEFAULT_NOISE,
                         seed: int = 0, horizon: int = 500, workers: int = 2, progress: bool = True,
                         policy_kwargs: Optional[Dict[str, Any]] = None, engine: str = "process") -> Dataset:
    """Collect (or resume) ``episodes`` scripted episodes under the original controller.

    ``engine="ray"`` runs the episodes as Ray tasks (``workers`` in flight, 127.0.0.1 unless
    ``RAY_ADDRESS`` names a cluster) instead of a local process pool; same files.

    Returns the concatenation of all episodes, with ``metadata["returns"]`` (per episode),
    ``"success_rate"``, ``"mean_return"`` and the collection settings.
    """
    if engine not in ("process", "ray"):
        raise ValueError(f"engine must be 'process' or 'ray', got {engine!r}")
    if episodes < 1 or horizon < 1 or workers < 1:
        raise ValueError(f"episodes, horizon and workers must be >= 1, got {episodes}, {horizon}, {workers}")
    if not noise_levels or any(n < 0 for n in noise_levels):
        raise ValueError(f"noise_levels must be non-empty and >= 0, got {noise_levels}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"task": task, "horizon": horizon, "noise_levels": [float(n) for n in noise_levels], "seed": seed,
                "policy_kwargs": policy_kwargs or {}}
    manifest = out / "manifest.json"
    if manifest.exists():
        old = json.loads(manifest.read_text())
        if old != settings:
            raise RuntimeError(f"{out} holds episodes collected with {old}; this call asks for {settings}. "
                               f"Use another out_dir or delete it")
    else:
        atomic_write_bytes(manifest, json.dumps(settings, sort_keys=True).encode())
    jobs = [{"task": task, "episode": i, "seed": seed + i, "noise": float(noise_levels[i % len(noise_levels)]),
             "path": str(out / f"episode_{i:05d}.npz"), "policy_kwargs": policy_kwargs or {}} for i in range(episodes)]
    todo = [j for j in jobs if not Path(j["path"]).exists()]
    bar = tqdm(total=episodes, initial=episodes - len(todo), desc=f"collect {task}", unit="episode", disable=not progress)
    if todo:
        if engine == "ray":
            from ..._ray import map_tasks

            def done(i: int, r: Dict[str, Any]) -> None:
                bar.update()
                bar.set_postfix(ret=f"{r['return']:.0f}", ok=r["success"])

            map_tasks(_collect_in_task, len(todo), lambda i: (todo[i], horizon), workers, on_result=done,
                      desc=f"collect {task}", progress=False)
        elif workers == 1 or len(todo) == 1:
            _worker_init(task, horizon)
            for job in todo:
                r = _collect_one(job)
                bar.update()
                bar.set_postfix(ret=f"{r['return']:.0f}", ok=r["success"])
        else:
            import multiprocessing as mp

            os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
            with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=mp.get_context("spawn"),
                                     initializer=_worker_init, initargs=(task, horizon)) as pool:
                for fut in as_completed([pool.submit(_collect_one, j) for j in todo]):
                    r = fut.result()
                    bar.update()
                    bar.set_postfix(ret=f"{r['return']:.0f}", ok=r["success"])
    bar.close()
    return load_episodes(out, episodes)


def load_episodes(out_dir: PathLike, episodes: Optional[int] = None, drop: Sequence[str] = ()) -> Dataset:
    """Concatenate ``episode_*.npz`` of ``out_dir`` (the first ``episodes``); arrays in ``drop`` are left out."""
    out = Path(out_dir)
    paths = sorted(out.glob("episode_*.npz"))
    if episodes is not None:
        paths = paths[:episodes]
        if len(paths) < episodes:
            raise FileNotFoundError(f"{out} has {len(paths)} episodes, {episodes} requested")
    if not paths:
        raise FileNotFoundError(f"no episode_*.npz in {out}")
    parts = []
    for p in paths:
        d = Dataset.load(p)
        parts.append(Dataset({k: v for k, v in d.arrays.items() if k not in drop}, d.metadata))
    data = Dataset.concatenate(parts)
    returns = [p.metadata["return"] for p in parts]
    data.metadata = {"returns": returns, "mean_return": float(np.mean(returns)),
                     "success_rate": float(np.mean([p.metadata["success"] for p in parts])),
                     "noise": [p.metadata.get("noise") for p in parts], "episodes": len(parts),
                     "manifest": json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").exists() else {}}
    return data


def next_state_labels(dataset: Dataset) -> np.ndarray:
    """Observed-next-state baseline: ``z (N, 7)`` = achieved grip-site displacement and rotation, gripper."""
    dataset.require(["pose", "next_pose", "actions"])
    pose, nxt = dataset["pose"], dataset["next_pose"]
    R, Rn = pose[:, 3:].reshape(-1, 3, 3), nxt[:, 3:].reshape(-1, 3, 3)
    return np.concatenate([nxt[:, :3] - pose[:, :3], rotation_log(Rn @ np.swapaxes(R, 1, 2)), dataset["actions"][:, 6:7]], 1)
