"""The training jobs of ``ohio supply-chain``: build, train and evaluate one agent (a worker process runs each).

A job is a dict (:func:`ohio_layers.experiments.supply_chain._job` builds it; it is also the job's cache
key): the dataset file and its hash, the kind (``ohio`` / ``end_to_end``), the algorithm, the seed, the
evaluation seeds and the settings in :data:`JOB_FIELDS` for that algorithm.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

from ..data import Dataset
from ..envs.supply_chain.data import evaluate, make_env, observe_as

__all__ = ["JOB_FIELDS", "agent_setup", "build_agent", "train_offline", "finetune"]

#: the settings a job reads besides its data and evaluation episodes, per algorithm (``calql``: the fine-tuning
#: job). A job's cache key holds only these, so changing one algorithm's setting reruns only its jobs.
JOB_FIELDS: Dict[str, Tuple[str, ...]] = {
    "common": ("device", "hidden", "batch_size", "reward_scale", "discount"),
    "iql": ("iql_steps", "expectile", "temperature"),
    "cql": ("cql_steps", "cql_alpha", "cql_samples", "alpha"),
    "bc": ("bc_steps",),
    "calql": ("calql_steps", "calql_alpha", "calql_bc_weight", "cql_samples", "alpha", "online_steps", "offline_ratio",
              "online_lr", "online_actor_lr", "critic_warmup", "eval_every", "finetune_eval_episodes")}


def agent_setup(job: Dict[str, Any]) -> Tuple[Dataset, str, Dict[str, Any], List[float], List[float]]:
    """Training data (rewards scaled), action key, graph config fields and action bounds of one job."""
    from ..envs.supply_chain import SupplyChainEnv
    from ..rl.gnn import graph_fields

    env = SupplyChainEnv(job["scenario"])
    sc, S = env.scenario, env.n_stores
    data = Dataset.load(job["data_path"])
    arrays = dict(data.arrays)
    arrays["rewards"] = np.asarray(data["rewards"], dtype=np.float64) * job["reward_scale"]
    data = Dataset(arrays, dict(data.metadata))
    C = float(sc.production_capacity)
    # observation statistics per (role, feature): the stores share one set (the graph weights are shared
    # over nodes, so a feature must be scaled alike at every store), the factory (node S) its own
    groups = [0] * S + [1]
    if job["kind"] == "ohio":
        graph = graph_fields(env.n_nodes, env.graph_edges, edge_attr=env.edge_attr, production_node=S, norm_groups=groups)
        return data, "z", graph, [0.0] * (S + 2), [1.0] * (S + 1) + [C]
    graph = graph_fields(env.n_nodes, env.graph_edges, env.flow_edges, edge_attr=env.edge_attr, norm_groups=groups)
    # shipments within 1.25 x the data's largest + 1 (a [0, Cap_f] box leaves the data in a corner of the tanh range)
    ship_high = min(float(sc.factory_capacity), 1.25 * float(np.asarray(data["actions"])[:, :S].max()) + 1.0)
    return data, "actions", graph, [0.0] * (S + 1), [ship_high] * S + [C]


def build_agent(job: Dict[str, Any], algo: str):
    """The configured (untrained) agent of ``algo`` (``iql``, ``cql``, ``bc`` or ``calql``), its data and action key."""
    from ..rl.cql import add_mc_returns
    from ..rl.gnn import GraphBC, GraphCQL, GraphIQL

    data, key, graph, low, high = agent_setup(job)
    cfg = {**graph, "seed": job["seed"], "hidden": job["hidden"], "batch_size": job["batch_size"], "discount": job["discount"],
           "grad_clip": 10.0, "obs_norm": True, "device": job["device"]}
    obs_dim, da = int(np.asarray(data["observations"]).shape[1]), len(low)
    if algo == "iql":
        cfg.update(steps=job["iql_steps"], expectile=job["expectile"], temperature=job["temperature"], actor_lr=1e-3,
                   critic_lr=1e-3, value_lr=1e-3)
        return GraphIQL(obs_dim, da, low, high, cfg), data, key
    if algo == "bc":
        cfg.update(steps=job["bc_steps"], lr=1e-3)
        return GraphBC(obs_dim, da, low, high, cfg), data, key
    calql = algo == "calql"
    cfg.update(steps=job["calql_steps" if calql else "cql_steps"], cql_alpha=job["calql_alpha" if calql else "cql_alpha"],
               calql=calql, num_samples=job["cql_samples"], importance_sampling=False, init_alpha=job["alpha"],
               auto_alpha=False, actor_lr=1e-3, critic_lr=1e-3, bc_weight=job["calql_bc_weight"] if calql else 0.0)
    return GraphCQL(obs_dim, da, low, high, cfg), add_mc_returns(data, job["discount"]) if calql else data, key


def _decider(agent: Any) -> Callable:
    return lambda obs: agent.act(np.asarray(obs, dtype=np.float32), deterministic=True)


def _evaluations(job: Dict[str, Any], agent: Any) -> Dict[str, Any]:
    env = make_env(job["scenario"], job["kind"])
    out = {job["scenario"]: evaluate(env, _decider(agent), job["eval_seeds"])}
    if job.get("transfer"):
        tenv = make_env(job["transfer"], job["kind"])
        out[job["transfer"]] = evaluate(tenv, _decider(agent), job["eval_seeds"], observe_as(job["scenario"], tenv))
    return out


def train_offline(job: Dict[str, Any]) -> Dict[str, Any]:
    """Train one offline agent and evaluate it (and its transfer); runs in a worker process."""
    import torch

    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    agent, data, key = build_agent(job, job["algo"])
    agent.fit(data, action_key=key, show_progress=False, log_every=max(1, agent.config.steps // 10))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0  # CPU time: the cost on an idle core
    c1 = time.process_time()
    evaluations = _evaluations(job, agent)
    return {**{k: job[k] for k in ("dataset", "kind", "algo", "seed")}, "evaluations": evaluations, "train_seconds": seconds,
            "train_cpu_seconds": cpu, "eval_cpu_seconds": time.process_time() - c1, "steps": agent.config.steps,
            "history": agent.history}


def finetune(job: Dict[str, Any]) -> Dict[str, Any]:
    """Cal-QL pre-training, then SAC online with a deterministic evaluation every ``eval_every`` env steps."""
    import gymnasium as gym
    import torch

    from ..rl.gnn import GraphSAC

    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    pre, data, key = build_agent(job, "calql")
    pre.fit(data, action_key=key, show_progress=False, log_every=max(1, pre.config.steps // 10))
    sac = GraphSAC.from_agent(pre, {"offline_ratio": job["offline_ratio"], "update_after": 1, "start_steps": 0,
                                    "actor_lr": job["online_actor_lr"], "critic_lr": job["online_lr"], "auto_alpha": False,
                                    "critic_warmup": job["critic_warmup"], "buffer_size": max(job["online_steps"], 1)})
    env = make_env(job["scenario"], job["kind"])
    seeds = job["eval_seeds"][: job["finetune_eval_episodes"]]
    curve = [{"env_step": 0, **{k: v for k, v in evaluate(env, _decider(sac), seeds).items() if k.startswith("mean_")}}]

    def log(row: Dict[str, float]) -> None:
        ev = evaluate(env, _decider(sac), seeds)
        curve.append({"env_step": int(row["env_step"]), **{k: v for k, v in ev.items() if k.startswith("mean_")}})

    train_env = gym.wrappers.TransformReward(make_env(job["scenario"], job["kind"]), lambda r: r * job["reward_scale"])
    if job["online_steps"] > 0:
        sac.fit_online(train_env, job["online_steps"], offline=data, action_key=key, seed=job["seed"] + 50_000,
                       show_progress=False, log_every=job["eval_every"], logger=log)
    return {**{k: job[k] for k in ("dataset", "kind", "seed")}, "curve": curve, "evaluations": _evaluations(job, sac),
            "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}
