"""``ohio study model-error``: how the reacher's inverses degrade when the dynamics model is wrong.

The hierarchical reacher data (whose true z is recorded) is relabelled through the exact LQR
controller (the designer knows it: gains from the true linearisation, as when the data was
recorded) but a *degraded dynamics model* in the rollout the inverse matches ``s_{t+k}`` with:

* ``b<s>``: ``x' = A x + s B u`` (input gain off by ``s``; ``b1`` is the true model);
* ``a<d>``: ``x' = A' x + B u`` with ``A' = A + d (A - I) * N`` (the drift terms off by a relative
  ``d`` times a fixed seeded standard-normal matrix ``N``);
* ``learned<f>``: :class:`~ohio_layers.lowlevel.LearnedDynamics` fit from scratch on the first
  fraction ``f`` of the low-level transitions (no FD prior, no simulator).

Each level is inverted by the analytic inverse (the unclipped closed loop's least squares; for the
nonlinear learned model this is one Gauss-Newton step from z = 0), Levenberg-Marquardt through the
clipped loop (analytic start) and an :class:`~ohio_layers.inverse.AmortizedInverse` trained through
the same degraded model (network alone). Reported per (level, inverse): z error against the true z
(max over dimensions), split by whether the window's recorded actions hit the clip; the replay
error (``||s_{t+k}||`` reproduced by the *true* model at that z); and, for ``downstream`` levels, the
normalised score of a short IQL run on the relabelled data (plus the true z as an anchor).
Every stage is cached under ``out_dir`` (see :class:`~ohio_layers.experiments.common.Stages`).
"""
from __future__ import annotations

import dataclasses
import io
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import setting
from ..data import Dataset
from ..data.io import atomic_write_bytes
from ..lowlevel import LinearizedDynamics
from .common import (ExperimentConfig, Stages, estimate_wall_time, file_hash, format_table, pyplot, run_jobs, save_figure,
                     save_results, start_run, wall_time_note)
from .reacher import COSTS as REACHER_COSTS, K, collect_dataset, reference_returns, train_and_evaluate

INVERSES = ("analytic", "lm", "amortized")
INVERSE_LABEL = {"analytic": "analytic", "lm": "LM", "amortized": "amortised (network)", "true_z": "true z (anchor)"}
FAMILIES = {"b": "B scale", "a": "A perturbation", "learned": "learned model, data fraction"}
CLIP_EPS = 1e-9  # a recorded action within this of the +-1 bound counts as clipped


