"""``ohio reacher``: OHIO on the goal-reaching reacher with an LQR low level.

Pipeline (every stage is cached under ``out_dir`` and resumes after an interruption):

1. reference returns of the random policy (score 0) and the flat expert (score 100);
2. behaviour datasets: the flat expert (IK + PD, noisy) and a hierarchical policy (heuristic z
   through the LQR, so the true z is known);
3. relabelling of every k-step window: OHIO-analytic (closed form, ignores the clip),
   OHIO-numerical (Levenberg-Marquardt through the clipped loop, analytic start) and the
   observed-next-state baseline (z = s_{t+k}, positions relative to s_t);
4. one offline learner (BC by default, or IQL) on each relabelled dataset (deployed through the
   LQR) and on the raw low-level actions (flat), several seeds;
5. evaluation on seeded episodes, a table of normalised scores, ``results.json`` and a plot.
"""
from __future__ import annotations

import dataclasses
import math
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..config import setting
from ..data import Dataset
from .common import (AMORTIZED, AMORTIZED_LABEL, ExperimentConfig, Stages, actor_bounds, amortized_methods,
                     estimate_wall_time, file_hash, format_table, pyplot, run_jobs, save_figure, save_results, start_run,
                     wall_time_note)
from .shards import collect_episodes, evaluate_jobs

K = 5
METHODS = ("flat", "ohio_analytic", "ohio_numerical", "next_state")
METHOD_LABEL = {"flat": "flat (low-level actions)", "ohio_analytic": "OHIO analytic",
                "ohio_numerical": "OHIO numerical", "next_state": "observed next state as z", **AMORTIZED_LABEL}
DATASETS = ("expert", "hierarchical")
ALGORITHMS = ("bc", "iql")


@dataclasses.dataclass
class ReacherExperimentConfig(ExperimentConfig):
    """Settings of ``ohio reacher`` (defaults: about 15 min on 2 cores).

    Attributes:
        out_dir: where datasets, per-run results, ``results.json`` and plots go.
        datasets: behaviour datasets to use (``"expert"``, ``"hierarchical"``).
        methods: subset of ``METHODS``.
        episodes: episodes per behaviour dataset (500 steps each).
        expert_noise: action-noise std of the flat expert that collects data (and defines 100).
        hierarchical_noise: z-noise std of the hierarchical behaviour policy, per z dimension.
        seeds: training seeds per (dataset, method).
        algorithm: offline learner for every method, ``"bc"`` or ``"iql"`` (same for all four
            methods so that only the labels differ).
        bc_losses: with ``algorithm="bc"``, every method is trained with each of these BC losses
            (``"nll"``: likelihood, ``"mse"``: squared error of the deterministic action) and the
            table shows each, plus the best per method: which one suits a method depends on its
            labels (noisy z vs saturated torques), so one fixed choice would favour some rows.
        train_steps, hidden, batch_size: learner settings; expectile, temperature: IQL only.
        eval_episodes: evaluation episodes per trained agent (seeds ``eval_seed + i``).
        lm_iterations: Levenberg-Marquardt iterations of OHIO-numerical.
        inverse: add amortised-inverse methods: ``"amortized"`` (network alone), ``"amortized+fallback"``
            (windows with residual > 1e-6 re-solved by LM), or both (list or comma-separated).
        amortized_epochs, amortized_windows: training of the inverse network (epochs, at most this
            many stride-1 windows of the behaviour data; no labels are used).
        workers: parallel training processes (one torch thread each).
    """

    out_dir: str = "runs/reacher"
    datasets: Tuple[str, ...] = setting(DATASETS, choices=DATASETS)
    methods: Tuple[str, ...] = setting(METHODS, choices=METHODS + tuple(AMORTIZED.values()))
    episodes: int = setting(300, ge=1)
    expert_noise: float = setting(0.1, ge=0.0)
    hierarchical_noise: Tuple[float, ...] = setting((0.05, 0.05, 0.2, 0.2), ge=0.0)
    seeds: Tuple[int, ...] = (0, 1)
    algorithm: str = setting("bc", choices=ALGORITHMS)
    bc_losses: Tuple[str, ...] = setting(("nll", "mse"), choices=("nll", "mse"))
    train_steps: int = setting(10_000, ge=1)
    hidden: Tuple[int, ...] = setting((256, 256), ge=1)
    batch_size: int = setting(256, ge=1)
    expectile: float = setting(0.7, gt=0.0, lt=1.0)
    temperature: float = setting(1.0, ge=0.0)
    eval_episodes: int = setting(30, ge=1)
    eval_seed: int = 10_000
    data_seed: int = 1_000
    lm_iterations: int = setting(30, ge=1)
    inverse: Tuple[str, ...] = setting((), allow_empty=True)
    amortized_epochs: int = setting(100, ge=1)
    amortized_windows: int = setting(40_000, ge=1)

    def check(self) -> None:
        super().check()
        if len(self.hierarchical_noise) not in (1, 4):
            raise ValueError(f"hierarchical_noise must hold 1 or 4 values (one per z dimension), got {self.hierarchical_noise}")
        self.inverse, self.methods = amortized_methods(self.inverse, self.methods)

    @property
    def variants(self) -> Tuple[str, ...]:
        """Learner variants every method is trained with (e.g. ``("bc-nll", "bc-mse")``)."""
        return tuple(f"bc-{l}" for l in self.bc_losses) if self.algorithm == "bc" else ("iql",)


