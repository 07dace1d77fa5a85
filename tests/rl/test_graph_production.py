"""Edge-conditioned encoder, Dirichlet + Beta production actor, and graph agents (IQL, CQL, BC, SAC) with them."""
import math

import numpy as np
import pytest
import torch
from torch.distributions import Beta, Dirichlet

from ohio_layers.data import Dataset
from ohio_layers.rl import Agent
from ohio_layers.rl.cql import add_mc_returns
from ohio_layers.rl.gnn import DirichletBetaActor, GraphBC, GraphCQL, GraphIQL, GraphSAC, graph_fields
from ohio_layers.rl.graph_layers import EdgeConvEncoder

N, FEAT, C = 4, 3, 25.0  # stores 0..2, factory 3
STAR = np.array([[3, 3, 3, 0, 1, 2], [0, 1, 2, 3, 3, 3]])
ATTR = np.array([[1.0], [2.0], [1.0], [1.0], [2.0], [1.0]])
OBS = N * FEAT


def test_edge_conv_is_equivariant_and_uses_edge_features():
    torch.manual_seed(0)
    enc = EdgeConvEncoder(N, FEAT, STAR, ATTR, layers=2)
    x = torch.randn(5, N, FEAT)
    perm = torch.tensor([2, 0, 1, 3])  # relabel the stores; new node k is old node perm[k]
    inv = torch.argsort(perm)
    enc_p = EdgeConvEncoder(N, FEAT, inv[torch.as_tensor(STAR)].numpy(), ATTR, layers=2)
    enc_p.load_state_dict({k: v for k, v in enc.state_dict().items() if "onehot" not in k}, strict=False)
    assert torch.allclose(enc_p(x[:, perm]), enc(x)[:, perm], atol=1e-5)
    other = EdgeConvEncoder(N, FEAT, STAR, ATTR * 3, layers=2)
    other.load_state_dict({k: v for k, v in enc.state_dict().items() if k != "edge_attr"}, strict=False)
    assert not torch.allclose(other(x), enc(x))
    with pytest.raises(ValueError, match="edge_attr"):
        EdgeConvEncoder(N, FEAT, STAR, np.zeros((6, 0)))


def test_dirichlet_beta_actor_density_is_exact():
    torch.manual_seed(0)
    actor = DirichletBetaActor(OBS, N, STAR, production_node=3, production_max=C, hidden=(16,), edge_attr=ATTR)
    obs = torch.rand(6, OBS)
    dz, dy = actor.distributions(obs)
    a = torch.cat([Dirichlet(torch.full((N,), 2.0)).sample((6,)), torch.rand(6, 1) * C], 1)
    manual = dz.log_prob(a[:, :N]) + dy.log_prob(a[:, N] / C) - math.log(C)
    assert torch.allclose(actor.log_prob(obs, a), manual, atol=1e-5)
    s, logp = actor.sample(obs)
    assert s.shape == (6, N + 1) and torch.allclose(logp, actor.log_prob(obs, s), atol=1e-4)
    det = actor(obs)
    assert torch.allclose(det[:, N], C * dy.mean, atol=1e-4) and bool(((det[:, N] > 0) & (det[:, N] < C)).all())
    s[:, N].sum().backward()
    assert actor.beta_head.net[0].weight.grad.abs().sum() > 0  # reparameterised production


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.random((n, OBS)).astype(np.float32)
    z = rng.dirichlet(np.ones(N), n)
    prod = rng.random(n) * C
    ids = np.repeat(np.arange(n // 8), 8)
    return Dataset({"observations": obs, "next_observations": np.roll(obs, -1, 0), "z": np.c_[z, prod],
                    "rewards": z[:, 0] + prod / C, "terminals": np.zeros(n, bool), "timeouts": np.r_[np.diff(ids) != 0, True],
                    "episode_ids": ids}, {})


@pytest.mark.parametrize("algo", ["iql", "cql", "bc"])
def test_graph_agents_with_production_head_train_save_load(algo, tmp_path):
    graph = graph_fields(N, STAR, edge_attr=ATTR, production_node=3)
    low, high = [0.0] * N + [0.0], [1.0] * N + [C]
    cfg = {**graph, "hidden": (16, 16), "batch_size": 16, "seed": 0}
    data = _data()
    if algo == "iql":
        agent = GraphIQL(OBS, N + 1, low, high, cfg)
    elif algo == "cql":
        agent = GraphCQL(OBS, N + 1, low, high, {**cfg, "cql_alpha": 5.0, "num_samples": 2, "calql": True})
        data = add_mc_returns(data, 0.99)
        batch = agent.make_sampler(data, "z").sample(16)
        with torch.no_grad():
            torch.manual_seed(1)
            full = agent.critic_loss(batch)
            agent.config.cql_alpha = 0.0
            torch.manual_seed(1)
            plain = agent.critic_loss(batch)
            agent.config.cql_alpha = 5.0
        assert not torch.isclose(full["loss"], plain["loss"])  # the conservative penalty is applied
        assert torch.isclose(full["loss"], plain["loss"] + 5.0 * full["cql_penalty"], rtol=1e-5)
    else:
        agent = GraphBC(OBS, N + 1, low, high, cfg)
    hist = agent.fit(data, 20, action_key="z", show_progress=False, log_every=10)
    assert all(np.isfinite(v) for row in hist for v in row.values())
    a = agent.act(np.asarray(data["observations"][:3]))
    assert a.shape == (3, N + 1) and np.allclose(a[:, :N].sum(1), 1, atol=1e-5) and np.all((a[:, N] >= 0) & (a[:, N] <= C))
    agent.save(tmp_path / "a.pt")
    back = Agent.load(tmp_path / "a.pt")
    assert back.config.edge_attr == agent.config.edge_attr and np.allclose(back.act(np.asarray(data["observations"][:3])), a)
    if algo == "cql":
        sac = GraphSAC.from_agent(agent, {"offline_ratio": 0.5})
        assert np.allclose(sac.act(np.asarray(data["observations"][:3])), a, atol=1e-6)
        obs = torch.as_tensor(data["observations"][:4])
        act, logp = sac.random_actions(4, obs)
        assert act.shape == (4, N + 1) and torch.allclose(logp, torch.full((4,), math.lgamma(N)))
