"""AMoD environment: scenarios, matching, dynamics bookkeeping, gymnasium API, behaviour data."""
from __future__ import annotations

import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import ohio_layers.envs.amod as amod
from ohio_layers.envs.amod import AMoDEnv, Scenario, load_scenario_json, match_requests, synthetic_city
from ohio_layers.envs.amod import POLICIES, DispatchToDemand, collect, make_policy
from ohio_layers.envs.amod.scenario import synthetic_reference_json


def small_city(**kw) -> Scenario:
    return synthetic_city(nlat=2, nlon=3, seed=3, **kw)


def run_episode(env, seed, actions=None):
    obs, info = env.reset(seed=seed)
    traj = [obs]
    rewards = []
    rng = np.random.default_rng(0)
    done = False
    while not done:
        a = rng.dirichlet(np.ones(env.unwrapped.n_regions)) if actions is None else actions
        obs, r, term, trunc, info = env.step(a)
        traj.append(obs)
        rewards.append(r)
        done = term or trunc
    return np.stack(traj), np.array(rewards)


# ----------------------------------------------------------------------------------- scenarios
def test_synthetic_city_is_seeded_and_has_time_of_day_demand():
    a, b, c = synthetic_city(seed=1), synthetic_city(seed=1), synthetic_city(seed=2)
    assert np.array_equal(a.demand_rate, b.demand_rate) and np.array_equal(a.price, b.price)
    assert not np.array_equal(a.demand_rate, c.demand_rate)
    per_step = a.demand_rate.sum((1, 2))
    assert per_step.max() > 1.1 * per_step.min()  # morning peak
    assert a.n_regions == 9 and a.n_steps >= a.horizon + 7
    assert (a.reb_time[~np.eye(9, dtype=bool)] >= 1).all() and (np.diag(a.reb_time) == 0).all()
    assert a.topology.shape[0] == 2 and a.topology.shape[1] == 24  # 3x3 grid, 4-neighbour, both directions
    g = a.graph()
    assert g.number_of_edges() == 72 and g.edges[0, 8]["time"] == a.reb_time[0, 8]


def test_builtin_json_scenario_loads_per_reference_aggregation():
    path = amod.builtin_scenario_path("tiny_city")
    sc = load_scenario_json(path, step_minutes=3.0, demand_ratio=2.0, beta=0.5)
    raw = json.loads(path.read_text())
    n = raw["nlat"] * raw["nlon"]
    assert sc.n_regions == n == 3
    # step 0 = minutes 480..482: rates summed over the step and scaled by demand_ratio
    s0 = 60 * 8
    expect = np.zeros((n, n))
    for r in raw["demand"]:
        if s0 <= r["time_stamp"] < s0 + 3:
            expect[r["origin"], r["destination"]] += 2.0 * r["demand"]
    np.testing.assert_allclose(sc.demand_rate[0], expect)
    assert sc.beta == pytest.approx(1.5)
    acc = raw["totalAcc"][0]["acc"]
    assert (sc.initial_idle == acc // n).all()
    assert sc.topology.shape == (2, len(raw["topology_graph"]))
    r01 = next(r["reb_time"] for r in raw["rebTime"] if r["origin"] == 0 and r["destination"] == 1)
    assert sc.reb_time[0, 1] == max(1, round(r01 / 3))


def test_json_round_trip_of_the_generator(tmp_path):
    data = synthetic_reference_json(nlat=2, nlon=1, minutes=60, seed=5)
    p = tmp_path / "city.json"
    p.write_text(json.dumps(data))
    sc = load_scenario_json(p, horizon=5)
    assert sc.n_regions == 2 and sc.horizon == 5 and sc.demand_rate.sum() > 0
    del data["rebTime"]
    p.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="rebTime"):
        load_scenario_json(p)