FULL: Dict[str, Any] = {"train_steps": 1_000_000, "batch_size": 256, "hidden": [256, 256], "seeds": [0, 1, 2],
                        "eval_episodes": 30}
"""``ohio reacher --full``: the paper's learner sizes (reference section 4.2: 10^6 BC steps, batch 256, 2x256 MLPs,
30 test episodes); the paper's dataset size is unknown, so ``episodes`` keeps its default."""

COSTS: Dict[str, float] = {"bc_step": 3e-3, "iql_step": 10e-3, "eval_episode": 0.3, "collect_episode": 0.15,
                           "relabel_window": 5e-4}
"""Conservative CPU seconds per unit, one torch thread. From the measured defaults (README: 32 BC jobs of 10k steps and
30 evaluation episodes, data and relabelling, 8 min 58 s on 2 idle cores, i.e. <= 34 s per job: BC <= 3 ms/step);
IQL from the IQL run (16 jobs, 31 min on a loaded machine: ~7 ms/step idle); evaluation and collection from the
reference's 0.12 s per 1000-step hierarchical episode (500-step episodes here; x2.5 for the torch agent and the gym
wrapper); LM relabelling from benchmarks/results/amortized.json (4400 windows/s, halved). The defaults come to
14 min on 2 workers, 1.5x the measured 9 min."""
COST_SOURCE = "ohio_layers.experiments.reacher.COSTS: measured defaults on 2 idle cores, README"


def estimate(cfg: ReacherExperimentConfig, workers: int) -> List[Tuple[str, float]]:
    """Estimated wall seconds of each phase of a run from scratch on ``workers`` processes (see ``COSTS``)."""
    windows = cfg.episodes * 500 // K
    relabels = sum(1 for m in cfg.methods if m != "flat")
    data = [{"collect_episode": cfg.episodes, "relabel_window": windows * relabels} for _ in cfg.datasets]
    data.append({"eval_episode": 3 * cfg.eval_episodes})  # reference returns
    step = "bc_step" if cfg.algorithm == "bc" else "iql_step"
    jobs = [{step: cfg.train_steps, "eval_episode": cfg.eval_episodes}
            for _ in range(len(cfg.datasets) * len(cfg.methods) * len(cfg.variants) * len(cfg.seeds))]
    return [("data + relabel", estimate_wall_time(data, COSTS, 1)),
            ("train + eval", estimate_wall_time(jobs, COSTS, workers))]


# ------------------------------------------------------------------------------ stages
def reference_returns(cfg: ReacherExperimentConfig, stages: Stages) -> Dict[str, Any]:
    """Returns on the evaluation seeds of the random policy (score 0), the flat expert (score 100)
    and the hierarchical behaviour policy (cached; one job per policy, ``cfg.engine``)."""
    path = stages.out / "reference.json"
    key = stages.key(("eval_episodes", "eval_seed", "expert_noise", "hierarchical_noise"))

    def compute() -> Dict[str, Any]:
        jobs = [{"name": name, "eval_episodes": cfg.eval_episodes, "eval_seed": cfg.eval_seed,
                 "expert_noise": cfg.expert_noise, "hierarchical_noise": list(cfg.hierarchical_noise)}
                for name in ("random",) + DATASETS]
        return evaluate_jobs(_reference_job, jobs, path, stage_key=key, workers=cfg.job_workers, engine=cfg.engine,
                             desc="reference")

    return stages.json(path, key, compute)


