"""Learning effect of the opt-in bf16 mode: the same reacher data and seeds trained in float32 and bf16.

    python benchmarks/rl_mixed_precision_effect.py [--out /tmp/amp_effect] [--episodes 100] [--steps 4000]
        [--seeds 0 1 2] [--algorithm iql] [--workers 2]

Reuses the reacher experiment's stages (``ohio_layers.experiments.reacher``): hierarchical
behaviour data, OHIO-analytic relabelling, then one agent per (precision, seed) trained by the
experiment's own ``train_and_evaluate`` (only ``mixed_precision`` differs) and evaluated on the
same seeded episodes. Prints the normalised score (random 0, flat expert 100) per seed and the
difference of the means against the seed-to-seed spread. Resumable (finished jobs are kept in
``--out``).
"""
from __future__ import annotations

import argparse

import numpy as np

from ohio_layers.experiments.common import run_jobs, start_run
from ohio_layers.experiments.reacher import (ReacherExperimentConfig, collect_dataset, reference_returns,
                                             relabelled_dataset, train_and_evaluate)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/amp_effect")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--algorithm", default="iql", choices=["iql", "bc"])
    ap.add_argument("--eval-episodes", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    cfg = ReacherExperimentConfig(out_dir=args.out, datasets=("hierarchical",), methods=("ohio_analytic",),
                                  episodes=args.episodes, seeds=tuple(args.seeds), algorithm=args.algorithm,
                                  bc_losses=("mse",), train_steps=args.steps, eval_episodes=args.eval_episodes)
    out, stages = start_run(cfg)
    ref = reference_returns(cfg, stages)
    low_path = collect_dataset("hierarchical", cfg, stages)
    data_path, _ = relabelled_dataset("hierarchical", "ohio_analytic", low_path, cfg, stages)
    variant = cfg.variants[0]
    jobs = [{"name": f"{precision or 'fp32'}_seed{seed}", "dataset": "hierarchical", "method": "ohio_analytic",
             "seed": seed, "variant": variant, "data_path": str(data_path),
             "train_steps": cfg.train_steps, "hidden": list(cfg.hidden), "batch_size": cfg.batch_size,
             "expectile": cfg.expectile, "temperature": cfg.temperature, "eval_episodes": cfg.eval_episodes,
             "eval_seed": cfg.eval_seed, "mixed_precision": precision, "device": cfg.device}
            for seed in cfg.seeds for precision in (None, "bf16")]
    runs = run_jobs(train_and_evaluate, jobs, out / "runs", workers=args.workers, desc="fp32/bf16")
    r_rand, r_exp = ref["random"]["mean"], ref["expert"]["mean"]
    scores = {"fp32": [], "bf16": []}
    print(f"reacher hierarchical data ({cfg.episodes} episodes), OHIO-analytic labels, {variant}, {cfg.train_steps} steps, "
          f"{cfg.eval_episodes} eval episodes; score: random 0, flat expert 100")
    print("| seed | fp32 score | bf16 score | fp32 train s | bf16 train s |")
    print("|---|---|---|---|---|")
    for seed in cfg.seeds:
        row = {}
        for job, r in zip(jobs, runs):
            if job["seed"] == seed:
                key = job["mixed_precision"] or "fp32"
                s = 100 * (r["mean_return"] - r_rand) / (r_exp - r_rand)
                scores[key].append(s)
                row[key] = (s, r["train_seconds"])
        print(f"| {seed} | {row['fp32'][0]:.1f} | {row['bf16'][0]:.1f} | {row['fp32'][1]:.0f} | {row['bf16'][1]:.0f} |")
    f, b = np.array(scores["fp32"]), np.array(scores["bf16"])
    print(f"mean fp32 {f.mean():.1f} +- {f.std(ddof=1) if len(f) > 1 else 0:.1f} (sd over seeds), "
          f"bf16 {b.mean():.1f} +- {b.std(ddof=1) if len(b) > 1 else 0:.1f}; paired difference bf16 - fp32 "
          f"{(b - f).mean():.1f} +- {(b - f).std(ddof=1) if len(f) > 1 else 0:.1f}")


if __name__ == "__main__":
    main()
