"""``ohio identify-reacher``: a reacher log mixing LQR cost weights (withheld); identify, cluster, relabel, train.

The data: the hierarchical behaviour policy of ``ohio reacher`` (lead-oracle z through the LQR) run
with a different low-level LQR per setting (:data:`SETTINGS`: the reference weights, stiffer
position weights, a heavier control cost), episodes interleaved (episode ``i`` under
``settings[i % S]``); the setting goes to ``truth.json`` for scoring only. Stages (cached, keyed on
what they read):

1. collect the mixed episodes;
2. identify every episode's cost weights through the differentiable Riccati recursion
   (:func:`~ohio_layers.inverse.identify.identify`, teacher forcing on the recorded states and
   actions, clipped actions dropped): the gains fix only ``Q / R``, so ``R`` is held at its starting
   value (the scale gauge) and the diagonal of ``Q`` is identified; the error is that of ``Q_i / R``.
   Episodes are clustered (:func:`~ohio_layers.inverse.mixed.cluster_identifications`);
3. relabel (OHIO numerical, as ``ohio reacher``: next-state matching through the linearised
   dynamics, LM from the analytic start) every episode with (a) its identified controller (cluster
   values), (b) its true controller, (c) the reference LQR for all (what ``ohio reacher`` would
   assume without identification); z error against the recorded z;
4. BC on each label set and on the recorded actions (flat replay), seeds; every OHIO agent is
   deployed through the LQR of each setting; normalised scores as ``ohio reacher``
   (0 random, 100 flat expert) and the paired difference identified - true per seed.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..config import setting
from ..data import Dataset
from .common import (ExperimentConfig, Stages, file_hash, format_table, identification_error_table, pyplot, run_jobs,
                     save_figure, save_results, start_run)

K = 5
SETTINGS: Dict[str, Dict[str, Any]] = {
    "original": {"Q": [10.0, 10.0, 1.0, 1.0], "R": 0.1},
    "stiff": {"Q": [40.0, 40.0, 1.0, 1.0], "R": 0.1},
    "effort": {"Q": [10.0, 10.0, 1.0, 1.0], "R": 0.5},
}
"""LQR cost weights per setting (``original`` is ``make_reacher_lqr``'s)."""
LABELS = ("identified", "true", "assumed")
LABEL_TEXT = {"identified": "OHIO, identified LQR per episode", "true": "OHIO, true LQR per episode",
              "assumed": "OHIO, reference LQR assumed", "flat": "BC, recorded actions (flat)"}
RATIOS = tuple(f"Q{i}/R" for i in range(4))


@dataclasses.dataclass
class ReacherIdentifyConfig(ExperimentConfig):
    """Settings of ``ohio identify-reacher``.

    Attributes:
        settings: the (withheld) LQR settings of the log, names of :data:`SETTINGS`, interleaved.
        episodes: mixed episodes.
        episode_steps: steps per episode (``None``: the env's 500).
        hierarchical_noise, expert_noise: the behaviour's z noise; the flat expert that defines score 100.
        start_q: starting diagonal of Q for the identification (R stays at the reference 0.1).
        tolerance: relative error of ``Q_i / R`` counted as "within".
        train_steps, hidden, batch_size, seeds: BC (squared-error loss) on every label set.
        eval_episodes, eval_seed: evaluation episodes per deployment.
    """

    out_dir: str = "runs/identify-reacher"
    settings: Tuple[str, ...] = setting(tuple(SETTINGS), choices=tuple(SETTINGS))
    episodes: int = setting(30, ge=1)
    episode_steps: Optional[int] = setting(None, ge=1)
    data_seed: int = 0
    hierarchical_noise: Tuple[float, ...] = setting((0.05, 0.05, 0.2, 0.2), ge=0.0)
    expert_noise: float = setting(0.1, ge=0.0)
    start_q: float = setting(3.0, gt=0.0)
    tolerance: float = setting(0.05, gt=0.0, lt=1.0)
    lm_iterations: int = setting(30, ge=1)
    train_steps: int = setting(5_000, ge=1)
    hidden: Tuple[int, ...] = setting((256, 256), ge=1)
    batch_size: int = setting(256, ge=1)
    seeds: Tuple[int, ...] = (0, 1, 2)
    eval_episodes: int = setting(10, ge=1)
    eval_seed: int = 10_000


QUICK: Dict[str, Any] = {"episodes": 6, "train_steps": 300, "seeds": [0], "eval_episodes": 2, "hidden": [64, 64]}
FULL: Dict[str, Any] = {"episodes": 60, "train_steps": 20_000, "seeds": list(range(10)), "eval_episodes": 30}
"""``--full``: twice the episodes, 4x the BC steps, 10 paired seeds and 30 evaluation episodes per deployment."""


def lqr(name: str) -> Any:
    from ..envs import make_reacher_lqr

    return make_reacher_lqr(**SETTINGS[name])


# ------------------------------------------------------------------------------ stages 1-2
def collect_mixed(cfg: ReacherIdentifyConfig, stages: Stages) -> Tuple[Path, Dict[str, str]]:
    """Stage 1: episode ``i`` under ``settings[i % S]`` (seed ``data_seed + i``), ids ``0..E-1``; the truth."""
    from ..envs import collect, heuristic_hierarchical_policy

    truth = {str(i): cfg.settings[i % len(cfg.settings)] for i in range(cfg.episodes)}

    def compute() -> Dataset:
        parts = []
        for i in range(cfg.episodes):
            policy = heuristic_hierarchical_policy(noise_std=cfg.hierarchical_noise, controller=lqr(truth[str(i)]))
            env = None if cfg.episode_steps is None else {"episode_steps": cfg.episode_steps}
            d = collect(policy, 1, cfg.data_seed + i, env_config=env, progress=False)
            d.arrays["episode_ids"] = np.full(len(d), i, np.int64)
            parts.append(d)
        meta = {k: v for k, v in parts[0].metadata.items() if k not in ("returns", "seed", "episodes", "policy")}
        return Dataset.concatenate(parts, {**meta, "episodes": cfg.episodes, "settings": "withheld (truth.json)"})

    path = stages.out / "data" / "mixed.npz"
    stages.cached(path, stages.key(("settings", "episodes", "episode_steps", "data_seed", "hierarchical_noise")), compute, Dataset.load,
                  lambda d, p: d.save(p))
    return path, truth


def identify_episodes(cfg: ReacherIdentifyConfig, stages: Stages, low_path: Path) -> List[Dict[str, Any]]:
    """Stage 2: per-episode identification summaries of diag(Q) (R held at the reference), in episode order."""
    def compute() -> Dict[str, Any]:
        from ..envs import make_reacher_lqr
        from ..envs.reacher.linearization import ReacherFDLinearization
        from ..inverse.identify import diagonal_unknown, identify
        from ..lowlevel import MemoizedLinearization

        low = Dataset.load(low_path)
        # the MuJoCo linearisation once per episode's windows (not traceable by forward-mode AD; Q does not change it)
        lin = MemoizedLinearization(ReacherFDLinearization(), max_entries=4)
        start = make_reacher_lqr(lin, Q=[cfg.start_q] * 4, R=SETTINGS["original"]["R"])
        t0 = time.perf_counter()
        found = identify(start, low, [diagonal_unknown("Q", 4)], k=K, states_key="states", actions_key="actions")
        seconds = (time.perf_counter() - t0) / len(found)
        return {"identifications": [{**r.summary(), "seconds": seconds} for r in found]}

    key = stages.key(("start_q",), inputs=[low_path], k=K)
    return stages.json(stages.out / "data" / "identified.json", key, compute)["identifications"]


def ratio_errors(found: Dict[str, Any], true_name: str) -> np.ndarray:
    """``(4,)`` relative errors of the identified ``Q_i / R`` (R at the reference) against the truth."""
    true = np.asarray(SETTINGS[true_name]["Q"]) / SETTINGS[true_name]["R"]
    est = np.array([found["estimate"][f"Q.{i}"] for i in range(4)]) / SETTINGS["original"]["R"]
    return np.abs(est / true - 1.0)


def identification_table(cfg: ReacherIdentifyConfig, found: List[Dict[str, Any]], truth: Dict[str, str]) -> Tuple[str, Dict[str, Any]]:
    """Per true setting: episodes with every ``Q_i / R`` within ``tolerance``, errors, flagged share, seconds."""
    return identification_error_table(cfg.settings, found, truth, ratio_errors, RATIOS, cfg.tolerance)


# ------------------------------------------------------------------------------ stage 3
def relabel_label_set(cfg: ReacherIdentifyConfig, stages: Stages, low_path: Path, label: str,
                      controllers: Dict[int, Any], describe: str) -> Tuple[Path, Dict[str, Any]]:
    """Relabel every episode with its own controller (``controllers[episode]``); the path and the z error."""
    def compute() -> Dict[str, Any]:
        from ..inverse import AnalyticSolver, InverseProblem, LevenbergMarquardt, ProblemInverter, relabel
        from ..inverse.mixed import PerEpisodeInverter
        from ..lowlevel import LinearizedDynamics

        low = Dataset.load(low_path)
        lm = LevenbergMarquardt(max_iter=cfg.lm_iterations)
        inv = PerEpisodeInverter({e: ProblemInverter(InverseProblem(c, LinearizedDynamics()), lm, AnalyticSolver())
                                  for e, c in controllers.items()}, describe_as=describe)
        high, _ = relabel(low, inv, K, path, chunk_size=4096, stride=K, extra_keys=("z_true",), progress=False)
        err = np.abs(high["z"] - high["z_true"]).max(1)
        return {"windows": int(len(high)), "z_error_median": float(np.median(err)), "z_error_p90": float(np.quantile(err, 0.9)),
                "residual_median": float(np.median(high["residual"]))}

    path = stages.out / "data" / f"ohio_{label}.npz"
    key = stages.key(("lm_iterations",), inputs=[low_path], label=label, controllers=describe)
    return path, stages.json(stages.out / "data" / f"ohio_{label}.json", key, compute, also=[path])


def label_controllers(found: List[Dict[str, Any]], truth: Dict[str, str], labels: np.ndarray,
                      clusters: List[Any]) -> Dict[str, Tuple[Dict[int, Any], str]]:
    """``{label set: ({episode: LQR}, description)}``: identified (cluster-pooled Q), true, reference assumed."""
    from ..envs import make_reacher_lqr

    R = SETTINGS["original"]["R"]
    out: Dict[str, Tuple[Dict[int, Any], str]] = {}
    ident, desc = {}, []
    for f, c in zip(found, labels):
        pooled = clusters[int(c)].estimate
        q = [pooled[f"Q.{i}"] if np.isfinite(pooled[f"Q.{i}"]) else f["estimate"][f"Q.{i}"] for i in range(4)]
        ident[int(f["group"])] = make_reacher_lqr(Q=q, R=R)
        desc.append(f"{f['group']}:{np.round(q, 12).tolist()}")
    out["identified"] = (ident, ";".join(desc))
    out["true"] = ({int(e): lqr(n) for e, n in truth.items()}, json.dumps(truth, sort_keys=True) + json.dumps(SETTINGS))
    out["assumed"] = ({int(e): lqr("original") for e in truth}, json.dumps(SETTINGS["original"]))
    return out


# ------------------------------------------------------------------------------ the experiment
def run(cfg: Optional[ReacherIdentifyConfig] = None) -> Dict[str, Any]:
    """Run (or resume) the experiment; prints the tables, returns the results."""
    from ..inverse.identify import Identification
    from ..inverse.mixed import cluster_identifications
    from .reacher import reference_returns, train_and_evaluate

    cfg = cfg or ReacherIdentifyConfig()
    out, stages = start_run(cfg)
    t0 = time.perf_counter()
    print(f"[1/4] {cfg.episodes} reacher episodes under LQR settings {cfg.settings} (interleaved, withheld)")
    low_path, truth = collect_mixed(cfg, stages)
    print("[2/4] identify diag(Q) / R per episode through the differentiable Riccati recursion")
    found = identify_episodes(cfg, stages, low_path)
    id_table, stats = identification_table(cfg, found, truth)
    labels, clusters = cluster_identifications([Identification.from_summary(f) for f in found],
                                               rtol=cfg.tolerance)
    cl_rows = []
    for c, cl in enumerate(clusters):
        members = [truth[str(m)] for m in cl.members]
        cl_rows.append([f"cluster {c}", str(len(cl.members)), ", ".join(f"{n} x{members.count(n)}" for n in cfg.settings if n in members)]
                       + [f"{cl.estimate[f'Q.{i}'] / SETTINGS['original']['R']:.4g}" for i in range(4)])
    cl_table = format_table(cl_rows, ["cluster", "episodes", "true settings"] + list(RATIOS))
    print(id_table)
    print(cl_table)
    print("[3/4] relabel every episode with its identified / true LQR, and with the reference LQR for all")
    relabelled = {}
    for label, (ctrls, desc) in label_controllers(found, truth, labels, clusters).items():
        path, st = relabel_label_set(cfg, stages, low_path, label, ctrls, desc)
        relabelled[label] = (path, st)
        print(f"      {label:10s}: z error vs recorded z median {st['z_error_median']:.1e}, p90 {st['z_error_p90']:.1e}")
    print(f"[4/4] BC on each label set ({cfg.train_steps} steps, {len(cfg.seeds)} seeds), deployed under every setting")
    ref = reference_returns(cfg, stages)  # random (0) and flat expert (100), on the evaluation seeds
    common = {"dataset": "mixed", "variant": "bc-mse", "train_steps": cfg.train_steps, "hidden": list(cfg.hidden),
              "batch_size": cfg.batch_size, "eval_episodes": cfg.eval_episodes, "eval_seed": cfg.eval_seed, "device": cfg.device}
    jobs = []
    for seed in cfg.seeds:
        jobs.append({**common, "name": f"flat_seed{seed}", "method": "flat", "seed": seed, "data_path": str(low_path),
                     "data_sha256": file_hash(low_path)})
        for label, (path, _) in relabelled.items():
            jobs.append({**common, "name": f"ohio_{label}_seed{seed}", "method": f"ohio_{label}", "seed": seed,
                         "data_path": str(path), "data_sha256": file_hash(path),
                         "deploy": {n: SETTINGS[n] for n in cfg.settings}})
    runs = run_jobs(train_and_evaluate, jobs, out / "runs", workers=cfg.job_workers, desc="train+eval", engine=cfg.engine)
    scores, score_table = score(cfg, runs, ref)
    head = (f"normalised score = 100 (R - R_random) / (R_expert - R_random): R_random {ref['random']['mean']:.1f}, "
            f"R_expert {ref['expert']['mean']:.1f}; {len(cfg.seeds)} seeds x {cfg.eval_episodes} episodes per deployment, "
            f"BC {cfg.train_steps} steps; paired = same seed, same batches, same evaluation episodes")
    print(head)
    print(score_table)
    results = {"config": cfg.to_dict(), "truth": truth, "identifications": found, "stats": stats,
               "clusters": [dataclasses.asdict(c) for c in clusters], "cluster_labels": labels.tolist(),
               "relabel": {k: v[1] for k, v in relabelled.items()}, "scores": scores,
               "table": id_table + "\n" + cl_table + "\n" + head + "\n" + score_table, "wall_seconds": time.perf_counter() - t0}
    save_results(out, results, plot, "identification.png")
    return results


def score(cfg: ReacherIdentifyConfig, runs: List[Dict[str, Any]], ref: Dict[str, Any]) -> Tuple[Dict[str, Any], str]:
    """Per deployment: mean +- standard error over seeds of each label set, flat, and identified - true paired by seed."""
    r0, r1 = ref["random"]["mean"], ref["expert"]["mean"]
    norm = lambda r: 100.0 * (r - r0) / (r1 - r0)  # noqa: E731

    def per_seed(method: str, deploy: Optional[str]) -> np.ndarray:
        mine = sorted((r for r in runs if r["method"] == method), key=lambda r: r["seed"])
        return np.array([norm(r["evals"][deploy]["mean_return"] if deploy else r["mean_return"]) for r in mine])

    def fmt(v: np.ndarray, signed: bool = False) -> str:
        se = v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else float("nan")
        return f"{v.mean():{'+' if signed else ''}.1f} +- {se:.1f}"

    scores: Dict[str, Any] = {"flat": per_seed("flat", None).tolist()}
    rows = []
    for name in cfg.settings:
        row: List[Any] = [name]
        for label in LABELS:
            v = per_seed(f"ohio_{label}", name)
            scores[f"ohio_{label}/{name}"] = v.tolist()
            row.append(fmt(v))
        gap = np.array(scores[f"ohio_identified/{name}"]) - np.array(scores[f"ohio_true/{name}"])
        scores[f"gap/{name}"] = gap.tolist()
        rows.append(row + [fmt(np.array(scores["flat"])), fmt(gap, True), " ".join(f"{g:+.1f}" for g in gap)])
    header = ["deployed under"] + [LABEL_TEXT[l] for l in LABELS] + [LABEL_TEXT["flat"], "identified - true (paired)", "per seed"]
    return scores, format_table(rows, header)


def plot(results: Dict[str, Any], path: Path) -> None:
    """Relative error of every identified Q_i / R per episode (log scale), coloured by the withheld setting."""
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.2), sharey=True)
    colors = {"original": "#888888", "stiff": "#4c72b0", "effort": "#c44e52"}
    for i, ax in enumerate(axes):
        for f in results["identifications"]:
            name = results["truth"][str(f["group"])]
            ax.scatter(int(f["group"]), max(ratio_errors(f, name)[i], 1e-16), s=10, color=colors.get(name, "k"), label=name,
                       marker="o" if all(f["identifiable"].values()) else "x")
        ax.axhline(results["config"]["tolerance"], ls="--", color="k", lw=0.7)
        ax.set_yscale("log")
        ax.set_title(RATIOS[i])
        ax.set_xlabel("episode")
    axes[0].set_ylabel("|identified / true - 1|")
    handles, names = axes[0].get_legend_handles_labels()
    uniq = dict(zip(names, handles))
    axes[-1].legend(uniq.values(), uniq.keys(), fontsize=7)
    fig.suptitle("reacher: per-episode LQR weight identification, settings withheld (x = flagged)")
    save_figure(fig, path)
