"""``ohio identify-manipulation``: the episode plan, the scoring table and clustering of JSON summaries,
and (slow, robosuite) a miniature end-to-end run."""
import json

import numpy as np
import pytest

from ohio_layers.cli import main
from ohio_layers.experiments.manipulation_identify import (GAINS, ManipulationIdentifyConfig, _as_identification,
                                                           episode_plan, identification_table, run, true_gains)
from ohio_layers.inverse.mixed import cluster_identifications


def summary(episode, gains, flagged=()):
    return {"group": episode, "estimate": dict(gains),
            "std_error": {g: float("inf") if g in flagged else 1e-3 * v for g, v in gains.items()},
            "identifiable": {g: g not in flagged for g in GAINS}, "reasons": {g: "test" for g in flagged},
            "condition": 10.0, "residual_rms": 0.0, "relative_residual": 0.0, "windows": 5, "equations": 100,
            "converged": True, "iterations": 3, "seconds": 1.0}


def test_plan_interleaves_settings_and_the_table_scores_against_the_withheld_truth():
    cfg = ManipulationIdentifyConfig(episodes=6, out_dir="unused")
    plan = episode_plan(cfg)
    assert [p["setting"] for p in plan] == ["original", "stiffness", "damping"] * 2
    assert len({p["seed"] for p in plan}) == 6
    truth = {str(p["episode"]): p["setting"] for p in plan}
    found = []
    for p in plan:
        g = true_gains("lift", p["setting"])
        if p["episode"] == 4:  # 10 % off in the stiffness of one episode
            g = {**g, "kp.ori": 1.1 * g["kp.ori"]}
        found.append(summary(p["episode"], g, flagged=("damping_ratio.pos",) if p["episode"] == 5 else ()))
    table, stats = identification_table(cfg, found, truth)
    assert stats["original"]["within_share"] == 1.0
    assert stats["stiffness"]["within_share"] == 0.5 and stats["stiffness"]["max_rel_error"]["kp.ori"] == pytest.approx(0.1)
    assert stats["damping"]["within_share"] == 0.5 and stats["damping"]["flagged_share"] == 0.5  # flagged never counts
    labels, clusters = cluster_identifications([_as_identification(f) for f in found], rtol=0.05)
    assert labels[0] == labels[3] and len({labels[0], labels[1], labels[2]}) == 3 and labels[4] != labels[1]
    # without its position damping a damping-setting episode looks like both "original" and "damping": its own cluster
    assert labels[5] not in (labels[0], labels[2])


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="settings"):
        ManipulationIdentifyConfig(settings=("original", "stiff"))
    with pytest.raises(TypeError, match="episode"):
        ManipulationIdentifyConfig.from_dict({"episode": 3})
    with pytest.raises(SystemExit, match="identify-manipulation"):
        main(["identify-manipulation", "--set", "tolerance=2"])


def test_full_profiles_build_valid_configs(monkeypatch):
    """``--full`` of both identification commands: a valid config with paired seeds (and --quick excludes it)."""
    import ohio_layers.experiments.manipulation_identify as manip
    import ohio_layers.experiments.reacher_identify as reach

    seen = []
    monkeypatch.setattr(manip, "run", seen.append)
    monkeypatch.setattr(reach, "run", seen.append)
    main(["identify-manipulation", "--task", "door", "--full"])
    main(["identify-reacher", "--full"])
    door, reacher = seen
    assert door.task == "door" and door.train and door.train_true and len(door.seeds) == 30
    assert door.out_dir == "runs/identify-door-full" and reacher.out_dir == "runs/identify-reacher-full"
    assert len(reacher.seeds) == 10 and reacher.train_steps == 20_000
    with pytest.raises(SystemExit):
        main(["identify-reacher", "--full", "--quick"])


@pytest.mark.slow
def test_tiny_mixed_log_end_to_end(tmp_path):
    pytest.importorskip("robosuite")
    cfg = ManipulationIdentifyConfig(episodes=3, horizon=25, relabel_targets=("damping",), workers=1, out_dir=str(tmp_path))
    res = run(cfg)
    assert all(s["within_share"] == 1.0 for s in res["stats"].values())
    assert len(res["clusters"]) == 3
    assert res["label_agreement"]["damping"]["share_within_1mm_1mrad"] > 0.99
    assert json.loads((tmp_path / "results.json").read_text())["truth"] == {"0": "original", "1": "stiffness", "2": "damping"}
    assert np.isfinite(res["wall_seconds"])


