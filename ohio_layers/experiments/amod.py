"""``ohio amod``: OHIO versus end-to-end agents on AMoD vehicle rebalancing.

Pipeline (every stage is cached under ``out_dir`` and resumes after an interruption):

1. oracle upper bound: the episode LP with the realised demand known
   (:mod:`ohio_layers.envs.amod.oracle`) on every evaluation episode; the behaviour heuristics
   evaluated on the same episodes;
2. behaviour datasets, one per heuristic (:func:`~ohio_layers.envs.amod.collect`; rows =
   rebalancing flows per edge);
3. relabelling with the analytic flow inverse (:class:`~ohio_layers.inverse.FlowInverter`, k = 1):
   ``z* = distribution after rebalancing``, verified by replaying it through the LP;
4. training on the *same* transitions: OHIO agents (Dirichlet GNN actor over regions, actions
   ``z*``, deployed through the min-cost-flow LP) and end-to-end agents (per-edge GNN actor,
   actions = raw flows, executed after the env floors and clips them), with IQL and Cal-QL
   (CQL with the Monte-Carlo lower bound; its actor also clones the batch's actions,
   ``calql_bc_weight``), several seeds;
5. online fine-tuning: the Cal-QL agents of every dataset continue as SAC online (a share of
   every batch from their offline data), with a deterministic evaluation on the evaluation
   episodes every ``eval_every`` env steps (fine-tuning curves);
6. a table (return as % of the oracle, served trips, rebalancing cost, constraint violations of
   the flows each agent hands to the vehicles), ``results.json`` and ``amod.png``.

A *constraint violation* is one edge entry of a decision's flows that is negative, fractional
or leaves a region that has fewer idle vehicles than the decision sends out of it; ``excess``
counts the vehicles requested beyond the idle ones (the env drops them). OHIO's flows come from
the LP, so they are counted the same way (and are 0 by construction).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..config import setting
from ..data import Dataset
from ..envs.amod.data import evaluate
from .amod_cost import COST_SOURCE, estimate
from .common import (ExperimentConfig, Stages, file_hash, format_table, pyplot, run_jobs, save_figure, save_results,
                     start_run, wall_time_note)
from .amod_data import BEHAVIOURS, collect_dataset, make_env, reference

ALGOS = ("iql", "cql", "calql")
ALGO_LABEL = {"iql": "IQL", "cql": "CQL", "calql": "Cal-QL"}
KINDS = ("ohio", "e2e")
KIND_LABEL = {"ohio": "OHIO", "e2e": "end-to-end"}

#: overrides for a ~2-minute smoke run (``ohio amod --quick``)
QUICK: Dict[str, Any] = {"behaviours": ["dispatch", "random"], "episodes": 40, "seeds": [0], "iql_steps": 300,
                         "cql_steps": 150, "online_steps": 200, "eval_every": 100, "eval_episodes": 4,
                         "finetune_eval_episodes": 2}

#: ``--full``: the paper's sizes (reference 5.2: 200k steps, batch 100, width 256, 510 episodes ~ 10k samples, 10
#: evaluation episodes; fine-tuning length not given: default). Its cities have 14-17 regions: needs ``--scenario``.
FULL: Dict[str, Any] = {"episodes": 510, "iql_steps": 200_000, "cql_steps": 200_000, "hidden": [256, 256],
                        "batch_size": 100, "eval_episodes": 10}

@dataclasses.dataclass
class AMoDExperimentConfig(ExperimentConfig):
    """Settings of ``ohio amod`` (defaults: about 11 min on 2 idle cores).

    Attributes:
        out_dir: where datasets, per-run results, ``results.json`` and the plot go.
        city: keyword arguments of :func:`~ohio_layers.envs.amod.synthetic_city` (default 3x3 grid), or with
            ``scenario`` those of :func:`~ohio_layers.envs.amod.load_scenario_json` (``horizon``, ``beta``, ...).
        scenario: a city JSON in the reference schema (``ohio amod --scenario``); checked and loaded when the
            config is built (:class:`~ohio_layers.envs.amod.scenario.ScenarioFileError` names file and record).
        preset: ``nyc-brooklyn`` or ``shenzhen-downtown-west`` (step minutes, demand scale, start hour of the
            paper's code; keys given in ``city`` win). Needs ``scenario``.
        behaviours: heuristics that collect one dataset each (see ``BEHAVIOURS``).
        episodes: episodes per dataset (20 decisions each).
        algos: offline algorithms (``"iql"``, ``"cql"``, ``"calql"``), each trained for OHIO and end-to-end.
        finetune: fine-tune the Cal-QL agents of every dataset online with SAC.
        seeds: training seeds per (dataset, kind, algorithm).
        hidden, batch_size: network widths and batch size (both kinds).
        reward_scale, discount: rewards are multiplied by ``reward_scale`` for training.
        z_eps: smoothing of the relabelled ``z*`` (no exact zeros for the Dirichlet density).
        iql_steps, expectile, temperature: IQL.
        cql_steps, cql_alpha, calql_alpha, cql_samples, alpha: CQL / Cal-QL (fixed entropy weight ``alpha``).
        importance_sampling: CQL's logsumexp with importance weights (see
            :class:`~ohio_layers.rl.cql.CQLConfig`).
        calql_bc_weight: behaviour-cloning weight in the Cal-QL actor loss (both kinds; kept by the
            SAC fine-tuning; see :class:`~ohio_layers.rl.sac.SACConfig`). Without it the actor climbs
            the critic's action-gradient, which deterministic heuristic data does not identify: on
            dispatch data its evaluations wander between 78 and 85 % of the oracle during training.
        online_steps, offline_ratio, online_lr, eval_every, finetune_eval_episodes: SAC fine-tuning.
        eval_episodes, eval_seed: evaluation episodes ``env.reset(seed=eval_seed + i)`` for every
            agent, heuristic and the oracle.
        data_seed: seed of the behaviour datasets.
        workers: parallel training processes (one torch thread each).
    """

    out_dir: str = "runs/amod"
    city: Dict[str, Any] = dataclasses.field(default_factory=dict)
    scenario: Optional[str] = None
    preset: Optional[str] = None
    behaviours: Tuple[str, ...] = setting(("dispatch", "random"), choices=BEHAVIOURS)
    episodes: int = setting(250, ge=1)
    algos: Tuple[str, ...] = setting(("iql", "calql"), choices=ALGOS)
    finetune: bool = True
    seeds: Tuple[int, ...] = (0, 1)
    hidden: Tuple[int, ...] = setting((64, 64), ge=1)
    batch_size: int = setting(64, ge=1)
    reward_scale: float = setting(0.01, gt=0.0)
    discount: float = setting(0.97, gt=0.0, le=1.0)
    z_eps: float = setting(1e-4, gt=0.0)
    iql_steps: int = setting(3000, ge=1)
    expectile: float = setting(0.8, gt=0.0, lt=1.0)
    temperature: float = setting(3.0, ge=0.0)
    cql_steps: int = setting(3000, ge=1)
    cql_alpha: float = setting(1.0, ge=0.0)
    calql_alpha: float = setting(10.0, ge=0.0)
    cql_samples: int = setting(2, ge=1)
    importance_sampling: bool = False
    calql_bc_weight: float = setting(1.0, ge=0.0)
    alpha: float = setting(0.01, ge=0.0)
    online_steps: int = setting(2000, ge=0)
    offline_ratio: float = setting(0.25, ge=0.0, le=1.0)
    online_lr: float = setting(3e-4, gt=0.0)
    eval_every: int = setting(200, ge=1)
    finetune_eval_episodes: int = setting(10, ge=1)
    eval_episodes: int = setting(10, ge=1)
    eval_seed: int = 10_000
    data_seed: int = 1_000

    def check(self) -> None:
        super().check()
        self._resolve_scenario()
        if self.finetune and "calql" not in self.algos:
            raise ValueError("finetune needs 'calql' in algos (fine-tuning starts from the Cal-QL agents)")
        if self.scenario is not None:
            return
        import inspect

        from ..envs.amod import synthetic_city

        known = set(inspect.signature(synthetic_city).parameters)
        unknown = sorted(set(self.city) - known)
        if unknown:  # caught here, not in a worker after data collection
            raise TypeError(f"AMoDExperimentConfig.city has unknown keys {unknown}; synthetic_city takes {sorted(known)}")

    def _resolve_scenario(self) -> None:
        """With ``scenario``: ``city = {"path": scenario, **preset, **city}``, loaded once to fail early."""
        from ..envs.amod.scenario import scenario_city

        if self.preset is not None and self.scenario is None:
            raise ValueError(f"preset {self.preset!r} needs a scenario JSON (--scenario PATH.json)")
        if self.scenario is None:
            if "path" in self.city:
                raise ValueError("city['path'] is not a synthetic_city argument; give the JSON as scenario (--scenario)")
            return
        self.city = scenario_city(self.scenario, self.preset, self.city)


def relabel_dataset(name: str, low_path: Path, cfg: AMoDExperimentConfig, stages: Stages) -> Dict[str, Any]:
    """OHIO relabelling of one dataset with the analytic flow inverse; returns its statistics (cached)."""
    path, stats_path = stages.out / "data" / f"{name}_ohio.npz", stages.out / "data" / f"{name}_ohio.json"
    key = stages.key(("city", "z_eps"), inputs=[low_path])
    return stages.json(stats_path, key, lambda: _relabel(Dataset.load(low_path), cfg, path), also=[path])


def _relabel(low: Dataset, cfg: AMoDExperimentConfig, path: Path) -> Dict[str, Any]:
    import torch

    from ..inverse import FlowInverter, relabel
    from ..inverse.flow_inverse import replay_flows

    env = make_env(cfg.city, "flows")
    controller = env.controller
    n_vehicles = float(env.scenario.fleet_size)
    eps = min(cfg.z_eps, 0.4 / (n_vehicles * env.n_regions))  # replay stays exact (flow_inverse docstring)
    t0 = time.perf_counter()
    extra = ("z_true",) if "z_true" in low else ()
    high, report = relabel(low, FlowInverter(controller, eps=eps), 1, path, extra_keys=extra, progress=False)
    replay = replay_flows(controller, torch.as_tensor(np.asarray(high["states"], dtype=np.float64)),
                          torch.as_tensor(np.asarray(low["actions"], dtype=np.float64)),
                          torch.as_tensor(np.asarray(high["z"], dtype=np.float64)))
    stats: Dict[str, Any] = {"rows": len(high), "seconds": time.perf_counter() - t0, "z_eps": eps,
                             "counts_reproduced": float(replay.counts_reproduced.double().mean()),
                             "flows_reproduced": float(replay.flows_reproduced.double().mean()),
                             "replay_over_observed_cost": float(replay.replay_cost.sum() / max(float(replay.observed_cost.sum()), 1e-9)),
                             "residual_median": report.residual_median, "converged": report.converged_share}
    if "z_true" in high:
        stats["z_error_median"] = float(np.median(np.abs(high["z"] - high["z_true"]).max(1)))
    return stats


# ------------------------------------------------------------------------------ training jobs
def _scaled(data: Dataset, scale: float) -> Dataset:
    arrays = dict(data.arrays)
    arrays["rewards"] = np.asarray(data["rewards"], dtype=np.float64) * scale
    return Dataset(arrays, dict(data.metadata))


def _agent_setup(job: Dict[str, Any]) -> Tuple[Dataset, str, Dict[str, Any], float, float, Any]:
    """Training data (scaled), action key, graph config fields, action bounds and the eval env."""
    from ..rl.gnn import graph_fields

    env = make_env(job["city"], "distribution" if job["kind"] == "ohio" else "flows")
    u = env.unwrapped
    data = _scaled(Dataset.load(job["data_path"]), job["reward_scale"])
    if job["kind"] == "ohio":
        return data, "z", graph_fields(u.n_regions, u.topology), 0.0, 1.0, env
    high = float(max(1.25 * np.asarray(data["actions"]).max() + 1.0, 2.0))
    return data, "actions", graph_fields(u.n_regions, u.topology, u.edge_index), 0.0, high, env


def _base_config(job: Dict[str, Any], graph: Dict[str, Any]) -> Dict[str, Any]:
    return {**graph, "seed": job["seed"], "hidden": job["hidden"], "batch_size": job["batch_size"],
            "discount": job["discount"], "grad_clip": 10.0, "device": job["device"]}


def _build_offline(job: Dict[str, Any]):
    """The configured offline agent (not trained) and its training data."""
    from ..rl.cql import add_mc_returns
    from ..rl.gnn import GraphCQL, GraphIQL

    data, key, graph, low, high, env = _agent_setup(job)
    cfg = _base_config(job, graph)
    obs_dim, da = int(np.asarray(data["observations"]).shape[1]), int(np.asarray(data[key]).shape[1])
    if job["algo"] == "iql":
        cfg.update(steps=job["iql_steps"], expectile=job["expectile"], temperature=job["temperature"],
                   actor_lr=1e-3, critic_lr=1e-3, value_lr=1e-3, state_dependent_std=True)
        agent = GraphIQL(obs_dim, da, low, high, cfg)
    else:
        calql = job["algo"] == "calql"
        cfg.update(steps=job["cql_steps"], cql_alpha=job["calql_alpha"] if calql else job["cql_alpha"], calql=calql,
                   num_samples=job["cql_samples"], importance_sampling=job["importance_sampling"], init_alpha=job["alpha"], auto_alpha=False,
                   actor_lr=1e-3, critic_lr=1e-3, bc_weight=job["calql_bc_weight"] if calql else 0.0)
        agent = GraphCQL(obs_dim, da, low, high, cfg)
        if calql:
            data = add_mc_returns(data, job["discount"])
    return agent, data, key, env


def _decider(agent: Any):
    return lambda obs, env: agent.act(np.asarray(obs, dtype=np.float32), deterministic=True)


def train_offline(job: Dict[str, Any]) -> Dict[str, Any]:
    """Train one offline agent, evaluate it, save it (for fine-tuning); runs in a worker process."""
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    agent, data, key, env = _build_offline(job)
    agent.fit(data, action_key=key, show_progress=False, log_every=max(1, agent.config.steps // 10))
    train_seconds = time.perf_counter() - t0
    agent.save(job["agent_path"])
    ev = evaluate(env, _decider(agent), job["eval_seeds"])
    return {**{k: job[k] for k in ("behaviour", "kind", "algo", "seed")}, **ev, "train_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - t0 - train_seconds, "history": agent.history}


def finetune(job: Dict[str, Any]) -> Dict[str, Any]:
    """SAC online fine-tuning from a saved Cal-QL agent, with periodic deterministic evaluations."""
    import gymnasium as gym
    import torch

    from ..rl.base import Agent
    from ..rl.gnn import GraphSAC

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data, key, _, _, _, eval_env = _agent_setup(job)
    pre = Agent.load(job["agent_path"], map_location=job["device"])
    sac = GraphSAC.from_agent(pre, {"offline_ratio": job["offline_ratio"], "update_after": 100, "start_steps": 0,
                                    "actor_lr": job["online_lr"], "critic_lr": job["online_lr"],
                                    "auto_alpha": False, "buffer_size": max(job["online_steps"], 1)})
    seeds = job["eval_seeds"][: job["finetune_eval_episodes"]]
    curve = [{"env_step": 0, **{k: v for k, v in evaluate(eval_env, _decider(sac), seeds).items() if k.startswith("mean_")}}]

    def log(row: Dict[str, float]) -> None:
        ev = evaluate(eval_env, _decider(sac), seeds)
        curve.append({"env_step": int(row["env_step"]), **{k: v for k, v in ev.items() if k.startswith("mean_")},
                      "train_episode_return": row.get("episode_return", float("nan")) / job["reward_scale"]})

    train_env = gym.wrappers.TransformReward(make_env(job["city"], eval_env.unwrapped.action_mode),
                                             lambda r: r * job["reward_scale"])
    if job["online_steps"] > 0:
        sac.fit_online(train_env, job["online_steps"], offline=data, action_key=key, seed=job["seed"] + 50_000,
                       show_progress=False, log_every=job["eval_every"], logger=log)
    final = evaluate(eval_env, _decider(sac), job["eval_seeds"])
    return {**{k: job[k] for k in ("behaviour", "kind", "algo", "seed")}, "curve": curve, **final,
            "seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------------------ the experiment
def _job(cfg: AMoDExperimentConfig, out: Path, behaviour: str, kind: str, algo: str, seed: int) -> Dict[str, Any]:
    name = f"{behaviour}_{kind}_{algo}_seed{seed}"
    data = out / "data" / (f"{behaviour}_ohio.npz" if kind == "ohio" else f"{behaviour}.npz")
    return {"name": name, "behaviour": behaviour, "kind": kind, "algo": algo, "seed": seed, "data_path": str(data),
            "data_sha256": file_hash(data),
            "agent_path": str(out / "agents" / f"{name}.pt"), "city": cfg.city, "hidden": list(cfg.hidden),
            "batch_size": cfg.batch_size, "discount": cfg.discount, "reward_scale": cfg.reward_scale,
            "iql_steps": cfg.iql_steps, "expectile": cfg.expectile, "temperature": cfg.temperature,
            "cql_steps": cfg.cql_steps, "cql_alpha": cfg.cql_alpha, "calql_alpha": cfg.calql_alpha,
            "cql_samples": cfg.cql_samples, "importance_sampling": cfg.importance_sampling,
            "calql_bc_weight": cfg.calql_bc_weight, "alpha": cfg.alpha, "online_steps": cfg.online_steps,
            "offline_ratio": cfg.offline_ratio, "online_lr": cfg.online_lr, "eval_every": cfg.eval_every,
            "finetune_eval_episodes": cfg.finetune_eval_episodes, "device": cfg.device,
            "eval_seeds": [cfg.eval_seed + i for i in range(cfg.eval_episodes)]}


def _cost(job: Dict[str, Any]) -> float:
    """Rough relative cost, to start the longest jobs first."""
    steps = job["iql_steps"] if job["algo"] == "iql" else 4 * job["cql_steps"]
    return steps * (4.0 if job["kind"] == "e2e" else 1.0)


def run(cfg: Optional[AMoDExperimentConfig] = None) -> Dict[str, Any]:
    """Run (or resume) the whole experiment; prints the table and returns the results dict."""
    cfg = cfg or AMoDExperimentConfig()
    out, stages = start_run(cfg)
    (out / "agents").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    workers = cfg.job_workers
    print(wall_time_note(estimate(cfg, workers, make_env(cfg.city, "flows").unwrapped.n_regions), workers, COST_SOURCE))
    print(f"[1/6] oracle LP and heuristics on {cfg.eval_episodes} evaluation episodes")
    ref = reference(cfg, stages)
    oracle = ref["oracle"]["mean_return"]
    relabel_stats: Dict[str, Any] = {}
    for name in cfg.behaviours:
        print(f"[2/6] behaviour data: {name} ({cfg.episodes} episodes)")
        low_path = collect_dataset(name, cfg, stages)
        print(f"[3/6] relabel {name} (analytic flow inverse)")
        relabel_stats[name] = relabel_dataset(name, low_path, cfg, stages)
    jobs = [_job(cfg, out, b, kind, algo, s) for b in cfg.behaviours for kind in KINDS for algo in cfg.algos for s in cfg.seeds]
    jobs.sort(key=_cost, reverse=True)
    print(f"[4/6] train and evaluate {len(jobs)} offline agents ({workers} processes)")
    runs = run_jobs(train_offline, jobs, out / "runs", workers=workers, desc="offline", engine=cfg.engine)
    ft_runs: List[Dict[str, Any]] = []
    if cfg.finetune:
        ft_jobs = [dict(_job(cfg, out, b, kind, "calql", s), name=f"finetune_{b}_{kind}_seed{s}")
                   for b in cfg.behaviours for kind in ("e2e", "ohio") for s in cfg.seeds]
        print(f"[5/6] online fine-tuning (Cal-QL -> SAC, {cfg.online_steps} env steps) of {len(ft_jobs)} agents")
        ft_runs = run_jobs(finetune, ft_jobs, out / "runs", workers=workers, desc="fine-tune", engine=cfg.engine)

    print("[6/6] results")
    pct = lambda r: 100.0 * r / oracle  # noqa: E731
    header = ["dataset", "agent", "% oracle", "std", "served", "reb. cost", "violations/ep", "excess veh/ep"]
    rows: List[List[Any]] = []
    summary: Dict[str, Any] = {}
    for b in cfg.behaviours:
        h = ref["heuristics"][b]
        rows.append([b, "behaviour heuristic", pct(h["mean_return"]), 0.0, h["mean_served"], h["mean_rebalancing_cost"],
                     h["mean_violations"], h["mean_excess"]])
        on_curve = float(np.mean(h["return"][: cfg.finetune_eval_episodes]))  # the fine-tuning curves' episodes
        summary[f"{b}/behaviour"] = {"percent_oracle": pct(h["mean_return"]), "return": h["mean_return"],
                                     "percent_oracle_curve_episodes": pct(on_curve)}
        for kind in KINDS:
            for algo in cfg.algos:
                mine = [r for r in runs if r["behaviour"] == b and r["kind"] == kind and r["algo"] == algo]
                p = [pct(r["mean_return"]) for r in mine]
                m = lambda k: float(np.mean([r[f"mean_{k}"] for r in mine]))  # noqa: E731
                rows.append([b, f"{KIND_LABEL[kind]} {ALGO_LABEL[algo]}", float(np.mean(p)), float(np.std(p)), m("served"),
                             m("rebalancing_cost"), m("violations"), m("excess")])
                summary[f"{b}/{kind}/{algo}"] = {"percent_oracle": p, "mean": float(np.mean(p)), "std": float(np.std(p)),
                                                 "return": m("return"), "served": m("served"),
                                                 "rebalancing_cost": m("rebalancing_cost"), "violations": m("violations"),
                                                 "negative": m("negative"), "fractional": m("fractional"),
                                                 "over_regions": m("over_regions"), "excess": m("excess"),
                                                 "train_seconds": [r["train_seconds"] for r in mine]}
    for b in cfg.behaviours:
        for kind in ("ohio", "e2e"):
            mine = [r for r in ft_runs if r["behaviour"] == b and r["kind"] == kind]
            if not mine:
                continue
            p = [pct(r["mean_return"]) for r in mine]
            rows.append([b, f"{KIND_LABEL[kind]} Cal-QL -> SAC online", float(np.mean(p)), float(np.std(p)),
                         float(np.mean([r["mean_served"] for r in mine])), float(np.mean([r["mean_rebalancing_cost"] for r in mine])),
                         float(np.mean([r["mean_violations"] for r in mine])), float(np.mean([r["mean_excess"] for r in mine]))])
            curves = [[pct(c["mean_return"]) for c in r["curve"]] for r in mine]
            summary[f"{b}/{kind}/finetune"] = {
                "percent_oracle": p, "mean": float(np.mean(p)), "env_steps": [c["env_step"] for c in mine[0]["curve"]],
                "curves_percent_oracle": curves, "min_during_finetuning": float(np.min(curves)),
                "violations": float(np.mean([r["mean_violations"] for r in mine]))}
    text = format_table(rows, header)
    for b in cfg.behaviours:
        for kind in ("ohio", "e2e"):
            f = summary.get(f"{b}/{kind}/finetune")
            if f:
                text += (f"\nfine-tuning {KIND_LABEL[kind]} on {b} data: lowest evaluation {f['min_during_finetuning']:.1f} "
                         f"(behaviour on the same {cfg.finetune_eval_episodes} episodes: "
                         f"{summary[f'{b}/behaviour']['percent_oracle_curve_episodes']:.1f})")
    head = (f"AMoD {make_env(cfg.city, 'flows').scenario.name}: return as % of the oracle LP with known demand "
            f"(oracle {oracle:.0f} per episode); {len(cfg.seeds)} seeds x {cfg.eval_episodes} episodes; "
            f"{cfg.episodes} episodes per dataset; violations = flow entries per episode that are negative, fractional "
            f"or leave a region without enough idle vehicles")
    print(head)
    print(text)
    wall = time.perf_counter() - t0
    print(f"wall time {wall / 60:.1f} min")
    results = {"config": cfg.to_dict(), "oracle": ref["oracle"], "relabel": relabel_stats,
               "heuristics": {k: {kk: v for kk, v in h.items() if kk.startswith("mean_")} for k, h in ref["heuristics"].items()},
               "summary": summary, "table": text, "header": head, "wall_seconds": wall,
               "finetune_curves": {f"{r['behaviour']}_{r['kind']}_seed{r['seed']}": r["curve"] for r in ft_runs}}
    save_results(out, results, plot, "amod.png")
    return results


def plot(results: Dict[str, Any], path: Path) -> None:
    """Left: % of oracle per dataset and agent (one dot per seed). Right: online fine-tuning curves."""
    plt = pyplot()
    if plt is None:
        return
    cfg, summ = results["config"], results["summary"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    labels, ticks, x = [], [], 0.0
    colors = {"behaviour": "#888888", "ohio": "#4c72b0", "e2e": "#c44e52"}
    for b in cfg["behaviours"]:
        ax.bar(x, summ[f"{b}/behaviour"]["percent_oracle"], color=colors["behaviour"])
        labels.append(f"{b}\nheuristic")
        ticks.append(x)
        x += 1
        for kind in KINDS:
            for algo in cfg["algos"]:
                s = summ[f"{b}/{kind}/{algo}"]
                ax.bar(x, s["mean"], color=colors[kind], alpha=0.85)
                ax.scatter([x] * len(s["percent_oracle"]), s["percent_oracle"], color="black", s=10, zorder=3)
                labels.append(f"{b}\n{kind} {ALGO_LABEL[algo]}")
                ticks.append(x)
                x += 1
        x += 0.5
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, fontsize=6, rotation=60)
    ax.set_ylabel("return, % of oracle LP")
    ax.set_title("offline agents (grey: behaviour, blue: OHIO, red: end-to-end)")
    ax.axhline(100, ls="--", color="k", lw=0.8)
    styles = ["-", "--", ":", "-."]
    for i, b in enumerate(cfg["behaviours"]):
        ls = styles[i % len(styles)]
        for kind in KINDS:
            s = summ.get(f"{b}/{kind}/finetune")
            if not s:
                continue
            c = np.array(s["curves_percent_oracle"])
            steps = s["env_steps"]
            ax2.plot(steps, c.mean(0), color=colors[kind], ls=ls, label=f"{KIND_LABEL[kind]} ({b} data)")
            if len(c) > 1:
                ax2.fill_between(steps, c.min(0), c.max(0), color=colors[kind], alpha=0.15)
        ax2.axhline(summ[f"{b}/behaviour"]["percent_oracle_curve_episodes"], color=colors["behaviour"], ls=ls, lw=1.2,
                    label=f"behaviour: {b}")
    ax2.set_xlabel("online env steps")
    ax2.set_ylabel("deterministic return, % of oracle")
    ax2.set_title("online fine-tuning: Cal-QL -> SAC")
    ax2.legend(fontsize=8)
    save_figure(fig, path)