@dataclasses.dataclass
class ModelErrorConfig(ExperimentConfig):
    """Settings of ``ohio study model-error`` (defaults: see the printed estimate; measured in the README).

    Attributes:
        episodes, hierarchical_noise, expert_noise, data_seed: the reacher's behaviour data (the
            hierarchical dataset, cached like ``ohio reacher``'s) and the expert defining score 100.
        b_scales: input-gain factors of the degraded models (1 = the true model).
        a_perturbations: relative perturbations ``d`` of ``A - I``; a_seed: seed of ``N``.
        learned_fractions: fractions of the low-level transitions the learned models are fit on.
        learned_hidden, learned_epochs: the learned model's MLP and training epochs (multi-step, k).
        inverses: subset of ``INVERSES``; lm_iterations: LM iterations.
        amortized_hidden, amortized_epochs, amortized_batch_size: the inverse network, trained on every window
            of the data (small batches: on a few thousand windows the library's 4096 leaves it undertrained).
        downstream: level ids (``b0.7``, ``a0.5``, ``learned0.01``, ...) whose labels train an IQL agent
            per inverse and seed (the true z is always added as an anchor); empty: no training.
        train_steps, hidden, batch_size, expectile, temperature, seeds, eval_episodes, eval_seed: IQL
            and its evaluation (as ``ohio reacher --set algorithm=iql``).
    """

    out_dir: str = "runs/model-error"
    episodes: int = setting(60, ge=1)
    hierarchical_noise: Tuple[float, ...] = setting((0.05, 0.05, 0.2, 0.2), ge=0.0)
    expert_noise: float = setting(0.1, ge=0.0)
    data_seed: int = 1_000
    b_scales: Tuple[float, ...] = setting((0.7, 0.85, 1.0, 1.15, 1.3), gt=0.0)
    a_perturbations: Tuple[float, ...] = setting((0.03, 0.1, 0.3), ge=0.0, allow_empty=True)
    a_seed: int = 0
    learned_fractions: Tuple[float, ...] = setting((0.01, 0.03, 0.1, 0.3, 1.0), gt=0.0, le=1.0, allow_empty=True)
    learned_hidden: Tuple[int, ...] = setting((64, 64), ge=1)
    learned_epochs: int = setting(60, ge=1)
    inverses: Tuple[str, ...] = setting(INVERSES, choices=INVERSES)
    lm_iterations: int = setting(30, ge=1)
    amortized_hidden: Tuple[int, ...] = setting((128, 128), ge=1)
    amortized_epochs: int = setting(60, ge=1)
    amortized_batch_size: int = setting(512, ge=1)
    downstream: Tuple[str, ...] = setting(("b0.7", "b1", "b1.3", "a0.3", "learned0.01", "learned1"), allow_empty=True)
    train_steps: int = setting(3000, ge=1)
    hidden: Tuple[int, ...] = setting((256, 256), ge=1)
    batch_size: int = setting(256, ge=1)
    expectile: float = setting(0.7, gt=0.0, lt=1.0)
    temperature: float = setting(1.0, ge=0.0)
    seeds: Tuple[int, ...] = (0,)
    eval_episodes: int = setting(10, ge=1)
    eval_seed: int = 10_000

    def check(self) -> None:
        super().check()
        if len(self.hierarchical_noise) not in (1, 4):
            raise ValueError(f"hierarchical_noise must hold 1 or 4 values (one per z dimension), got {self.hierarchical_noise}")
        unknown = sorted(set(self.downstream) - {lv.id for lv in levels(self)})
        if unknown:
            raise ValueError(f"downstream names unknown levels {unknown}; the levels are {[lv.id for lv in levels(self)]}")

    @property
    def level_fields(self) -> Tuple[str, ...]:
        """The config fields a level's relabelling reads."""
        return ("inverses", "lm_iterations", "amortized_hidden", "amortized_epochs", "amortized_batch_size", "data_seed")


QUICK: Dict[str, Any] = {"episodes": 3, "b_scales": [0.7, 1.0, 1.3], "a_perturbations": [0.3], "learned_fractions": [0.3, 1.0],
                         "learned_epochs": 5, "amortized_epochs": 5, "downstream": ["b1"], "train_steps": 200,
                         "hidden": [32, 32], "eval_episodes": 1}
"""``ohio study model-error --quick``: every stage on a small dataset (well under a minute)."""

COSTS: Dict[str, float] = {**REACHER_COSTS, "amortized_window_epoch": 1.5e-5, "dynamics_window_epoch": 3e-5,
                           "lm_window": 3e-4}
"""CPU seconds per unit (one thread): the reacher's (see ``reacher.COSTS``); the inverse network's and the learned
model's epochs and the LM windows from ``benchmarks/results/amortized.json`` and ``learned_dynamics.json`` (x1.5)."""


@dataclasses.dataclass(frozen=True)
class Level:
    """One dynamics model: ``family`` in ``FAMILIES``, its parameter ``value`` and ``id`` (e.g. ``b0.7``)."""

    family: str
    value: float

    @property
    def id(self) -> str:
        return f"{self.family}{self.value:g}"


def levels(cfg: ModelErrorConfig) -> List[Level]:
    """Every dynamics model of the study, in table order."""
    return ([Level("b", v) for v in cfg.b_scales] + [Level("a", v) for v in cfg.a_perturbations]
            + [Level("learned", v) for v in cfg.learned_fractions])


