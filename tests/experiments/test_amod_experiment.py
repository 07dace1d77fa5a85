"""AMoD oracle LP, constraint-violation counting and a tiny seeded ``ohio amod`` run."""
import json

import numpy as np
import pytest

from ohio_layers.envs.amod import AMoDEnv, make_policy
from ohio_layers.envs.amod.oracle import oracle_plan, oracle_returns
from ohio_layers.envs.amod.data import flow_violations
from ohio_layers.experiments.amod import QUICK, AMoDExperimentConfig, run

SMALL = {"nlat": 2, "nlon": 2, "horizon": 6, "trips_per_minute": 3.0}


def _episode_return(env, policy_name, seed):
    policy, rng = make_policy(policy_name), np.random.default_rng(seed)
    env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        flows, _ = policy(env, rng)
        _, r, term, trunc, _ = env.step(flows.astype(float))
        total, done = total + r, term or trunc
    return total


def test_oracle_bounds_every_heuristic_and_its_plan_is_executable():
    env = AMoDEnv(scenario_kwargs=SMALL, action_mode="flows")
    for seed in (0, 1, 2):
        env.reset(seed=seed)
        plan = oracle_plan(env)
        assert plan.status == 0 and plan.flows.shape == (6, env.n_edges) and (plan.flows >= -1e-9).all()
        assert plan.value == pytest.approx(plan.revenue - plan.operating_cost - plan.rebalancing_cost)
        for name in ("none", "equal", "proportional", "dispatch", "random"):
            assert _episode_return(env, name, seed) <= plan.value + 1e-6, name
        env.reset(seed=seed)  # executing the (rounded) plan earns at most the bound, and close to it
        got = sum(env.step(np.round(plan.flows[t]))[1] for t in range(6))
        assert got <= plan.value + 1e-6 and got >= 0.8 * plan.value


def test_oracle_equals_no_rebalancing_when_the_fleet_is_ample():
    env = AMoDEnv(scenario_kwargs={**SMALL, "fleet_per_trip": 50.0}, action_mode="flows")
    for seed in (0, 1):
        env.reset(seed=seed)
        value = oracle_plan(env).value
        assert value == pytest.approx(_episode_return(env, "none", seed), rel=1e-7)
    expected = []
    for seed in (0, 1):
        env.reset(seed=seed)
        expected.append(oracle_plan(env).value)
    assert [r.value for r in oracle_returns([0, 1], env=env)] == pytest.approx(expected)


def test_oracle_requires_an_episode_start():
    env = AMoDEnv(scenario_kwargs=SMALL)
    env.reset(seed=0)
    env.step(np.full(env.n_regions, 1.0 / env.n_regions))
    with pytest.raises(ValueError, match="start of an episode"):
        oracle_plan(env)


def test_flow_violations_counts_each_kind():
    src = np.array([0, 0, 1, 1])
    idle = np.array([2.0, 1.0])
    assert flow_violations(idle, np.array([1.0, 1.0, 0.0, 1.0], float), src)["violations"] == 0
    v = flow_violations(idle, np.array([2.0, 1.0, -1.0, 0.5]), src)
    # region 0 sends 3 > 2 (both its edges), edge 2 negative, edge 3 fractional
    assert v == {"violations": 4.0, "negative": 1.0, "fractional": 1.0, "over_regions": 1.0, "excess": 1.0}


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(TypeError, match="bogus"):
        AMoDExperimentConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="behaviours"):
        AMoDExperimentConfig(behaviours=("oracle",))
    with pytest.raises(ValueError, match="finetune"):
        AMoDExperimentConfig(algos=("iql",), finetune=True)
    with pytest.raises(ValueError, match="calql_bc_weight"):
        AMoDExperimentConfig(calql_bc_weight=-1.0)
    with pytest.raises(TypeError, match=r"city has unknown keys \['nlatt'\]"):  # at config time, not in a worker
        AMoDExperimentConfig.from_dict({"city": {"nlatt": 3}})
    cfg = AMoDExperimentConfig.from_dict({**QUICK, "out_dir": "x"})
    assert cfg.seeds == (0,) and cfg.behaviours == ("dispatch", "random")


def test_tiny_amod_run_is_seeded_and_ohio_never_violates(tmp_path):
    values = {"out_dir": str(tmp_path / "a"), "city": SMALL, "behaviours": ["dispatch"], "episodes": 6, "seeds": [0],
              "algos": ["iql", "calql"], "iql_steps": 20, "cql_steps": 10, "online_steps": 24, "eval_every": 12,
              "eval_episodes": 2, "finetune_eval_episodes": 1, "hidden": [16, 16], "batch_size": 16, "workers": 1}
    res = run(AMoDExperimentConfig.from_dict(values))
    summ = res["summary"]
    for algo in ("iql", "calql"):
        assert summ[f"dispatch/ohio/{algo}"]["violations"] == 0  # the LP hands over feasible integer flows
        assert summ[f"dispatch/ohio/{algo}"]["mean"] <= 100.0 + 1e-6  # the oracle bounds every agent
        assert summ[f"dispatch/e2e/{algo}"]["mean"] <= 100.0 + 1e-6
    ft = summ["dispatch/ohio/finetune"]
    assert ft["env_steps"] == [0, 12, 24] and ft["violations"] == 0
    assert res["relabel"]["dispatch"]["counts_reproduced"] == 1.0  # the analytic inverse replays exactly
    assert (tmp_path / "a" / "results.json").exists() and (tmp_path / "a" / "amod.png").exists()
    assert "% oracle" in res["table"] and "fine-tuning OHIO on dispatch data: lowest evaluation" in res["table"]
    # the curves' behaviour reference is the heuristic on the curves' own (first) episodes
    ref = json.loads((tmp_path / "a" / "reference.json").read_text())
    first = ref["heuristics"]["dispatch"]["return"][0] / ref["oracle"]["mean_return"] * 100.0
    assert summ["dispatch/behaviour"]["percent_oracle_curve_episodes"] == pytest.approx(first)
    # same seeds -> same numbers (fresh directory, nothing cached)
    again = run(AMoDExperimentConfig.from_dict({**values, "out_dir": str(tmp_path / "b")}))
    strip = lambda s: {k: {kk: vv for kk, vv in v.items() if kk != "train_seconds"} for k, v in s.items()}  # noqa: E731
    assert json.dumps(strip(again["summary"]), sort_keys=True) == json.dumps(strip(summ), sort_keys=True)
