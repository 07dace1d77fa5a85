"""A tiny seeded ``ohio supply-chain`` run: row keys, MPC normalisation, OHIO never violates capacity, resume, CLI."""
import json

import numpy as np
import pytest

from ohio_layers.cli import build_parser
from ohio_layers.envs.supply_chain import SupplyChainEnv
from ohio_layers.experiments.supply_chain import SupplyChainExperimentConfig, observe_as, run

TINY = {"scenario": "1w3s", "datasets": ["mpc"], "episodes": 2, "algos": ["bc", "iql"], "seeds": [0], "hidden": [16],
        "batch_size": 16, "iql_steps": 10, "bc_steps": 10, "calql_steps": 4, "cql_samples": 1, "online_steps": 30,
        "critic_warmup": 10, "eval_every": 30, "finetune_eval_episodes": 1, "eval_episodes": 2, "finetune_datasets": ["mpc"], "workers": 1}


def test_tiny_run_rows_and_resume(tmp_path, capsys):
    cfg = SupplyChainExperimentConfig.from_dict({**TINY, "out_dir": str(tmp_path / "a")})
    res = run(cfg)
    assert "estimated wall time on 1 worker:" in capsys.readouterr().out  # printed before the run starts
    rows = res["rows"]
    keys = {"scenario", "dataset", "agent", "algorithm", "score", "capacity_violations"}
    assert all(keys <= set(r) for r in rows)
    combos = {(r["agent"], r["algorithm"]) for r in rows}
    assert combos == {("behaviour", "none"), *((k, a) for k in ("ohio", "end_to_end") for a in ("bc", "iql", "calql_sac"))}
    mpc = next(r for r in rows if r["agent"] == "behaviour")
    assert mpc["score"] == pytest.approx(100.0) and mpc["dataset"] == "mpc"
    assert all(r["capacity_violations"] == 0.0 for r in rows if r["agent"] == "ohio")
    assert res["relabel"]["mpc"]["unexplained"] == 0 and len(res["finetune_curves"]["mpc/ohio"]["env_steps"]) == 2
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert saved["rows"] == rows and (tmp_path / "a" / "supply_chain.png").exists()
    again = run(cfg)  # resumes from the cached jobs: identical numbers
    assert [r["score"] for r in again["rows"]] == [r["score"] for r in rows]


def test_transfer_view_hides_the_capacity_change_and_cli_parses():
    env = SupplyChainEnv("1w10s-cap", "ohio")
    obs, _ = env.reset(seed=0)
    view = observe_as("1w10s", env)(obs).reshape(11, 18)
    assert np.all(view[:10, 16] == 15.0) and np.all(obs.reshape(11, 18)[:10, 16] == 10.0)
    args = build_parser().parse_args(["supply-chain", "--scenario", "1w10s", "--quick", "--set", "episodes=3"])
    assert args.scenario == "1w10s" and args.quick and args.set == ["episodes=3"]
    with pytest.raises(ValueError, match="scenario must be"):
        SupplyChainExperimentConfig.from_dict({"scenario": "1w10s-cap"})


def test_capacity_binding_counts_what_the_env_counts():
    from ohio_layers.envs.supply_chain import collect
    from ohio_layers.envs.supply_chain.policies import STypePolicy
    from ohio_layers.envs.supply_chain.scenario import get_scenario
    from ohio_layers.experiments.supply_chain import capacity_binding

    # order-up-to levels far above the stores' capacity 15: the behaviour ships beyond the room
    data = collect(STypePolicy(levels=np.array([40.0, 40.0, 40.0, 60.0])), 3, seed=5, scenario="1w3s", progress=False)
    cap = np.asarray(get_scenario("1w3s").store_capacity)
    b = capacity_binding(data, cap)
    assert b["share"] > 0.0
    assert b["units_per_episode"] * 3 == pytest.approx(float(np.sum(data["capacity_violations"])), abs=1e-9)
    tighter = capacity_binding(data, cap - 5.0)
    assert tighter["units_per_episode"] > b["units_per_episode"] and tighter["share"] >= b["share"]
    assert capacity_binding(data, cap + 1e6) == {"share": 0.0, "units_per_episode": 0.0}
    with pytest.raises(ValueError, match="store_capacity must have shape \\(3,\\)"):
        capacity_binding(data, cap[:2])


def test_job_keys_hold_only_their_algorithm_settings(tmp_path):
    from ohio_layers.experiments.supply_chain import _job

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mpc.npz").write_bytes(b"x")
    base = SupplyChainExperimentConfig.from_dict({**TINY, "out_dir": str(tmp_path)})
    other = SupplyChainExperimentConfig.from_dict({**TINY, "out_dir": str(tmp_path), "online_steps": 31, "iql_steps": 11})
    job = lambda cfg, algo: _job(cfg, tmp_path, "mpc", "end_to_end", algo, 0)  # noqa: E731
    assert job(base, "bc") == job(other, "bc")  # neither change is a BC setting: its cached result stays current
    assert job(base, "iql") != job(other, "iql") and job(base, "calql") != job(other, "calql")
    assert "online_steps" not in job(base, "iql") and "iql_steps" not in job(base, "calql")
    with pytest.raises(ValueError, match="finetune_eval_episodes must be <= eval_episodes"):
        SupplyChainExperimentConfig.from_dict({**TINY, "finetune_eval_episodes": 3})