def test_scenario_validation_names_the_field():
    sc = small_city()
    with pytest.raises(ValueError, match="initial_idle"):
        Scenario("x", sc.demand_rate, sc.price, sc.trip_time, sc.reb_time, -sc.initial_idle, 1.0)
    with pytest.raises(ValueError, match="reb_time"):
        Scenario("x", sc.demand_rate, sc.price, sc.trip_time, sc.reb_time[:2], sc.initial_idle, 1.0)
    with pytest.raises(ValueError, match="demand_rate"):
        Scenario("x", -sc.demand_rate, sc.price, sc.trip_time, sc.reb_time, sc.initial_idle, 1.0)


# ----------------------------------------------------------------------------------- matching
def test_matching_is_the_fractional_knapsack_optimum():
    from scipy.optimize import linprog

    rng = np.random.default_rng(0)
    for _ in range(20):
        n = 5
        idle = rng.integers(0, 8, n)
        req = rng.poisson(2.0, (n, n))
        price = rng.uniform(1, 10, (n, n))
        f = match_requests(idle, req, price)
        assert (f >= 0).all() and (f <= req).all() and (f.sum(1) <= idle).all()
        A = np.kron(np.eye(n), np.ones((1, n)))
        res = linprog(-price.ravel(), A_ub=A, b_ub=idle, bounds=list(zip(np.zeros(n * n), req.ravel())), method="highs")
        assert abs(float((f * price).sum()) + res.fun) < 1e-9
    # ties in price: lower destination first
    assert match_requests(np.array([1, 0]), np.array([[1, 1], [0, 0]]), np.ones((2, 2))).tolist() == [[1, 0], [0, 0]]


