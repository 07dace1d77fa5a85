"""A seeded miniature of ``ohio reacher``: every stage runs, results are written, resume is a no-op."""
import json

import pytest

from ohio_layers.cli import main
from ohio_layers.experiments.reacher import ReacherExperimentConfig, run

TINY = dict(episodes=2, train_steps=30, seeds=(0,), eval_episodes=1, hidden=(16, 16), batch_size=32, workers=1,
            lm_iterations=5)


def test_tiny_reacher_experiment_runs_and_resumes(tmp_path):
    cfg = ReacherExperimentConfig(out_dir=str(tmp_path), **TINY)
    res = run(cfg)
    assert set(res["summary"]) == {f"{d}/{m}" for d in cfg.datasets for m in cfg.methods}
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["summary"].keys() == res["summary"].keys()
    assert (tmp_path / "scores.png").stat().st_size > 0
    # OHIO recovers the hierarchical behaviour's own z (up to the FD model's ~1e-8 one-step error,
    # amplified by the closed loop's conditioning); the next-state baseline does not
    hier = res["summary"]
    assert hier["hierarchical/ohio_numerical"]["relabel"]["z_error_median"] < 1e-4
    assert hier["hierarchical/next_state"]["relabel"]["z_error_median"] > 1e-2
    stamps = _stamps(tmp_path)
    run(cfg)  # resumes: nothing is recomputed
    assert stamps == _stamps(tmp_path)

    # a changed setting recomputes exactly what depends on it (data, its relabels, its agents)
    run(ReacherExperimentConfig(out_dir=str(tmp_path), **{**TINY, "expert_noise": 0.3}))
    after = _stamps(tmp_path)
    changed = {name for name in stamps if after[name] != stamps[name]}
    assert "data/expert.npz" in changed and "data/expert_ohio_numerical.npz" in changed
    assert "reference.json" in changed  # the expert's reference return depends on its noise
    assert "data/hierarchical.npz" not in changed and "data/hierarchical_ohio_numerical.npz" not in changed
    assert {n for n in changed if n.startswith("runs/")} == {n for n in stamps if n.startswith("runs/expert_")}
    assert json.loads((tmp_path / "results.json").read_text())["config"]["expert_noise"] == 0.3


def _stamps(root):
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")
            if p.suffix in (".json", ".npz") and not p.name.endswith(".key.json") and p.name not in ("config.json", "results.json")}


@pytest.mark.parametrize("values, match", [({"seeds": 5}, None), ({"datasets": "expert"}, None),
                                           ({"methods": []}, "methods must not be empty"),
                                           ({"lm_iterations": -1}, "lm_iterations must be >= 1"),
                                           ({"train_steps": "10"}, "train_steps must be an integer"),
                                           ({"batch_size": 2.5}, "batch_size must be an integer"),
                                           ({"expert_noise": float("nan")}, "expert_noise must be finite"),
                                           ({"eval_seed": "abc"}, "eval_seed must be an integer")])
def test_config_values_are_checked_by_declared_type_and_range(values, match):
    if match is None:  # a scalar for a list field is a one-element list, never split into letters
        cfg = ReacherExperimentConfig.from_dict(values)
        key, value = next(iter(values.items()))
        assert getattr(cfg, key) == (value,)
    else:
        with pytest.raises((TypeError, ValueError), match=match):
            ReacherExperimentConfig.from_dict(values)


def test_config_and_cli_reject_unknown_keys(tmp_path):
    with pytest.raises(TypeError, match="unknown ReacherExperimentConfig keys \\['epochs'\\]"):
        ReacherExperimentConfig.from_dict({"epochs": 3})
    with pytest.raises(ValueError, match=r"methods\[0\] must be one of"):
        ReacherExperimentConfig(methods=("dqn",))
    with pytest.raises(SystemExit, match="epochs"):
        main(["reacher", "--out", str(tmp_path), "--set", "epochs=3"])


def test_amortized_inverse_option(tmp_path):
    with pytest.raises(ValueError, match="inverse must be a subset"):
        ReacherExperimentConfig(inverse="amortised")
    cfg = ReacherExperimentConfig(out_dir=str(tmp_path), **{**TINY, "bc_losses": ("mse",)}, datasets=("hierarchical",),
                                  methods=("ohio_numerical",), inverse="amortized,amortized+fallback", amortized_epochs=3)
    assert cfg.methods == ("ohio_numerical", "ohio_amortized", "ohio_amortized_fallback")
    res = run(cfg)
    rel = {m: res["summary"][f"hierarchical/{m}"]["relabel"] for m in cfg.methods}
    assert rel["ohio_amortized"]["train_seconds"] > 0 and rel["ohio_amortized"]["seconds"] > 0
    # 3 epochs make a poor network; the fallback (tolerance 1e-6) still gives the exact solver's labels
    assert rel["ohio_amortized"]["z_error_median"] > 1e-3
    assert rel["ohio_amortized_fallback"]["z_error_median"] < 1e-4
    assert "relabel s" in res["table"]