def _reference_job(job: Dict[str, Any]) -> Dict[str, Any]:
    """One policy's returns on the evaluation seeds (a job of :func:`reference_returns`)."""
    from ..envs import RandomPolicy, evaluate_stats

    policy = RandomPolicy() if job["name"] == "random" else _policy(job["name"], job["expert_noise"],
                                                                    job["hierarchical_noise"])
    stats = evaluate_stats(policy, job["eval_episodes"], job["eval_seed"])
    return {"mean": float(stats["returns"].mean()), "std": float(stats["returns"].std()),
            "returns": stats["returns"].tolist(), "reached": float(stats["reached"].mean())}


def behaviour_policy(name: str, cfg: ReacherExperimentConfig):
    return _policy(name, cfg.expert_noise, cfg.hierarchical_noise)


def _policy(name: str, expert_noise: float, hierarchical_noise: Any):
    from ..envs import ExpertPolicy, heuristic_hierarchical_policy

    if name == "expert":
        return ExpertPolicy(expert_noise)
    return heuristic_hierarchical_policy(noise_std=tuple(hierarchical_noise))


def collect_dataset(name: str, cfg: ReacherExperimentConfig, stages: Stages) -> Path:
    """The behaviour dataset ``name`` (cached; episode-range jobs on ``cfg.engine``); returns its path."""
    path = stages.out / "data" / f"{name}.npz"
    key = stages.key(("episodes", "data_seed", "expert_noise" if name == "expert" else "hierarchical_noise"),
                     dataset=name)

    def compute() -> Dataset:
        job = {"dataset": name, "seed": cfg.data_seed + 100_000 * DATASETS.index(name),
               "expert_noise": cfg.expert_noise, "hierarchical_noise": list(cfg.hierarchical_noise)}
        return collect_episodes(_collect_range, job, cfg.episodes, path, stage_key=key, workers=cfg.job_workers,
                                engine=cfg.engine, per_episode=("returns",), desc=f"collect {name}")

    stages.cached(path, key, compute, Dataset.load)
    return path


def _collect_range(job: Dict[str, Any]) -> Dataset:
    """Episodes ``first .. first + count - 1`` of a behaviour dataset (a job of :func:`collect_dataset`):
    episode ``i`` is seeded ``seed + i`` whichever call collects it."""
    from ..envs import collect

    policy = _policy(job["dataset"], job["expert_noise"], job["hierarchical_noise"])
    return collect(policy, job["count"], job["seed"] + job["first"], progress=False)


def relabelled_dataset(name: str, method: str, low_path: Path, cfg: ReacherExperimentConfig,
                       stages: Stages) -> Tuple[Path, Dict[str, Any]]:
    """High-level dataset of ``method`` for the low-level dataset at ``low_path`` (cached): its path
    and the relabelling's statistics."""
    path = stages.out / "data" / f"{name}_{method}.npz"
    stats_path = stages.out / "data" / f"{name}_{method}.json"
    fields = {"ohio_numerical": ("lm_iterations",), "ohio_amortized": AMORTIZED_FIELDS,
              "ohio_amortized_fallback": AMORTIZED_FIELDS + ("lm_iterations",)}.get(method, ())
    key = stages.key(fields, inputs=[low_path], method=method, k=K)
    return path, stages.json(stats_path, key, lambda: _relabel(name, method, low_path, cfg, stages, path), also=[path])


AMORTIZED_FIELDS = ("amortized_epochs", "amortized_windows", "data_seed")
"""The config fields the inverse network's training reads."""