# ----------------------------------------------------------------------------------- gymnasium
@pytest.mark.parametrize("kwargs", [
    {},
    {"scenario": str(amod.builtin_scenario_path("tiny_city"))},
    {"scenario": small_city(), "action_mode": "flows"},
])
def test_check_env_and_registered_id(kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gymnasium's advice about non-[-1, 1] Box spaces
        env = gym.make(amod.ENV_ID, **kwargs)
        check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    n = env.unwrapped.n_regions
    assert obs.shape == (n * (1 + 2 * 6),)
    assert env.unwrapped.node_features(obs).shape == (n, 13)
    steps = 0
    done = False
    while not done:
        obs, r, term, trunc, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and np.isfinite(r) and not term
        steps += 1
        done = trunc
    assert steps == 20
    with pytest.raises(RuntimeError, match="reset"):
        env.unwrapped.step(env.action_space.sample())


def test_seeded_runs_are_identical_and_seeds_differ():
    e1, e2 = AMoDEnv(small_city()), AMoDEnv(small_city())
    o1, r1 = run_episode(e1, seed=7)
    o2, r2 = run_episode(e2, seed=7)
    assert np.array_equal(o1, o2) and np.array_equal(r1, r2)
    o3, _ = run_episode(e1, seed=8)
    assert not np.array_equal(o1, o3)


def test_fleet_is_conserved_and_reward_adds_up():
    sc = small_city()
    env = AMoDEnv(sc)
    env.reset(seed=1)
    fleet = sc.fleet_size
    rng = np.random.default_rng(1)
    for _ in range(sc.horizon):
        t = env.time_step
        in_transit = env._arrivals[t + 1:].sum()
        assert env.idle.sum() + in_transit == fleet
        _, r, _, trunc, info = env.step(rng.dirichlet(np.ones(sc.n_regions)))
        assert r == pytest.approx(info["revenue"] - info["operating_cost"] - info["rebalancing_cost"])
        assert info["served"] + info["lost_demand"] == info["requests"]
        expect_cost = sc.beta * float((env.reb_steps * info["flows"]).sum())
        assert info["rebalancing_cost"] == pytest.approx(expect_cost)
        # the controller reached its target counts
        state = info["state"]
        after = state - np.bincount(env.edge_index[0], info["flows"], sc.n_regions) + np.bincount(env.edge_index[1], info["flows"], sc.n_regions)
        assert (after >= 0).all() and after.sum() == state.sum()


def test_flows_mode_clips_greedily_per_origin():
    env = AMoDEnv(small_city(), action_mode="flows")
    env.reset(seed=0)
    idle = np.array([2, 0, 5, 1, 0, 3])
    x = np.zeros(env.n_edges)
    out0 = [e for e, (i, _) in enumerate(env.edges) if i == 0]
    x[out0[0]], x[out0[1]], x[out0[2]] = 1.7, 4.0, 3.0
    x[[e for e, (i, _) in enumerate(env.edges) if i == 2][0]] = -2.0
    clipped = env.clip_flows(idle, x)
    assert clipped[out0[0]] == 1 and clipped[out0[1]] == 1 and clipped[out0[2]] == 0
    assert clipped.sum() == 2 and (clipped >= 0).all()
    with pytest.raises(ValueError, match="action"):
        env.clip_flows(idle, x[:-1])


def test_distribution_action_is_normalised():
    env = AMoDEnv(small_city())
    np.testing.assert_allclose(env.normalize_distribution(np.zeros(6)), np.full(6, 1 / 6))
    np.testing.assert_allclose(env.normalize_distribution([2, 0, 0, 0, 0, -1]), [1, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="action"):
        env.normalize_distribution(np.ones(5))


# ----------------------------------------------------------------------------------- behaviour data
def test_collect_is_seeded_and_has_the_dataset_layout():
    sc = small_city()
    ds = collect("proportional", episodes=2, seed=4, scenario=sc, progress=False)
    again = collect("proportional", episodes=2, seed=4, scenario=sc, progress=False)
    assert len(ds) == 2 * sc.horizon
    for k in ds.keys():
        assert np.array_equal(ds[k], again[k]), k
    n, E = sc.n_regions, sc.n_regions * (sc.n_regions - 1)
    assert ds["states"].shape == (40, n) and ds["actions"].shape == (40, E) and ds["z_true"].shape == (40, n)
    assert ds["timeouts"].sum() == 2 and not ds["terminals"].any()
    assert np.array_equal(ds["next_states"][:19], ds["states"][1:20])
    assert ds.metadata["edge_index"] == AMoDEnv(sc).edge_index.tolist()
    other = collect("proportional", episodes=2, seed=5, scenario=sc, progress=False)
    assert not np.array_equal(ds["rewards"], other["rewards"])


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_behaviour_policy_produces_feasible_integer_flows(name):
    sc = small_city()
    ds = collect(make_policy(name), episodes=1, seed=0, scenario=sc, progress=False)
    x, s = ds["actions"], ds["states"]
    assert (x == np.round(x)).all() and (x >= 0).all()
    env = AMoDEnv(sc)
    out = np.stack([np.bincount(env.edge_index[0], row, sc.n_regions) for row in x])
    assert (out <= s).all()
    if name == "none":
        assert x.sum() == 0
    assert ("z_true" in ds) == POLICIES[name].hierarchical


def test_dispatch_policy_sends_vehicles_to_forecast_requests():
    sc = small_city()
    env = AMoDEnv(sc, action_mode="flows")
    env.reset(seed=2)
    env._idle = np.zeros(sc.n_regions, dtype=np.int64)
    env._idle[0] = 50  # every idle vehicle in region 0
    flows, z = DispatchToDemand(lookahead=6)(env, np.random.default_rng(0))
    assert z is None and (flows == np.round(flows)).all() and (flows >= 0).all()
    open_req = np.round(env.forecast(6) / 6)
    inflow = np.bincount(env.edge_index[1], flows, sc.n_regions)
    stay = 50 - flows.sum()
    # every open request outside region 0 is served from region 0 (enough vehicles), none beyond
    assert np.array_equal(inflow[1:], open_req[1:])
    assert (np.bincount(env.edge_index[0], flows, sc.n_regions)[1:] == 0).all() and stay >= 0
    with pytest.raises(ValueError, match="action_mode='flows'"):
        collect("equal", episodes=1, env=AMoDEnv(sc), progress=False)
    with pytest.raises(ValueError, match="unknown behaviour policy"):
        make_policy("oracle")