def estimate(cfg: ModelErrorConfig, workers: int) -> List[Tuple[str, float]]:
    """Estimated wall seconds of each phase of a run from scratch (see ``COSTS``)."""
    windows, lv = cfg.episodes * 500 // K, levels(cfg)
    relabel = {"collect_episode": cfg.episodes, "eval_episode": 3 * cfg.eval_episodes, "relabel_window": windows,
               "lm_window": windows * len(lv) * ("lm" in cfg.inverses),
               "amortized_window_epoch": windows * cfg.amortized_epochs * len(lv) * ("amortized" in cfg.inverses),
               "dynamics_window_epoch": sum(cfg.learned_fractions) * cfg.episodes * 500 * cfg.learned_epochs}
    jobs = [{"iql_step": cfg.train_steps, "eval_episode": cfg.eval_episodes}
            for _ in range((len(cfg.downstream) * len(cfg.inverses) + 1) * len(cfg.seeds))]
    return [("data + models + relabel", estimate_wall_time([relabel], COSTS, 1)),
            ("train + eval", estimate_wall_time(jobs, COSTS, workers))]


# ------------------------------------------------------------------------------ dynamics models
class DegradedDynamics(LinearizedDynamics):
    """``x' = A' x + b_scale B u`` with ``A' = A + a_delta (A - I) * noise`` (``noise (n, n)``), where
    ``A (B, n, n)``, ``B (B, n, m)`` are the true linearisation in the controller's context."""

    def __init__(self, b_scale: float = 1.0, a_delta: float = 0.0, noise: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        self.b_scale, self.a_delta = float(b_scale), float(a_delta)
        self.register_buffer("noise", torch.zeros(1, 1, dtype=torch.float64) if noise is None else noise.double())

    def forward(self, state: torch.Tensor, action: torch.Tensor, context: Dict[str, torch.Tensor]) -> torch.Tensor:
        self.check_context(context)
        A, B = context["A"], self.b_scale * context["B"]
        if self.a_delta:
            eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
            A = A + self.a_delta * (A - eye) * self.noise.to(A)
        return (A @ state.unsqueeze(-1) + B @ action.unsqueeze(-1)).squeeze(-1)


def learned_model(fraction: float, low_path: Path, cfg: ModelErrorConfig, stages: Stages) -> Tuple[Any, Path, Dict[str, Any]]:
    """The :class:`LearnedDynamics` fit on the first ``fraction`` of the transitions (cached): model, path, fit stats."""
    from ..lowlevel import LearnedDynamics, sequence_windows

    path = stages.out / "models" / f"learned{fraction:g}.pt"
    make = lambda: LearnedDynamics(4, 2, hidden=cfg.learned_hidden, drop_dims=(0,))  # noqa: E731

    def fit() -> Dict[str, Any]:
        low = Dataset.load(low_path)
        n = max(4 * K, int(round(fraction * len(low))))
        part = low.select(slice(0, n))
        x, u = sequence_windows(part["states"], part["next_states"], part["actions"], part["episode_ids"], horizon=K)
        model, t0 = make(), time.perf_counter()
        hist = model.fit(x, u, epochs=cfg.learned_epochs, batch_size=1024, lr=3e-3, seed=cfg.data_seed, progress=False)
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        atomic_write_bytes(path, buf.getvalue())
        return {"transitions": n, "windows": int(x.shape[0]), "fit_seconds": time.perf_counter() - t0,
                "epochs_run": len(hist["val_loss"])}

    key = stages.key(("learned_hidden", "learned_epochs", "data_seed"), inputs=[low_path], fraction=fraction, k=K)
    meta = stages.json(path.with_suffix(".json"), key, fit, also=[path])
    model = make()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.requires_grad_(False), path, meta


def dynamics_of(level: Level, low_path: Path, cfg: ModelErrorConfig, stages: Stages) -> Tuple[Any, List[Path], Dict[str, Any]]:
    """The dynamics model of ``level``, the files it was made from and its fit statistics."""
    if level.family == "learned":
        model, path, meta = learned_model(level.value, low_path, cfg, stages)
        return model, [path], meta
    if level.family == "b":
        return DegradedDynamics(b_scale=level.value), [], {}
    noise = torch.randn(4, 4, generator=torch.Generator().manual_seed(cfg.a_seed), dtype=torch.float64)
    return DegradedDynamics(a_delta=level.value, noise=noise), [], {}


# ------------------------------------------------------------------------------ relabelling one level
def _chunked(fn: Any, batch: Any, chunk: int = 4096) -> torch.Tensor:
    """``fn(sub_batch) -> (b, ...)`` over chunks of a :class:`WindowBatch`, concatenated."""
    from ..inverse import select_windows

    n = len(batch)
    return torch.cat([fn(select_windows(batch, torch.arange(i, min(i + chunk, n)))) for i in range(0, n, chunk)])


def relabel_level(dynamics: Any, batch: Any, observed_u: torch.Tensor,
                  cfg: ModelErrorConfig) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """z of every inverse through ``dynamics`` for the windows ``batch`` (context of the true controller);
    ``observed_u (W, k, 2)``: the recorded actions (for the model's open-loop k-step error)."""
    from ..envs import make_reacher_lqr
    from ..inverse import AmortizedInverse, AnalyticSolver, InverseProblem, LevenbergMarquardt

    problem = InverseProblem(make_reacher_lqr(), dynamics)
    stats: Dict[str, Any] = {"seconds": {}, "train_seconds": {}}
    with torch.no_grad():
        def open_loop(b: Any) -> torch.Tensor:
            x = b.state0
            for l in range(K):
                x = dynamics(x, observed_u[b.context["rows"], l], b.context)
            return (x - b.target).norm(dim=-1)
        err = _chunked(open_loop, batch)
    stats["model_k_step_error"] = {"median": float(err.median()), "p90": float(err.quantile(0.9))}
    zs: Dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    analytic = _chunked(lambda b: AnalyticSolver().solve(problem, b).z, batch)
    stats["seconds"]["analytic"] = time.perf_counter() - t0
    if "analytic" in cfg.inverses:
        zs["analytic"] = analytic.numpy()
    if "lm" in cfg.inverses:
        t0 = time.perf_counter()
        lm = LevenbergMarquardt(max_iter=cfg.lm_iterations)
        zs["lm"] = _chunked(lambda b: lm.solve(problem, b, analytic[b.context["rows"]]).z, batch).numpy()
        stats["seconds"]["lm"] = time.perf_counter() - t0 + stats["seconds"]["analytic"]  # its start is the analytic z
    if "amortized" in cfg.inverses:
        t0 = time.perf_counter()
        inv = AmortizedInverse(problem, hidden=cfg.amortized_hidden, drop_dims=(0,), delta=0.01)
        inv.fit(batch, epochs=cfg.amortized_epochs, batch_size=cfg.amortized_batch_size, seed=cfg.data_seed, progress=False)
        stats["train_seconds"]["amortized"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with torch.no_grad():
            zs["amortized"] = _chunked(inv, batch).numpy()
        stats["seconds"]["amortized"] = time.perf_counter() - t0
    with torch.no_grad():
        stats["model_residual_median"] = {
            name: float(_chunked(lambda b: problem.residual(torch.as_tensor(z)[b.context["rows"]], b).norm(dim=-1), batch).median())
            for name, z in zs.items()}
    return zs, stats


def _window_batch(low: Dataset, starts: np.ndarray) -> Any:
    """The windows at ``starts`` with the true controller's context, each knowing its row (``batch.rows``)."""
    from ..envs import make_reacher_lqr
    from ..inverse import InverseProblem

    batch = InverseProblem(make_reacher_lqr(), LinearizedDynamics()).batch_from_dataset(low, starts)
    batch.context["rows"] = torch.arange(len(batch))  # carried through select_windows with the data
    return batch


def error_stats(z: np.ndarray, z_true: np.ndarray, replay: np.ndarray, clipped: np.ndarray) -> Dict[str, Any]:
    """z error (max over dimensions) and replay error of ``z (W, 4)``: medians and p90, overall and split by ``clipped``."""
    err = np.abs(z - z_true).max(1)
    out: Dict[str, Any] = {}
    for name, values in (("z_error", err), ("replay_error", replay)):
        for part, mask in (("", np.ones_like(clipped)), ("_unclipped", ~clipped), ("_clipped", clipped)):
            v = values[mask]
            out[f"{name}{part}_median"] = float(np.median(v)) if v.size else float("nan")
            out[f"{name}{part}_p90"] = float(np.quantile(v, 0.9)) if v.size else float("nan")
    return out


def study_level(level: Level, low_path: Path, cfg: ModelErrorConfig, stages: Stages, shared: Dict[str, Any]) -> Dict[str, Any]:
    """Relabel with ``level``'s model (cached: ``levels/<id>.json`` and the z in ``levels/<id>.npz``)."""
    dynamics, inputs, meta = dynamics_of(level, low_path, cfg, stages)
    z_path = stages.out / "levels" / f"{level.id}.npz"

    def compute() -> Dict[str, Any]:
        from ..envs import make_reacher_lqr
        from ..inverse import InverseProblem

        if "batch" not in shared:  # the true controller's context, built once for all levels
            low = shared["low"]
            shared["batch"] = _window_batch(low, shared["starts"])
            rows = shared["starts"][:, None] + np.arange(K)[None]
            shared["observed_u"] = torch.as_tensor(low["actions"][rows], dtype=torch.float64)
        batch = shared["batch"]
        zs, stats = relabel_level(dynamics, batch, shared["observed_u"], cfg)
        true = InverseProblem(make_reacher_lqr(), LinearizedDynamics())
        rows: Dict[str, Any] = {}
        for name, z in zs.items():
            with torch.no_grad():
                replay = _chunked(lambda b: true.residual(torch.as_tensor(z)[b.context["rows"]], b).norm(dim=-1), batch).numpy()
            rows[name] = {**error_stats(z, shared["z_true"], replay, shared["clipped"]),
                          "seconds": stats["seconds"][name], "train_seconds": stats["train_seconds"].get(name, 0.0),
                          "model_residual_median": stats["model_residual_median"][name]}
        Dataset({f"z_{n}": z for n, z in zs.items()}, {"level": level.id}).save(z_path)
        return {"level": level.id, "family": level.family, "value": level.value, "model": meta,
                "model_k_step_error": stats["model_k_step_error"], "inverses": rows}

    key = stages.key(cfg.level_fields + (("a_seed",) if level.family == "a" else ()), inputs=[low_path, *inputs],
                     level=level.id, k=K)
    return stages.json(stages.out / "levels" / f"{level.id}.json", key, compute, also=[z_path])


# ------------------------------------------------------------------------------ the study
def downstream_jobs(cfg: ModelErrorConfig, stages: Stages, low: Dataset, starts: np.ndarray) -> List[Dict[str, Any]]:
    """One IQL job per (downstream level, inverse, seed), plus the true z as labels; writes their datasets."""
    from ..inverse import high_level_rows

    cols = high_level_rows(low, starts, K, ("z_true",))
    labels = [("true", "true_z", cols["z_true"])]
    for lid in cfg.downstream:
        z = Dataset.load(stages.out / "levels" / f"{lid}.npz")
        labels += [(lid, inv, z[f"z_{inv}"]) for inv in cfg.inverses]
    jobs = []
    for lid, inv, z in labels:
        path = stages.out / "data" / f"high_{lid}_{inv}.npz"
        Dataset({**cols, "z": z}, {"k": K, "stride": K, "inverter": f"{inv} through {lid}"}).save(path)  # deterministic bytes
        for seed in cfg.seeds:
            jobs.append({"name": f"{lid}_{inv}_seed{seed}", "dataset": lid, "method": inv, "variant": "iql", "seed": seed,
                         "data_path": str(path), "data_sha256": file_hash(path), "train_steps": cfg.train_steps,
                         "hidden": list(cfg.hidden), "batch_size": cfg.batch_size, "expectile": cfg.expectile,
                         "temperature": cfg.temperature, "eval_episodes": cfg.eval_episodes, "eval_seed": cfg.eval_seed,
                         "device": cfg.device})
    return jobs


def run(cfg: Optional[ModelErrorConfig] = None) -> Dict[str, Any]:
    """Run (or resume) the study; prints the table and returns the results dict."""
    from ..data import window_starts

    cfg = cfg or ModelErrorConfig()
    out, stages = start_run(cfg)  # also sizes this process's torch threads next to the training workers
    t0 = time.perf_counter()
    print(wall_time_note(estimate(cfg, cfg.job_workers), cfg.job_workers, "ohio_layers.experiments.model_error.COSTS"))
    print(f"[1/4] behaviour data: hierarchical ({cfg.episodes} episodes) and reference returns")
    low_path = collect_dataset("hierarchical", cfg, stages)
    ref = reference_returns(cfg, stages) if cfg.downstream else None
    low = Dataset.load(low_path)
    starts = window_starts(low, K, K)
    rows = starts[:, None] + np.arange(K)[None]
    clipped = (np.abs(low["actions"][rows]) >= 1.0 - CLIP_EPS).any(axis=(1, 2))
    shared = {"low": low, "starts": starts, "z_true": low["z_true"][starts], "clipped": clipped}
    print(f"[2/4] relabel {len(starts)} windows ({100 * clipped.mean():.1f}% clipped) through {len(levels(cfg))} models")
    per_level = [study_level(lv, low_path, cfg, stages, shared) for lv in tqdm(levels(cfg), desc="models", unit="model")]

    scores: Dict[str, Dict[str, Any]] = {}
    if cfg.downstream:
        jobs = downstream_jobs(cfg, stages, low, starts)
        print(f"[3/4] train and evaluate {len(jobs)} IQL agents ({cfg.job_workers} processes)")
        runs = run_jobs(train_and_evaluate, jobs, out / "runs", workers=cfg.job_workers, desc="train+eval", engine=cfg.engine)
        r_rand, r_exp = ref["random"]["mean"], ref["expert"]["mean"]
        for job, res in zip(jobs, runs):
            s = scores.setdefault(f"{job['dataset']}/{job['method']}", {"scores": []})
            s["scores"].append(100 * (res["mean_return"] - r_rand) / (r_exp - r_rand))
        for s in scores.values():
            s.update(mean=float(np.mean(s["scores"])), std=float(np.std(s["scores"])))

    print("[4/4] results")
    results = {"config": cfg.to_dict(), "windows": int(len(starts)), "clipped_share": float(clipped.mean()),
               "rows": result_rows(per_level, scores), "levels": per_level, "scores": scores,
               "reference": None if ref is None else {k: v["mean"] for k, v in ref.items()}}
    results["table"] = table(results)
    results["header"] = (f"{len(starts)} windows of k = {K} ({100 * clipped.mean():.1f}% with a clipped recorded action); "
                         "z error = max |z - z_true| over dimensions, replay = ||s_t+k reproduced by the true model - "
                         "observed||, medians; score: IQL, 0 random, 100 flat expert"
                         + (f", true z labels {scores['true/true_z']['mean']:.1f}" if "true/true_z" in scores else ""))
    results["wall_seconds"] = time.perf_counter() - t0
    print(results["header"])
    print(results["table"])
    save_results(out, results, plot, "model_error.png")
    return results


def result_rows(per_level: List[Dict[str, Any]], scores: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One flat row per (level, inverse) for ``results.json``."""
    rows = []
    for lv in per_level:
        for inv in [i for i in INVERSES if i in lv["inverses"]]:  # a cached level's JSON has its keys sorted
            st = lv["inverses"][inv]
            sc = scores.get(f"{lv['level']}/{inv}")
            rows.append({"level": lv["level"], "family": lv["family"], "value": lv["value"], "inverse": inv,
                         "model_k_step_error": lv["model_k_step_error"]["median"], **st,
                         "score": None if sc is None else sc["mean"]})
    return rows


def table(results: Dict[str, Any]) -> str:
    """The printed table: one line per (model, inverse)."""
    e = lambda v: "-" if v is None or v != v else f"{v:.1e}"  # noqa: E731
    body = [[r["level"], e(r["model_k_step_error"]), INVERSE_LABEL[r["inverse"]], e(r["z_error_median"]),
             e(r["z_error_unclipped_median"]), e(r["z_error_clipped_median"]), e(r["z_error_p90"]),
             e(r["replay_error_median"]), e(r["replay_error_clipped_median"]),
             "-" if r["score"] is None else f"{r['score']:.1f}"] for r in results["rows"]]
    return format_table(body, ["model", "k-step err", "inverse", "z err", "unclipped", "clipped", "z err p90", "replay",
                               "replay clipped", "score"])


def plot(results: Dict[str, Any], path: Path) -> None:
    """Top: median z error vs each family's degradation, one line per inverse (dashed: clipped windows only);
    bottom: the downstream score where measured (dotted black: the true-z labels). The true model (``b1``) is
    the A family's point 0 and a thin dotted line per inverse in the learned family's panels."""
    plt = pyplot()
    if plt is None:
        return
    fams = [f for f in FAMILIES if any(r["family"] == f for r in results["rows"])]
    fig, axes = plt.subplots(2, len(fams), figsize=(4.6 * len(fams), 7.0), squeeze=False, sharex="col")
    colours = {"analytic": "#4c72b0", "lm": "#55a868", "amortized": "#c44e52"}
    anchor = results["scores"].get("true/true_z")
    true = {r["inverse"]: r for r in results["rows"] if r["level"] == "b1"}
    for col, fam in enumerate(fams):
        top, bottom = axes[0][col], axes[1][col]
        for inv in results["config"]["inverses"]:
            mine = [r for r in results["rows"] if r["family"] == fam and r["inverse"] == inv]
            if fam == "a" and inv in true:
                mine.append({**true[inv], "value": 0.0})
            elif fam == "learned" and inv in true:
                top.axhline(true[inv]["z_error_median"], ls=":", lw=0.8, color=colours[inv])
                if true[inv]["score"] is not None:
                    bottom.axhline(true[inv]["score"], ls=":", lw=0.8, color=colours[inv])
            mine.sort(key=lambda r: r["value"])
            x = [r["value"] for r in mine]
            top.plot(x, [r["z_error_median"] for r in mine], "o-", color=colours[inv], label=INVERSE_LABEL[inv])
            top.plot(x, [r["z_error_clipped_median"] for r in mine], "x--", color=colours[inv], alpha=0.7)
            scored = [r for r in mine if r["score"] is not None]
            if scored:
                bottom.plot([r["value"] for r in scored], [r["score"] for r in scored], "o-", color=colours[inv],
                            label=INVERSE_LABEL[inv])
        if anchor is not None:
            bottom.axhline(anchor["mean"], ls=":", color="k", label="true z labels")
        top.set_yscale("log")
        top.set_title(FAMILIES[fam] + (" (dotted: true model)" if fam == "learned" else ""))
        top.set_ylabel("median |z - z_true| (dashed: clipped windows)")
        bottom.set_ylabel("IQL normalised score")
        bottom.set_xlabel(FAMILIES[fam])
        if fam == "learned":
            top.set_xscale("log")
        top.legend(fontsize=7)
        bottom.legend(fontsize=7)
    fig.suptitle("reacher: relabelling through a wrong dynamics model (controller exact; analytic = LM where nothing clips)")
    save_figure(fig, path)
