"""Observation statistics of the graph agents: pooled per (node group, feature), not per (node, feature)."""
import numpy as np
import pytest
import torch

from ohio_layers.data import Dataset
from ohio_layers.rl import Agent, GraphSAC, GraphSpec, node_group_stats
from ohio_layers.rl.gnn import GraphIQL, GraphIQLConfig, graph_fields
from ohio_layers.rl.graph_layers import GraphTrunk
from ohio_layers.rl.networks import ObsNormalizer

N, FEAT, C = 4, 3, 25.0  # stores 0..2 (group 0), factory 3 (group 1)
STAR = np.array([[3, 3, 3, 0, 1, 2], [0, 1, 2, 3, 3, 3]])
ATTR = np.ones((6, 1))
OBS = N * FEAT
GROUPS = (0, 0, 0, 1)


def _obs(rows=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (rows, N, FEAT))
    x[:, :, 0] += np.array([0.0, 10.0, 20.0, 100.0])  # stores differ in level: per-node stats would hide it
    x[:, :, 1] = np.array([5.0, 5.0, 5.0, 7.0])  # constant within each group
    x[:, 1, 2] = 3.0  # constant at one store only, varies at the others
    return x


def _dataset(rows=200, seed=0):
    obs = _obs(rows, seed).reshape(rows, OBS).astype(np.float32)
    rng = np.random.default_rng(seed + 1)
    z = np.c_[rng.dirichlet(np.ones(N), rows), rng.random(rows) * C]
    return Dataset({"observations": obs, "next_observations": np.roll(obs, -1, 0), "z": z, "rewards": z[:, 0],
                    "terminals": np.zeros(rows, bool), "timeouts": np.r_[np.zeros(rows - 1, bool), True]})