def test_score_table_reports_identified_minus_true_per_target(tmp_path, monkeypatch):
    """Stage 4's table: the gap identified - true in points per target and the 5-point verdict (runs faked)."""
    from ohio_layers.data import Dataset
    from ohio_layers.experiments import manipulation_identify as mi

    cfg = ManipulationIdentifyConfig(out_dir=str(tmp_path), train=True, relabel_targets=("original", "damping"))
    Dataset({"rewards": np.ones(4)}, {"behaviour_return": 50.0}).save(tmp_path / "relabelled" / "actions.npz")
    returns = {("ohio", "identified"): {"original": 40.0, "damping": 30.0}, ("ohio", "true"): {"original": 41.0, "damping": 33.5},
               ("iql_actions", None): {"original": 10.0, "damping": 5.0}}

    def fake_run_jobs(fn, jobs, out_dir, workers, desc):
        return [{"method": j["method"], "evals": {t: {"mean_return": returns[(j["method"], j.get("source"))][t], "success_rate": 0.5}
                                                  for t in j["deploy"]}} for j in jobs]

    monkeypatch.setattr(mi, "run_jobs", fake_run_jobs)
    scores, text = mi.downstream(cfg)
    assert scores["gap/original"] == pytest.approx(-2.0) and scores["gap/damping"] == pytest.approx(-7.0)
    assert scores["max_abs_gap"] == pytest.approx(7.0) and "NOT within 5 points" in text
    assert scores["replay/damping"]["mean"] == pytest.approx(10.0)
    _, text = mi.downstream(cfg, points=10.0)
    assert "(within 10 points under every target)" in text


def test_score_gap_is_paired_by_seed_with_its_standard_error_and_the_placebo_floor(tmp_path, monkeypatch):
    """identified - true per seed (mean +- s.e.), and the placebo arm: true labels + seeded noise, its own gap."""
    from ohio_layers.data import Dataset
    from ohio_layers.experiments import manipulation_identify as mi

    cfg = ManipulationIdentifyConfig(out_dir=str(tmp_path), train=True, relabel_targets=("damping",), seeds=(0, 1, 2),
                                     placebo=1e-7)
    rel = tmp_path / "relabelled"
    Dataset({"rewards": np.ones(4)}, {"behaviour_return": 100.0}).save(rel / "actions.npz")
    z = np.random.default_rng(0).standard_normal((4, 7))
    Dataset({"z": z, "rewards": np.ones(4)}).save(rel / "ohio_true_damping.npz")
    by_seed = {"identified": [30.0, 40.0, 50.0], "true": [28.0, 41.0, 45.0], "placebo1e-07": [29.0, 39.0, 47.0]}

    def fake_run_jobs(fn, jobs, out_dir, workers, desc):
        return [{"method": j["method"], "evals": {"damping": {"mean_return": by_seed[j["source"]][j["seed"]] if j.get("source")
                                                              else 1.0, "success_rate": 0.0}}} for j in jobs]

    monkeypatch.setattr(mi, "run_jobs", fake_run_jobs)
    scores, text = mi.downstream(cfg)
    gaps = np.array([2.0, -1.0, 5.0])
    assert scores["gap_per_seed/damping"]["gaps"] == pytest.approx(gaps.tolist())
    assert scores["gap/damping"] == pytest.approx(2.0)
    assert scores["gap_per_seed/damping"]["standard_error"] == pytest.approx(gaps.std(ddof=1) / np.sqrt(3))
    assert scores["placebo_gap_per_seed/damping"] == pytest.approx([1.0, -2.0, 2.0])
    assert "+2.0 +- 1.7" in text and "placebo - true (noise floor)" in text
    placebo = Dataset.load(rel / "ohio_placebo1e-07_damping.npz")["z"]
    assert 0 < np.abs(placebo[:, :6] - z[:, :6]).max() < 1e-6 and np.array_equal(placebo[:, 6], z[:, 6])
