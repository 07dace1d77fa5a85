"""Supply-chain environment, behaviour policies and data collection."""
import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from ohio_layers.data import Dataset
from ohio_layers.envs.supply_chain import SCENARIOS, SupplyChainEnv, collect, make_policy


def _rollout(env, actions_fn, seed):
    obs, _ = env.reset(seed=seed)
    out = [obs]
    done = False
    while not done:
        obs, r, term, trunc, info = env.step(actions_fn(env))
        out += [obs, np.float64(r), info["shipments"], np.float64(info["production"])]
        done = term or trunc
    return out


@pytest.mark.parametrize("mode", ["ohio", "shipments"])
def test_check_env_clean(mode):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(SupplyChainEnv("1w3s", mode), skip_render_check=True)
    other = [str(w.message) for w in caught if "symmetric and normalized" not in str(w.message)]
    assert other == []


def test_scenarios_published_parameters_and_transfer_capacity():
    a, b, c = SCENARIOS["1w3s"], SCENARIOS["1w10s"], SCENARIOS["1w10s-cap"]
    assert (a.n_stores, a.production_capacity, a.factory_capacity, a.store_capacity) == (3, 25.0, 50.0, (15.0,) * 3)
    assert (b.n_stores, b.production_capacity, b.factory_capacity, b.s_levels[-1]) == (10, 60.0, 80.0, 79)
    assert c.store_capacity == (10.0,) * 10 and c.demand_max == b.demand_max and c.s_levels == b.s_levels
    env = SupplyChainEnv("1w10s")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (11 * 18,) and env.graph_edges.shape == (2, 20) and env.edge_attr.shape == (20, 1)


def test_equal_seeds_bit_identical_and_demand_within_noise():
    rng_actions = lambda env: env.action_space.sample()  # noqa: E731
    e1, e2 = SupplyChainEnv("1w10s", "shipments"), SupplyChainEnv("1w10s", "shipments")
    e1.action_space.seed(3), e2.action_space.seed(3)
    a, b = _rollout(e1, rng_actions, 5), _rollout(e2, rng_actions, 5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    e1.reset(seed=6)
    assert not np.array_equal(e1.demand, e2.demand)
    lam = e1.scenario.mean_demand(np.arange(30))
    assert np.all(e1.demand >= np.maximum(0, np.round(lam - 2.5))) and np.all(e1.demand <= np.round(lam + 1.5))


def test_shipments_clipped_to_stock_in_store_order():
    env = SupplyChainEnv("1w3s", "shipments")
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([0.0, 0.0, 0.0, 20.0]))  # factory starts empty: produce
    _, _, _, _, info = env.step(np.array([15.0, 10.0, 10.0, 0.0]))  # 20 in stock
    assert info["shipments"].tolist() == [15.0, 5.0, 0.0] and info["over_order"] == 15.0


def test_ohio_mode_never_ships_beyond_room():
    env = SupplyChainEnv("1w10s-cap", "ohio")
    env.action_space.seed(0)
    for seed in range(3):
        env.reset(seed=seed)
        done = False
        while not done:
            _, _, _, done, info = env.step(env.action_space.sample())
            assert info["capacity_violations"] == 0.0
            assert info["over_order"] == 0.0


def test_mpc_beats_s_type_and_collection_resumes(tmp_path):
    d1 = collect("mpc", 2, seed=4, scenario="1w3s", path=tmp_path / "mpc.npz", progress=False, chunk=1)
    s = collect("s_type", 2, seed=4, scenario="1w3s", progress=False)
    assert d1["rewards"].sum() > s["rewards"].sum()
    assert d1["timeouts"].sum() == 2 and len(d1) == 60 and d1["actions"].shape == (60, 4)
    # interrupted run: the final file and one part are missing, another part survives
    (tmp_path / "mpc.npz").unlink()
    d_first = collect("mpc", 1, seed=4, scenario="1w3s", progress=False)
    parts = tmp_path / "again.npz.parts"
    parts.mkdir()
    d_first.save(parts / "000000_000001_mpc_4.npz")
    d2 = collect("mpc", 2, seed=4, scenario="1w3s", path=tmp_path / "again.npz", progress=False, chunk=1)
    for k in d1.keys():
        assert np.array_equal(d1[k], d2[k]), k
    assert not parts.exists()
    with pytest.raises(ValueError, match="policy must be one of"):
        make_policy("oracle")


def test_mpc_respects_the_hard_factory_capacity_after_rounding():
    # episode 37 of the default 1w10s MPC data (seed 1000 + 37): the LP plans stock kept + production = 80 = Cap_f
    # with a fractional production at t = 17, and rounding it up broke the hard factory capacity by one unit
    env, mpc = SupplyChainEnv("1w10s", "shipments"), make_policy("mpc")
    sc = env.scenario
    env.reset(seed=1037)
    rng = np.random.default_rng(0)
    for _ in range(20):
        snap = env.snapshot()
        action, _ = mpc(env, rng)
        assert snap["Xf"] + snap["P"] - action[:-1].sum() + action[-1] <= sc.factory_capacity
        assert action[-1] == np.round(action[-1]) and 0 <= action[-1] <= sc.production_capacity
        env.step(action)
