"""``ohio supply-chain --scenario 1w3s|1w10s``: OHIO versus end-to-end agents on the inventory network.

Pipeline (cached under ``out_dir``; an interrupted run resumes):

1. MPC (rolling-horizon LP, the reference of every score) and the S-type policy on the
   evaluation episodes (and on ``1w10s-cap`` for the transfer);
2. behaviour datasets: MPC and S-type (rows = executed shipments and production);
3. relabelling with the analytic inverse (:class:`~ohio_layers.inverse.SupplyChainInverter`,
   shares from shipments, identity for production) and its replay check;
4. OHIO agents (edge-conditioned graph network, Dirichlet over nodes + Beta production head,
   deployed through the lexicographic LP) and end-to-end agents (per-edge shipments + production
   on the factory self-loop, bounded by 1.25 x the data's largest shipment + 1, executed after the
   env rounds and clips them), with IQL, CQL (the
   conservative penalty applied) and BC, several seeds; evaluated on ``eval_episodes`` episodes;
5. transfer (``1w10s`` only): the ``1w10s`` agents deployed on ``1w10s-cap`` without
   retraining. The OHIO agent's LP uses the new capacities; neither agent's observation shows
   them (the capacity column keeps the training value: the change is unknown to the policies);
6. fine-tuning: Cal-QL pre-training and SAC online for both kinds on ``finetune_datasets``, with a
   deterministic evaluation every ``eval_every`` env steps;
7. ``results.json`` (``rows``: ``scenario, dataset, agent, algorithm, score, capacity_violations``
   plus ``score_std``, ``seed_scores``, ``return``, ``overflow``), a table and ``supply_chain.png``.

``score`` = return as % of the MPC's return on the same episodes; ``capacity_violations`` =
units shipped per episode beyond the stores' room with the exact mean forecast (what shipping
less could have avoided; env ``info``); ``overflow`` = realised units above capacity per episode.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..config import setting
from ..data import Dataset
from ..envs.supply_chain.data import evaluate, make_env, observe_as, policy_decider, run_episode  # noqa: F401 (observe_as, run_episode: re-exported)
from .common import (ExperimentConfig, Stages, estimate_wall_time, file_hash, format_table, pyplot, run_jobs,
                     save_figure, save_results, start_run, wall_time_note)
from .shards import collect_episodes, evaluate_jobs
from .supply_chain_jobs import JOB_FIELDS, agent_setup, build_agent, finetune, train_offline  # noqa: F401 (re-exported)

ALGOS = ("iql", "cql", "bc")
KINDS = ("ohio", "end_to_end")
DATASETS = ("mpc", "s_type")
TRANSFER = {"1w10s": "1w10s-cap"}

#: overrides for a smoke run (``ohio supply-chain --quick``)
QUICK: Dict[str, Any] = {"episodes": 8, "seeds": [0], "iql_steps": 150, "cql_steps": 80, "bc_steps": 150, "eval_episodes": 3,
                         "calql_steps": 80, "online_steps": 60, "eval_every": 30, "critic_warmup": 30, "finetune_eval_episodes": 2}

#: ``ohio supply-chain --full``: the paper's sizes (reference section 5.3: 20k samples = 667 episodes of 30
#: decisions per dataset, 500k updates per offline agent, batch 100, 256-wide networks, fine-tuning 150k env steps;
#: 10 evaluation episodes). Cal-QL pre-training gets the same 500k updates; an evaluation every 5000 online steps.
FULL: Dict[str, Any] = {"episodes": 667, "iql_steps": 500_000, "cql_steps": 500_000, "bc_steps": 500_000,
                        "calql_steps": 500_000, "online_steps": 150_000, "eval_every": 5000, "critic_warmup": 500, "hidden": [256, 256],
                        "batch_size": 100, "eval_episodes": 10}

#: CPU seconds per unit (one torch thread, hidden 64; 1w10s / 1w3s), measured as process time on the loaded 2-core
#: machine (see :class:`SupplyChainExperimentConfig`), hence conservative. ``sac_step``: a Cal-QL update plus an env
#: step; ``collect_episode``: an MPC episode (the S-type policy is cheaper). Wider networks are scaled by
#: hidden/64, an extrapolation (not measured).
COSTS: Dict[str, Dict[str, float]] = {
    "1w10s": {"iql_step": 22e-3, "cql_step": 47e-3, "bc_step": 6e-3, "calql_step": 55e-3, "sac_step": 58e-3,
              "eval_episode": 0.07, "collect_episode": 0.3},
    "1w3s": {"iql_step": 15e-3, "cql_step": 28e-3, "bc_step": 4e-3, "calql_step": 30e-3, "sac_step": 33e-3,
             "eval_episode": 0.05, "collect_episode": 0.3}}
COST_SOURCE = "ohio_layers.experiments.supply_chain.COSTS: process time per step measured on the loaded 2-core machine"


def estimate(cfg: "SupplyChainExperimentConfig", workers: int) -> List[Tuple[str, float]]:
    """Estimated wall seconds of each phase of a run from scratch on ``workers`` processes (see ``COSTS``)."""
    width = max(1.0, max(cfg.hidden) / 64)
    costs = {k: v * (width if k.endswith("_step") else 1.0) for k, v in COSTS[cfg.scenario].items()}
    scenarios = 2 if cfg.scenario in TRANSFER else 1
    data = [{"collect_episode": 2 * scenarios * cfg.eval_episodes + len(cfg.datasets) * cfg.episodes}]
    steps = {"iql": cfg.iql_steps, "cql": cfg.cql_steps, "bc": cfg.bc_steps}
    offline = [{f"{a}_step": steps[a], "eval_episode": scenarios * cfg.eval_episodes}
               for _ in cfg.datasets for _ in KINDS for a in cfg.algos for _ in cfg.seeds]
    evals = cfg.online_steps // cfg.eval_every + 1
    online = [{"calql_step": cfg.calql_steps, "sac_step": cfg.online_steps,
               "eval_episode": evals * cfg.finetune_eval_episodes + scenarios * cfg.eval_episodes}
              for _ in cfg.finetune_datasets for _ in KINDS for _ in cfg.seeds]
    phases = [("data + relabel", estimate_wall_time(data, costs, 1)), ("offline", estimate_wall_time(offline, costs, workers))]
    if online:
        phases.append(("fine-tune", estimate_wall_time(online, costs, workers)))
    return phases


@dataclasses.dataclass
class SupplyChainExperimentConfig(ExperimentConfig):
    """Settings of ``ohio supply-chain``.

    Default size, from CPU time per step measured with one torch thread (process time, on the
    loaded 2-core machine; 1w10s / 1w3s): IQL 22 / 15 ms, CQL 47 / 28 ms, BC 6 / 4 ms, Cal-QL
    55 / 30 ms, an evaluation episode 70 ms, an MPC episode about 0.3 s. 24 offline jobs and 4
    fine-tuning jobs come to about 2200 CPU-s for 1w10s by these costs, i.e. at most about 19 min
    on 2 idle cores (1w3s about 12 min); the default run's own CPU time per step was about half
    these costs (see its ``cpu_seconds_per_step``).

    ``bc_steps`` is 8000 (not 2000) and ``calql_steps`` 3000 (not 1000) because the OHIO actor's
    Dirichlet fits a deterministic behaviour only as its concentration grows: on the 1w10s S-type
    data, 2000 BC steps left it at a median total concentration of about 130 and a mean shipment
    error of 0.7-0.9 units per store and period (end-to-end 0.9), 8000 steps at about 420 and 0.4
    (end-to-end 0.6); the return rose from 77-79 % to 82 % of the MPC's while the end-to-end BC
    stayed at 81-82 % (seed 0; one seed each). Cal-QL's actor clones the data with the same
    Dirichlet (``calql_bc_weight``), hence its longer pre-training (not measured separately).

    Attributes:
        out_dir: datasets, agents, per-run results, ``results.json`` and the plot.
        scenario: ``"1w3s"`` or ``"1w10s"`` (``1w10s`` adds the transfer to ``1w10s-cap``).
        datasets: behaviour policies with one dataset each; episodes: episodes per dataset (30 rows each).
        algos, seeds: offline algorithms (``iql``, ``cql``, ``bc``) trained for both kinds, per seed.
        hidden, batch_size, reward_scale, discount: networks and training (rewards x ``reward_scale``).
        z_eps: smoothing of the relabelled shares (Dirichlet density; replay stays exact).
        iql_steps, expectile, temperature: IQL. cql_steps, cql_alpha, cql_samples, alpha: CQL (fixed entropy weight).
        bc_steps: BC.
        finetune_datasets: datasets whose Cal-QL agents are fine-tuned online with SAC (empty: none).
        calql_steps, calql_alpha, calql_bc_weight: Cal-QL pre-training (its actor also clones the data).
        online_steps, offline_ratio, online_lr, eval_every, finetune_eval_episodes: SAC fine-tuning
            (``online_lr``: the critics'); online_actor_lr: the actor's (the reference's 3e-5, below the critics');
            critic_warmup: online steps that train only the critics (reference: critic-only first; see
            :attr:`~ohio_layers.rl.sac.SACConfig.critic_warmup`). ``finetune_eval_episodes`` (<= ``eval_episodes``;
            the first ones) is 10, the table's episodes. The agents track their behaviour to 0.1-0.3 points, so which
            side of it an evaluation reads depends on the episodes: the same 1w10s seed-0 evaluation read 0.10
            below the behaviour on 5 episodes and 0.01 above on 10.
        eval_episodes, eval_seed: evaluation episodes ``reset(seed=eval_seed + i)``; data_seed: datasets.
        workers: parallel training processes (one torch thread each).
    """

    out_dir: str = "runs/supply-chain"
    scenario: str = setting("1w3s", choices=("1w3s", "1w10s"))
    datasets: Tuple[str, ...] = setting(DATASETS, choices=DATASETS)
    episodes: int = setting(60, ge=1)
    algos: Tuple[str, ...] = setting(ALGOS, choices=ALGOS)
    seeds: Tuple[int, ...] = (0, 1)
    hidden: Tuple[int, ...] = setting((64, 64), ge=1)
    batch_size: int = setting(64, ge=1)
    reward_scale: float = setting(0.01, gt=0.0)
    discount: float = setting(0.97, gt=0.0, le=1.0)
    z_eps: float = setting(1e-5, gt=0.0)
    iql_steps: int = setting(2000, ge=1)
    expectile: float = setting(0.7, gt=0.0, lt=1.0)
    temperature: float = setting(3.0, ge=0.0)
    cql_steps: int = setting(1500, ge=1)
    cql_alpha: float = setting(1.0, ge=0.0)
    cql_samples: int = setting(2, ge=1)
    alpha: float = setting(0.01, ge=0.0)
    bc_steps: int = setting(8000, ge=1)
    finetune_datasets: Tuple[str, ...] = setting(("s_type",), choices=DATASETS, allow_empty=True)
    calql_steps: int = setting(3000, ge=1)
    calql_alpha: float = setting(1.0, ge=0.0)
    calql_bc_weight: float = setting(1.0, ge=0.0)
    online_steps: int = setting(600, ge=0)
    offline_ratio: float = setting(0.5, ge=0.0, le=1.0)
    online_lr: float = setting(1e-4, gt=0.0)
    online_actor_lr: float = setting(3e-5, gt=0.0)
    critic_warmup: int = setting(150, ge=0)
    eval_every: int = setting(150, ge=1)
    finetune_eval_episodes: int = setting(10, ge=1)
    eval_episodes: int = setting(10, ge=1)
    eval_seed: int = 10_000
    data_seed: int = 1_000

    def check(self) -> None:
        super().check()
        if set(self.finetune_datasets) - set(self.datasets):
            raise ValueError(f"finetune_datasets must be a subset of datasets {list(self.datasets)}, got {list(self.finetune_datasets)}")
        if self.finetune_eval_episodes > self.eval_episodes:  # the curves use the first evaluation episodes
            raise ValueError(f"finetune_eval_episodes must be <= eval_episodes ({self.eval_episodes}), "
                             f"got {self.finetune_eval_episodes}")


def reference(cfg: SupplyChainExperimentConfig, stages: Stages, scenario: str) -> Dict[str, Any]:
    """MPC and S-type on the evaluation episodes of ``scenario`` (cached; one job per policy on ``cfg.engine``)."""
    path = stages.out / f"reference_{scenario}.json"
    key = stages.key(("eval_seed", "eval_episodes"), scenario=scenario)

    def compute() -> Dict[str, Any]:
        jobs = [{"name": name, "scenario": scenario, "eval_seed": cfg.eval_seed, "eval_episodes": cfg.eval_episodes}
                for name in DATASETS]
        return evaluate_jobs(_reference_job, jobs, path, stage_key=key, workers=cfg.job_workers, engine=cfg.engine,
                             desc=f"reference {scenario}")

    return stages.json(path, key, compute)


def _reference_job(job: Dict[str, Any]) -> Dict[str, Any]:
    """One policy on every evaluation seed (a job of :func:`reference`; its random stream spans the episodes)."""
    seeds = [job["eval_seed"] + i for i in range(job["eval_episodes"])]
    env = make_env(job["scenario"], "end_to_end")
    return evaluate(env, policy_decider(job["name"], env, job["eval_seed"]), seeds)


def prepare_data(cfg: SupplyChainExperimentConfig, stages: Stages, name: str) -> Dict[str, Any]:
    """Collect one behaviour dataset and relabel it; returns the replay statistics (cached on the
    settings they read: a changed one recollects and relabels)."""
    out = stages.out
    key = stages.key(("scenario", "episodes", "data_seed", "z_eps"), dataset=name)
    return stages.json(out / "data" / f"{name}_ohio.json", key, lambda: _prepare_data(cfg, out, name, key),
                       also=[out / "data" / f"{name}.npz", out / "data" / f"{name}_ohio.npz"])


def collect_dataset(cfg: SupplyChainExperimentConfig, name: str, path: Path,
                    stage_key: Optional[Dict[str, Any]] = None) -> Dataset:
    """Behaviour dataset ``name`` saved to ``path`` (episode-range jobs on ``cfg.engine``; the bytes of one
    :func:`~ohio_layers.envs.supply_chain.collect` call)."""
    job = {"dataset": name, "scenario": cfg.scenario, "seed": cfg.data_seed + 100_000 * DATASETS.index(name)}
    return collect_episodes(_collect_range, job, cfg.episodes, path, workers=cfg.job_workers, engine=cfg.engine,
                            stage_key=stage_key if stage_key is not None else {**job, "episodes": cfg.episodes},
                            desc=f"collect {name}")


def _collect_range(job: Dict[str, Any]) -> Dataset:
    """Episodes ``first .. first + count - 1`` of a behaviour dataset (a job of :func:`collect_dataset`)."""
    from ..envs.supply_chain import collect

    return collect(job["dataset"], job["count"], job["seed"], job["scenario"], progress=False, first=job["first"])


def _prepare_data(cfg: SupplyChainExperimentConfig, out: Path, name: str, key: Dict[str, Any]) -> Dict[str, Any]:
    import torch

    from ..envs.supply_chain import SupplyChainEnv
    from ..inverse import SupplyChainInverter, relabel, replay_supply

    low = collect_dataset(cfg, name, out / "data" / f"{name}.npz", key)
    controller = SupplyChainEnv(cfg.scenario).controller
    t0 = time.perf_counter()
    high, report = relabel(low, SupplyChainInverter(controller, cfg.z_eps), 1, out / "data" / f"{name}_ohio.npz", progress=False)
    rep = replay_supply(controller, torch.as_tensor(low["states"]), torch.as_tensor(low["actions"]),
                        torch.as_tensor(high["z"]))
    stats = {**rep.summary(), "seconds": time.perf_counter() - t0, "behaviour_return": float(low["rewards"].sum() / cfg.episodes),
             "behaviour_capacity_violations": float(low["capacity_violations"].sum() / cfg.episodes)}
    return stats


def _job(cfg: SupplyChainExperimentConfig, out: Path, dataset: str, kind: str, algo: str, seed: int) -> Dict[str, Any]:
    """One training job (``algo`` ``calql``: Cal-QL pre-training + SAC fine-tuning); its dict is its cache key."""
    data = out / "data" / (f"{dataset}_ohio.npz" if kind == "ohio" else f"{dataset}.npz")
    return {"name": f"{dataset}_{kind}_{algo}_seed{seed}", "dataset": dataset, "kind": kind, "algo": algo, "seed": seed,
            "data_path": str(data), "data_sha256": file_hash(data), "scenario": cfg.scenario, "transfer": TRANSFER.get(cfg.scenario),
            "eval_seeds": [cfg.eval_seed + i for i in range(cfg.eval_episodes)],
            "obs_stats": "per_role",  # stores / factory pooled (agent_setup); results cached with per-node stats are stale
            **{name: getattr(cfg, name) for name in JOB_FIELDS["common"] + JOB_FIELDS[algo]}}


def capacity_binding(data: Dataset, store_capacity: Any) -> Dict[str, float]:
    """How often a dataset's shipments exceed the stores' room under ``store_capacity`` ``(S,)``.

    The room is the env's: ``max(Cap - I + D_hat - A, 0)`` from the recorded controller states. Under the
    transfer capacities it says how much the change can matter on the data's state distribution: a
    behaviour that never ships beyond the new room gives an end-to-end agent that copies it nothing to
    lose.

    Returns:
        ``share``: fraction of (row, store) pairs shipping beyond the room; ``units_per_episode``: the
        excess units per episode (the env's ``capacity_violations`` had these shipments been made there).
    """
    import torch

    from ..lowlevel.supply_chain import store_room

    cap = np.asarray(store_capacity, dtype=np.float64)
    ship = np.asarray(data["actions"], np.float64)[:, :-1]
    S = ship.shape[1]
    if cap.shape != (S,):
        raise ValueError(f"store_capacity must have shape ({S},), got {cap.shape}")
    room = store_room(torch.as_tensor(np.asarray(data["states"], np.float64)), torch.as_tensor(cap)).numpy()
    excess = np.maximum(ship - np.maximum(room, 0.0), 0.0)
    episodes = max(len(np.unique(np.asarray(data["episode_ids"]))), 1)
    return {"share": float((excess > 0).mean()), "units_per_episode": float(excess.sum() / episodes)}


# ------------------------------------------------------------------------------ the experiment
def _row(scenario: str, dataset: str, agent: str, algorithm: str, evals: List[Dict[str, Any]], mpc: List[float]) -> Dict[str, Any]:
    """One results row from the evaluations of every seed (``mpc``: MPC returns on the same episodes)."""
    ref = float(np.mean(mpc))
    scores = [100.0 * e["mean_return"] / ref for e in evals]
    m = lambda k: float(np.mean([e[f"mean_{k}"] for e in evals]))  # noqa: E731
    return {"scenario": scenario, "dataset": dataset, "agent": agent, "algorithm": algorithm, "score": float(np.mean(scores)),
            "capacity_violations": m("capacity_violations"), "score_std": float(np.std(scores)), "seed_scores": scores,
            "return": m("return"), "overflow": m("overflow"), "over_order": m("over_order")}


def run(cfg: Optional[SupplyChainExperimentConfig] = None) -> Dict[str, Any]:
    """Run (or resume) the experiment; prints the tables and returns the results dict."""
    cfg = cfg or SupplyChainExperimentConfig()
    out, stages = start_run(cfg)
    (out / "data").mkdir(parents=True, exist_ok=True)
    t0, workers = time.perf_counter(), cfg.job_workers
    print(wall_time_note(estimate(cfg, workers), workers, COST_SOURCE))
    scenarios = [cfg.scenario] + ([TRANSFER[cfg.scenario]] if cfg.scenario in TRANSFER else [])
    print(f"[1/5] MPC and S-type on {cfg.eval_episodes} evaluation episodes of {', '.join(scenarios)}")
    refs = {s: reference(cfg, stages, s) for s in scenarios}
    relabel_stats = {}
    for name in cfg.datasets:
        print(f"[2/5] {name} data ({cfg.episodes} episodes) and relabelling")
        relabel_stats[name] = prepare_data(cfg, stages, name)
    binding: Dict[str, Dict[str, Dict[str, float]]] = {}
    if cfg.scenario in TRANSFER:
        from ..envs.supply_chain.scenario import get_scenario

        for name in cfg.datasets:
            low = Dataset.load(out / "data" / f"{name}.npz")
            binding[name] = {sc: capacity_binding(low, get_scenario(sc).store_capacity) for sc in scenarios}
    jobs = [_job(cfg, out, d, k, a, s) for d in cfg.datasets for k in KINDS for a in cfg.algos for s in cfg.seeds]
    jobs.sort(key=lambda j: {"cql": 3, "iql": 2, "bc": 1}[j["algo"]] * (2 if j["kind"] == "end_to_end" else 1), reverse=True)
    print(f"[3/5] train and evaluate {len(jobs)} offline agents ({workers} processes)")
    runs = run_jobs(train_offline, jobs, out / "runs", workers=workers, desc="offline", engine=cfg.engine)
    ft_jobs = [dict(_job(cfg, out, d, k, "calql", s), name=f"finetune_{d}_{k}_seed{s}")
               for d in cfg.finetune_datasets for k in KINDS for s in cfg.seeds]
    print(f"[4/5] Cal-QL + SAC fine-tuning ({cfg.online_steps} env steps) of {len(ft_jobs)} agents")
    ft_runs = run_jobs(finetune, ft_jobs, out / "runs", workers=workers, desc="fine-tune", engine=cfg.engine) if ft_jobs else []
    print("[5/5] results")
    rows: List[Dict[str, Any]] = []
    for sc in scenarios:
        mpc = refs[sc]["mpc"]["return"]
        for d in cfg.datasets:
            rows.append(_row(sc, d, "behaviour", "none", [refs[sc][d]], mpc))
            for kind in KINDS:
                for algo in cfg.algos:
                    mine = [r["evaluations"][sc] for r in runs if (r["dataset"], r["kind"], r["algo"]) == (d, kind, algo)]
                    rows.append(_row(sc, d, kind, algo, mine, mpc))
                mine = [r["evaluations"][sc] for r in ft_runs if (r["dataset"], r["kind"]) == (d, kind)]
                if mine:
                    rows.append(_row(sc, d, kind, "calql_sac", mine, mpc))
    curves = {}
    for d in cfg.finetune_datasets:
        mpc_c = float(np.mean(refs[cfg.scenario]["mpc"]["return"][: cfg.finetune_eval_episodes]))
        behaviour = 100.0 * float(np.mean(refs[cfg.scenario][d]["return"][: cfg.finetune_eval_episodes])) / mpc_c
        for kind in KINDS:
            mine = [r for r in ft_runs if (r["dataset"], r["kind"]) == (d, kind)]
            c = [[100.0 * p["mean_return"] / mpc_c for p in r["curve"]] for r in mine]
            curves[f"{d}/{kind}"] = {"env_steps": [p["env_step"] for p in mine[0]["curve"]], "scores": c,
                                     "violations": [[p["mean_capacity_violations"] for p in r["curve"]] for r in mine],
                                     "behaviour_score": behaviour, "min_score": float(np.min(c))}
    header = ["scenario", "dataset", "agent", "algorithm", "score", "std", "cap. viol./ep", "overflow/ep"]
    text = format_table([[r["scenario"], r["dataset"], r["agent"], r["algorithm"], r["score"], r["score_std"],
                          r["capacity_violations"], r["overflow"]] for r in rows], header)
    for key, cv in curves.items():
        text += (f"\nfine-tuning {key}: lowest evaluation {cv['min_score']:.1f} % of MPC (behaviour on the same "
                 f"{cfg.finetune_eval_episodes} episodes: {cv['behaviour_score']:.1f})")
    for name, b in binding.items():
        text += (f"\n{name} data: shipments beyond the room in {100 * b[scenarios[1]]['share']:.2f} % of store-periods "
                 f"({b[scenarios[1]]['units_per_episode']:.2f} units/episode) under {scenarios[1]}'s capacities, "
                 f"{100 * b[scenarios[0]]['share']:.2f} % under {scenarios[0]}'s")
    head = (f"supply chain {cfg.scenario}: score = return as % of the MPC's on the same {cfg.eval_episodes} episodes, "
            f"mean over {len(cfg.seeds)} seeds; {cfg.episodes} episodes per dataset; cap. viol. = units shipped beyond "
            f"the room per episode")
    wall = time.perf_counter() - t0
    print(head)
    print(text)
    print(f"wall time {wall / 60:.1f} min")
    results = {"config": cfg.to_dict(), "rows": rows, "relabel": relabel_stats, "finetune_curves": curves,
               "transfer_binding": binding,
               "reference": {s: {k: {kk: v for kk, v in r.items() if kk.startswith("mean_")} for k, r in refs[s].items()}
                             for s in scenarios},
               "table": text, "header": head, "wall_seconds": wall,
               "seconds_per_step": {r["kind"] + "/" + r["algo"]: r["train_seconds"] / r["steps"] for r in runs},
               "cpu_seconds_per_step": {r["kind"] + "/" + r["algo"]: r.get("train_cpu_seconds", float("nan")) / r["steps"]
                                        for r in runs}}
    save_results(out, results, plot, "supply_chain.png")
    return results


def plot(results: Dict[str, Any], path: Path) -> None:
    """Left: scores per row (behaviour grey, OHIO blue, end-to-end red). Right: fine-tuning curves."""
    plt = pyplot()
    if plt is None:
        return
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(14, 4.8))
    colors = {"behaviour": "#888888", "ohio": "#4c72b0", "end_to_end": "#c44e52"}
    rows = results["rows"]
    ax.bar(range(len(rows)), [r["score"] for r in rows], color=[colors[r["agent"]] for r in rows])
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"{r['scenario']} {r['dataset']}\n{r['agent']} {r['algorithm']}" for r in rows], fontsize=5, rotation=70)
    ax.axhline(100, ls="--", color="k", lw=0.8)
    floor = -150.0  # collapsed agents (thousands of % below) would hide the differences that matter
    ax.set_ylim(max(floor, min(r["score"] for r in rows) - 5), 115)
    for i, r in enumerate(rows):
        if r["score"] < floor:
            ax.text(i, floor + 5, f"{r['score']:.0f}", rotation=90, fontsize=5, ha="center", va="bottom")
    ax.set_ylabel("return, % of MPC")
    ax.set_title("offline agents and transfer (grey: behaviour, blue: OHIO, red: end-to-end)")
    for i, (key, cv) in enumerate(results["finetune_curves"].items()):
        kind = key.split("/")[1]
        c = np.array(cv["scores"])
        ax2.plot(cv["env_steps"], c.mean(0), color=colors[kind], label=key)
        if len(c) > 1:
            ax2.fill_between(cv["env_steps"], c.min(0), c.max(0), color=colors[kind], alpha=0.15)
        if i % 2 == 0:
            ax2.axhline(cv["behaviour_score"], color=colors["behaviour"], ls=":", label=f"behaviour ({key.split('/')[0]})")
    low = min(min(np.min(cv["scores"]) for cv in results["finetune_curves"].values()), 0.0) if results["finetune_curves"] else 0.0
    ax2.set_ylim(max(floor, low - 5), 115)
    ax2.set_xlabel("online env steps")
    ax2.set_ylabel("deterministic return, % of MPC")
    ax2.set_title("Cal-QL -> SAC fine-tuning")
    ax2.legend(fontsize=8)
    save_figure(fig, path)