def _relabel(name: str, method: str, low_path: Path, cfg: ReacherExperimentConfig, stages: Stages,
             path: Path) -> Dict[str, Any]:
    """Relabel ``low`` with ``method`` into ``path``; returns the statistics of the labels."""
    from ..envs import make_reacher_lqr
    from ..inverse import AnalyticSolver, BestStart, InverseProblem, LevenbergMarquardt, ProblemInverter, relabel
    from ..inverse.relabel import high_level_rows
    from ..data import window_starts
    from ..lowlevel import LinearizedDynamics

    low = Dataset.load(low_path)
    extra = ("z_true",) if "z_true" in low else ()
    stride = K
    controller = make_reacher_lqr()
    problem = InverseProblem(controller, LinearizedDynamics())
    t0 = time.perf_counter()
    train_seconds = 0.0
    if method.startswith("ohio_amortized"):
        inv, train_seconds = amortized_inverse(name, low_path, problem, cfg, stages)
        t0 = time.perf_counter()  # relabel time without the (reported separately) training
        if method == "ohio_amortized_fallback":
            inv.tolerance, inv.fallback = 1e-6, BestStart(AnalyticSolver(), LevenbergMarquardt(max_iter=cfg.lm_iterations))
            inverter = ProblemInverter(problem, inv)
        else:
            inverter = inv.inverter(compute_residual=False)
        high, _ = relabel(low, inverter, K, path, chunk_size=4096, stride=stride, extra_keys=extra)
    elif method == "next_state":
        starts = window_starts(low, K, stride)
        cols = high_level_rows(low, starts, K, extra)
        z = cols["next_states"] - cols["states"] * np.array([1.0, 1.0, 0.0, 0.0])
        z = np.clip(z, controller.z_low.numpy(), controller.z_high.numpy())
        import torch

        from ..inverse.convergence import assess

        batch = problem.batch_from_dataset(low, starts)
        residual, converged = assess(problem, batch, torch.as_tensor(z))  # the one meaning of converged
        cols.update(z=z, residual=residual.numpy(), converged=converged.numpy(), iterations=np.zeros(len(z), np.int64))
        high = Dataset(cols, {"k": K, "stride": stride, "inverter": "observed next state"})
        high.save(path)
    else:
        solver = AnalyticSolver() if method == "ohio_analytic" else LevenbergMarquardt(max_iter=cfg.lm_iterations)
        init = None if method == "ohio_analytic" else AnalyticSolver()
        high, _ = relabel(low, ProblemInverter(problem, solver, init), K, path, chunk_size=4096, stride=stride,
                          extra_keys=extra, engine="ray" if cfg.engine == "ray" else "serial", workers=cfg.workers)
    seconds = time.perf_counter() - t0
    residual = high["residual"]
    if np.isnan(residual).all():  # network alone: residual not computed while relabelling; checked here, untimed
        import torch

        with torch.no_grad():
            batch = problem.batch_from_dataset(low, window_starts(low, K, stride))
            residual = problem.residual(torch.as_tensor(high["z"]), batch).norm(dim=-1).numpy()
    stats: Dict[str, Any] = {"windows": int(len(high)), "seconds": seconds, "train_seconds": train_seconds,
                             "residual_median": float(np.median(residual)), "residual_p90": float(np.quantile(residual, 0.9)),
                             "reproduced_1e-6": float((residual <= 1e-6).mean()), "converged": float(high["converged"].mean())}
    if "z_true" in high:
        err = np.abs(high["z"] - high["z_true"]).max(1)
        stats.update(z_error_median=float(np.median(err)), z_error_p90=float(np.quantile(err, 0.9)))
    return stats


def amortized_inverse(name: str, low_path: Path, problem: Any, cfg: ReacherExperimentConfig,
                      stages: Stages) -> Tuple[Any, float]:
    """The inverse network for dataset ``name``, trained once without labels (cached); its training seconds."""
    from ..data import window_starts
    from ..inverse import AmortizedInverse

    path = stages.out / "data" / f"{name}_amortized_inverse.pt"

    def train() -> Dict[str, Any]:
        low = Dataset.load(low_path)
        t0 = time.perf_counter()
        starts = window_starts(low, K, 1)
        starts = np.random.default_rng(cfg.data_seed).permutation(starts)[: cfg.amortized_windows]
        inv = AmortizedInverse(problem, hidden=(256, 256), drop_dims=(0,), delta=0.01)
        inv.fit(problem.batch_from_dataset(low, np.sort(starts)), epochs=cfg.amortized_epochs, seed=cfg.data_seed)
        seconds = time.perf_counter() - t0
        inv.save(path)
        return {"train_seconds": seconds, "windows": int(starts.size)}

    meta = stages.json(stages.out / "data" / f"{name}_amortized_inverse.json",
                       stages.key(AMORTIZED_FIELDS, inputs=[low_path]), train, also=[path])
    return AmortizedInverse.load(path, problem), float(meta["train_seconds"])


def z_bounds(z: np.ndarray, z_bound: float) -> Tuple[List[float], List[float]]:
    """Actor range for reacher z labels ``(N, 4)``, within the controller's +-z_bound."""
    return actor_bounds(z, z_bound, floor=1e-3)