def test_stats_are_pooled_per_group_and_equal_a_hand_computation():
    x = _obs()
    mean, std = node_group_stats(x.reshape(len(x), OBS), GROUPS)
    mean, std = mean.reshape(N, FEAT), std.reshape(N, FEAT)
    stores = x[:, :3, :].reshape(-1, FEAT)  # 600 values per feature, pooled over the three stores
    for i in range(3):
        np.testing.assert_allclose(mean[i], stores.mean(0), rtol=1e-12)
        np.testing.assert_allclose(std[i, [0, 2]], stores.std(0)[[0, 2]], rtol=1e-12)
    np.testing.assert_allclose(mean[3], x[:, 3].mean(0), rtol=1e-12)
    np.testing.assert_allclose(std[3, [0, 2]], x[:, 3].std(0)[[0, 2]], rtol=1e-12)
    assert mean[0, 0] == pytest.approx(10.0, abs=0.2)  # the store levels 0 / 10 / 20 share one mean ...
    assert std[0, 0] > 8.0  # ... and the spread between stores is kept in the scale
    # constant in its group: centred, std 1 (not ~0)
    np.testing.assert_array_equal(std[:, 1], 1.0)
    np.testing.assert_allclose(mean[:, 1], [5.0, 5.0, 5.0, 7.0])
    # every node its own group reproduces per-(node, feature) statistics (where they are not constant)
    m1, s1 = node_group_stats(x, tuple(range(N)))
    np.testing.assert_allclose(m1.reshape(N, FEAT), x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(s1.reshape(N, FEAT)[:, 0], x.std(0)[:, 0], rtol=1e-12)


def test_permuting_the_stores_permutes_the_normalised_features():
    x = _obs()
    perm = np.array([2, 0, 1, 3])  # relabel stores; new node k is old node perm[k]
    mean, std = node_group_stats(x, GROUPS)
    mean_p, std_p = node_group_stats(x[:, perm], GROUPS)
    norm = ObsNormalizer(OBS)
    norm.set_stats(torch.as_tensor(mean), torch.as_tensor(std))
    norm_p = ObsNormalizer(OBS)
    norm_p.set_stats(torch.as_tensor(mean_p), torch.as_tensor(std_p))
    y = norm(torch.as_tensor(x.reshape(len(x), OBS))).reshape(-1, N, FEAT)
    y_p = norm_p(torch.as_tensor(x[:, perm].reshape(len(x), OBS))).reshape(-1, N, FEAT)
    assert torch.allclose(y_p, y[:, perm], atol=1e-5)
    # per-(node, feature) statistics would map every store's level feature to the same range: the
    # level that tells the stores apart is erased (the failure mode fixed here)
    m1, s1 = node_group_stats(x, tuple(range(N)))
    per_node = ((x - m1.reshape(N, FEAT)) / s1.reshape(N, FEAT))[:, :3, 0].mean(0)
    assert np.allclose(per_node, 0.0, atol=1e-9)
    assert float(y[:, 2, 0].mean() - y[:, 0, 0].mean()) > 1.5


def test_constant_feature_does_not_blow_up_at_deployment():
    data = _dataset()
    agent = GraphIQL(OBS, N + 1, [0.0] * (N + 1), [1.0] * N + [C],
                     {**graph_fields(N, STAR, edge_attr=ATTR, production_node=3, norm_groups=GROUPS),
                      "hidden": (16, 16), "batch_size": 32, "obs_norm": True, "seed": 0})
    agent.set_obs_stats_from(data)
    norm = next(m for m in agent.modules() if isinstance(m, ObsNormalizer))
    obs = torch.as_tensor(_obs(2, seed=5).reshape(2, OBS), dtype=torch.float32)
    obs.view(2, N, FEAT)[:, :, 1] += 1.0  # the constant feature moves by one unit
    obs.view(2, N, FEAT)[:, 1, 2] = 4.0  # the store-1-only constant moves by one unit
    y = norm(obs).reshape(2, N, FEAT)
    assert torch.allclose(y[:, :, 1], torch.ones(2, N))
    assert float(y.abs().max()) < 20.0, y
    assert torch.isfinite(agent(obs)).all()


def test_defaults_and_validation():
    spec = GraphSpec(**graph_fields(N, STAR))
    assert spec.norm_groups == () and spec.node_groups == (0,) * N
    assert GraphSpec(**graph_fields(N, STAR, norm_groups=np.array(GROUPS))).node_groups == GROUPS
    with pytest.raises(ValueError, match="norm_groups"):
        graph_fields(N, STAR, norm_groups=(0, 0, 1))
    with pytest.raises(ValueError, match="norm_groups"):
        GraphIQLConfig(**graph_fields(N, STAR), norm_groups=(0, 0, -1, 1))
    with pytest.raises(ValueError, match="groups"):
        node_group_stats(np.zeros((3, OBS + 1)), GROUPS)
    with pytest.raises(ValueError, match="finite"):
        node_group_stats(np.full((3, OBS), np.nan), GROUPS)


def test_agent_uses_group_stats_and_checkpoint_resume_keeps_them(tmp_path):
    data = _dataset()
    cfg = {**graph_fields(N, STAR, edge_attr=ATTR, production_node=3, norm_groups=GROUPS), "hidden": (16, 16),
           "batch_size": 32, "obs_norm": True, "seed": 0}
    agent = GraphIQL.from_dataset(data, cfg, action_key="z", action_low=[0.0] * (N + 1), action_high=[1.0] * N + [C])
    mean, std = node_group_stats(np.asarray(data["observations"], dtype=np.float64), GROUPS)
    norms = [m for m in agent.modules() if isinstance(m, ObsNormalizer)]
    assert len(norms) >= 3 and bool(agent.obs_stats_set)
    for m in norms:  # actor, critics, value: all the same pooled statistics
        np.testing.assert_allclose(m.mean.numpy(), mean, rtol=1e-6)
        np.testing.assert_allclose(m.std.numpy(), np.maximum(std, m.eps), rtol=1e-6)
    agent.fit(data, 5, action_key="z", show_progress=False)
    agent.save(tmp_path / "a.pt")
    loaded = Agent.load(tmp_path / "a.pt")
    assert loaded.config.norm_groups == GROUPS
    obs = torch.as_tensor(data["observations"][:8])
    assert torch.equal(loaded(obs), agent(obs))
    before = next(m for m in loaded.modules() if isinstance(m, ObsNormalizer)).mean.clone()
    other = _dataset(seed=9)  # resuming training on other data must not reset the statistics
    loaded.fit(other, 2, action_key="z", show_progress=False)
    assert torch.equal(next(m for m in loaded.modules() if isinstance(m, ObsNormalizer)).mean, before)
    sac = GraphSAC.from_agent(loaded)  # online fine-tuning inherits them
    assert sac.config.norm_groups == GROUPS
    for m in (m for m in sac.modules() if isinstance(m, ObsNormalizer)):
        assert torch.equal(m.mean, before)


def test_graph_trunk_is_unchanged_without_stats():
    trunk = GraphTrunk(OBS, N, STAR, 1, ATTR)
    x = torch.randn(3, OBS)
    assert torch.equal(trunk.normalizer(x), x)