# ------------------------------------------------------------------------------ one training run
def train_and_evaluate(job: Dict[str, Any]) -> Dict[str, Any]:
    """Train the learner for one (dataset, method, seed) and evaluate it; runs in a worker process."""
    import torch

    from ..envs import make_env, make_reacher_lqr
    from ..rl import BC, IQL, HighLevelActionWrapper

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = Dataset.load(job["data_path"])
    flat = job["method"] == "flat"
    action_key = "actions" if flat else "z"
    config = {"seed": job["seed"], "steps": job["train_steps"], "hidden": job["hidden"], "batch_size": job["batch_size"],
              "obs_norm": True, "discount": 0.99 if flat else 0.99 ** K, "mixed_precision": job.get("mixed_precision"),
              "device": job["device"]}
    learner = BC
    if job["variant"].startswith("bc-"):
        config["loss"] = job["variant"][3:]
    if job["variant"] == "iql":
        # a state-dependent std and a faster actor were measured better on the noisy z labels
        config.update(expectile=job["expectile"], temperature=job["temperature"], state_dependent_std=True, actor_lr=1e-3)
        learner = IQL
    if flat:
        agent = learner.from_dataset(data, config, action_low=-1.0, action_high=1.0)
    else:
        low, high = z_bounds(data["z"], 8 * math.pi)
        agent = learner.from_dataset(data, config, action_key="z", action_low=low, action_high=high)
    with warnings.catch_warnings():
        # z_bounds clamps the extreme labels on purpose (see its docstring)
        warnings.filterwarnings("ignore", message=r"dataset\['z'\] lies outside")
        agent.fit(data, action_key=action_key, show_progress=False)
    train_seconds = time.perf_counter() - t0

    # job["deploy"] (optional): {name: LQR weights {"Q", "R"}} to deploy the high level through each; default one LQR
    evals: Dict[str, Any] = {}
    for deploy, weights in (job.get("deploy") or {"default": {}}).items():
        env = make_env()
        if not flat:
            env = HighLevelActionWrapper(env, make_reacher_lqr(**weights), get_state=lambda e: e.unwrapped.controller_state())
        returns = []
        for i in range(job["eval_episodes"]):
            obs, _ = env.reset(seed=job["eval_seed"] + i)
            total, done = 0.0, False
            while not done:
                obs, r, term, trunc, _ = env.step(agent.act(obs))
                total += float(r)
                done = term or trunc
            returns.append(total)
        env.close()
        evals[deploy] = {"returns": returns, "mean_return": float(np.mean(returns))}
    returns = next(iter(evals.values()))["returns"]
    return {"dataset": job["dataset"], "method": job["method"], "variant": job["variant"], "seed": job["seed"], "returns": returns,
            "mean_return": float(np.mean(returns)), "evals": evals, "train_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - t0 - train_seconds,
            "final_losses": {k: v for k, v in agent.history[-1].items()} if agent.history else {},
            "history": agent.history}


# ------------------------------------------------------------------------------ the experiment
def run(cfg: Optional[ReacherExperimentConfig] = None) -> Dict[str, Any]:
    """Run (or resume) the whole experiment; prints the table and returns the results dict."""
    cfg = cfg or ReacherExperimentConfig()
    out, stages = start_run(cfg)
    t0 = time.perf_counter()
    print(wall_time_note(estimate(cfg, cfg.job_workers), cfg.job_workers, COST_SOURCE))
    print(f"[1/5] reference returns on {cfg.eval_episodes} evaluation episodes")
    ref = reference_returns(cfg, stages)
    r_rand, r_exp = ref["random"]["mean"], ref["expert"]["mean"]

    jobs: List[Dict[str, Any]] = []
    relabel_stats: Dict[str, Dict[str, Any]] = {}
    for name in cfg.datasets:
        print(f"[2/5] behaviour data: {name} ({cfg.episodes} episodes)")
        low_path = collect_dataset(name, cfg, stages)
        for method in cfg.methods:
            if method == "flat":
                data_path = low_path
            else:
                print(f"[3/5] relabel {name} with {method}")
                data_path, relabel_stats[f"{name}/{method}"] = relabelled_dataset(name, method, low_path, cfg, stages)
            for variant, seed in ((v, s) for v in cfg.variants for s in cfg.seeds):
                jobs.append({"name": f"{name}_{method}_{variant}_seed{seed}", "dataset": name, "method": method,
                             "seed": seed, "variant": variant,
                             "data_path": str(data_path), "data_sha256": file_hash(data_path), "train_steps": cfg.train_steps, "hidden": list(cfg.hidden),
                             "batch_size": cfg.batch_size, "expectile": cfg.expectile, "temperature": cfg.temperature,
                             "eval_episodes": cfg.eval_episodes, "eval_seed": cfg.eval_seed, "device": cfg.device})
    print(f"[4/5] train and evaluate {len(jobs)} agents ({cfg.job_workers} processes)")
    runs = run_jobs(train_and_evaluate, jobs, out / "runs", workers=cfg.job_workers, desc="train+eval",
                    engine=cfg.engine)

    print("[5/5] results")
    table, summary = [], {}
    variants = cfg.variants
    for name in cfg.datasets:
        r_beh = ref[name]["mean"]
        for method in cfg.methods:
            key = f"{name}/{method}"
            per_variant = {}
            for v in variants:
                mine = [r for r in runs if r["dataset"] == name and r["method"] == method and r["variant"] == v]
                scores = [100 * (r["mean_return"] - r_rand) / (r_exp - r_rand) for r in mine]
                of_beh = [100 * (r["mean_return"] - r_rand) / (r_beh - r_rand) for r in mine]
                per_variant[v] = {"scores": scores, "mean": float(np.mean(scores)), "std": float(np.std(scores)),
                                  "of_behaviour": float(np.mean(of_beh)), "returns": [r["mean_return"] for r in mine]}
            best = max(variants, key=lambda v: per_variant[v]["mean"])
            st = relabel_stats.get(key, {})
            summary[key] = {"variants": per_variant, "best": best, "mean": per_variant[best]["mean"],
                            "std": per_variant[best]["std"], "scores": per_variant[best]["scores"],
                            "of_behaviour": per_variant[best]["of_behaviour"], "relabel": st}
            table.append([name, METHOD_LABEL[method]] + [f"{per_variant[v]['mean']:.1f} +- {per_variant[v]['std']:.1f}" for v in variants]
                         + [per_variant[best]["mean"], per_variant[best]["of_behaviour"],
                            f"{st['residual_median']:.1e}" if st else "-",
                            f"{st['z_error_median']:.1e}" if "z_error_median" in st else "-",
                            f"{st['seconds']:.1f}" + (f" (+{st['train_seconds']:.0f} train)" if st.get("train_seconds") else "")
                            if st else "-"])
    text = format_table(table, ["dataset", "method"] + [f"score {v}" for v in variants]
                        + ["best", "% of behaviour", "relabel residual", "z error vs true", "relabel s"])
    header = (f"normalised score = 100 (R - R_random) / (R_expert - R_random): R_random {r_rand:.1f}, R_expert {r_exp:.1f} "
              f"(flat expert sigma {cfg.expert_noise}); '% of behaviour' uses the dataset's own behaviour policy instead "
              f"(" + ", ".join(f"{n} {ref[n]['mean']:.1f}" for n in cfg.datasets) + f"); {len(cfg.seeds)} seeds x "
              f"{cfg.eval_episodes} episodes; relabel residual and z error are medians")
    print(header)
    print(text)
    results = {"config": cfg.to_dict(), "reference": {k: {kk: v[kk] for kk in ("mean", "std", "reached")} for k, v in ref.items()},
               "summary": summary, "table": text, "header": header, "wall_seconds": time.perf_counter() - t0}
    save_results(out, results, plot, "scores.png")
    return results


def plot(results: Dict[str, Any], path: Path) -> None:
    """Bar chart of normalised scores per dataset and method, one dot per seed."""
    plt = pyplot()
    if plt is None:
        return
    cfg = results["config"]
    fig, axes = plt.subplots(1, len(cfg["datasets"]), figsize=(5.5 * len(cfg["datasets"]), 4.2), squeeze=False)
    for ax, name in zip(axes[0], cfg["datasets"]):
        methods = cfg["methods"]
        means = [results["summary"][f"{name}/{m}"]["mean"] for m in methods]
        ax.bar(range(len(methods)), means, color=["#888888", "#4c72b0", "#55a868", "#c44e52", "#8172b2", "#ccb974"][: len(methods)], alpha=0.8)
        for i, m in enumerate(methods):
            s = results["summary"][f"{name}/{m}"]["scores"]
            ax.scatter([i] * len(s), s, color="black", s=14, zorder=3)
        ax.axhline(100, ls="--", color="k", lw=0.8)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels([METHOD_LABEL[m].replace(" (", "\n(").replace(" as ", "\nas ") for m in methods], fontsize=8)
        ax.set_title(f"{name} data (behaviour return {results['reference'][name]['mean']:.0f})")
        ax.set_ylabel("normalised score (0 random, 100 expert)")
    fig.suptitle(f"OHIO on the goal-reaching reacher (LQR low level): best {cfg['algorithm'].upper()} variant per method, "
                 f"dots = seeds")
    save_figure(fig, path)
