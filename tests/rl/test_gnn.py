"""Graph actor-critics (ohio_layers.rl.gnn) and the graph agents built on IQL / CQL / SAC."""
import math

import numpy as np
import pytest
import torch
from torch.distributions import Dirichlet

from ohio_layers.data import Dataset
from ohio_layers.rl import SAC
from ohio_layers.rl.base import Agent
from ohio_layers.rl.gnn import (
    DirichletActor, EdgeGaussianActor, GCNEncoder, GraphCQL, GraphIQL, GraphSAC, GraphTwinQ, GraphValue, graph_fields,
    normalized_adjacency,
)

N, FEAT = 4, 3
RING = np.array([[0, 1, 2, 3, 1, 2, 3, 0], [1, 2, 3, 0, 0, 1, 2, 3]])  # symmetric 4-ring
FLOWS = np.array([[i for i in range(N) for j in range(N) if i != j], [j for i in range(N) for j in range(N) if i != j]])
OBS = N * FEAT


def _obs(b, seed=0):
    return torch.rand(b, OBS, generator=torch.Generator().manual_seed(seed))


def test_normalized_adjacency_matches_formula():
    a = normalized_adjacency(np.array([[0, 1], [1, 2]]), 3)  # path 0 -> 1 -> 2 (messages to dst)
    A = torch.tensor([[1.0, 0, 0], [1, 1, 0], [0, 1, 1]])  # A[dst, src] plus self-loops
    d = A.sum(1).rsqrt()
    assert torch.allclose(a, d[:, None] * A * d[None, :])
    with pytest.raises(ValueError, match="edge_index"):
        normalized_adjacency(np.array([[0], [5]]), 3)


def test_gcn_encoder_is_permutation_equivariant():
    torch.manual_seed(0)
    enc = GCNEncoder(N, FEAT, RING, layers=2)
    x = torch.randn(5, N, FEAT)
    perm = torch.tensor([2, 0, 3, 1])  # new node k is old node perm[k]
    inv = torch.argsort(perm)
    enc_p = GCNEncoder(N, FEAT, inv[torch.as_tensor(RING)].numpy(), layers=2)
    enc_p.load_state_dict({k: v for k, v in enc.state_dict().items() if k != "adjacency"}, strict=False)
    assert torch.allclose(enc_p(x[:, perm]), enc(x)[:, perm], atol=1e-6)
    with pytest.raises(ValueError, match="x must have shape"):
        enc(torch.randn(5, N + 1, FEAT))


def test_dirichlet_actor_density_is_exact_and_mode_is_mean():
    torch.manual_seed(0)
    actor = DirichletActor(OBS, N, RING, hidden=(16,))
    obs = _obs(6)
    alpha = actor.concentration(obs)
    z = Dirichlet(torch.full((N,), 2.0)).sample((6,))
    assert torch.allclose(actor.log_prob(obs, z), Dirichlet(alpha).log_prob(z), atol=1e-5)
    mode = actor(obs, deterministic=True)
    assert torch.allclose(mode, alpha / alpha.sum(1, keepdim=True)) and torch.allclose(mode.sum(1), torch.ones(6))
    a, logp = actor.sample(obs)
    assert torch.allclose(a.sum(1), torch.ones(6), atol=1e-6) and bool((a > 0).all())
    assert torch.allclose(logp, actor.log_prob(obs, a), atol=1e-4)
    zeros = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(6, N)  # exact zeros stay finite (floored at z_min)
    assert bool(torch.isfinite(actor.log_prob(obs, zeros)).all())
    a[:, 0].sum().backward()  # reparameterised (a.sum() is constant on the simplex)
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in actor.parameters())


def test_edge_actor_is_a_squashed_gaussian_per_edge():
    torch.manual_seed(0)
    actor = EdgeGaussianActor(OBS, N, RING, FLOWS, 0.0, 10.0, hidden=(16, 16))
    obs = _obs(5)
    a, logp = actor.sample(obs)
    assert a.shape == (5, FLOWS.shape[1]) and bool((a >= 0).all() and (a <= 10).all())
    assert torch.allclose(logp, actor.log_prob(obs, a), atol=1e-3)
    mean, log_std = actor.dist_params(obs)
    assert torch.allclose(actor(obs), 5.0 + 5.0 * torch.tanh(mean))
    # one edge's density only depends on that edge's action (independent per edge)
    a2 = a.clone()
    a2[:, 0] = 3.0
    d = actor.log_prob(obs, a2) - actor.log_prob(obs, a)
    x0, x1 = torch.atanh((a[:, 0] - 5) / 5), torch.atanh(torch.tensor(-0.4))
    one = lambda x: -0.5 * ((x - mean[:, 0]) / log_std[:, 0].exp()) ** 2 - torch.log(1 - torch.tanh(x) ** 2)  # noqa: E731
    assert torch.allclose(d, one(x1) - one(x0), atol=1e-3)


@pytest.mark.parametrize("flow_edges", [None, FLOWS])
def test_critics_shapes_and_action_gradients(flow_edges):
    torch.manual_seed(0)
    da = N if flow_edges is None else FLOWS.shape[1]
    q = GraphTwinQ(OBS, N, RING, 0.0, 1.0, (16, 16), flow_edges=flow_edges, layer_norm=True)
    obs, act = _obs(7), torch.rand(7, da, requires_grad=True)
    q1, q2 = q(obs, act)
    assert q1.shape == q2.shape == (7,) and not torch.allclose(q1, q2)
    q.min(obs, act).sum().backward()
    assert act.grad is not None and bool(act.grad.abs().sum() > 0)
    assert GraphValue(OBS, N, RING, (16,))(obs).shape == (7,)
    with pytest.raises(ValueError, match="action must have shape"):
        q(obs, torch.rand(7, da + 1))


def _node_dataset(n_rows=256, seed=0):
    """Reward = z_0; node 0 is the one whose first feature is 1 (a GNN tells nodes apart only by features)."""
    rng = np.random.default_rng(seed)
    obs = rng.uniform(0, 1, (n_rows, N, FEAT)).astype(np.float32)
    obs[:, :, 0] = 0.0
    obs[:, 0, 0] = 1.0
    obs = obs.reshape(n_rows, OBS)
    z = rng.dirichlet(np.ones(N), n_rows)
    return Dataset({"observations": obs, "next_observations": obs[::-1].copy(), "z": z, "rewards": z[:, 0],
                    "terminals": np.ones(n_rows), "episode_ids": np.repeat(np.arange(n_rows // 8), 8)})


def _config(**kw):
    return {**graph_fields(N, RING), "hidden": (32, 32), "batch_size": 64, "seed": 3, **kw}


def test_graph_iql_learns_to_prefer_the_rewarding_node_and_round_trips(tmp_path):
    data = _node_dataset()
    agent = GraphIQL(OBS, N, 0.0, 1.0, _config(temperature=10.0, expectile=0.9, actor_lr=3e-3, critic_lr=3e-3,
                                               value_lr=3e-3, tau=0.05))
    obs = torch.as_tensor(data["observations"][:32])
    before = agent(obs)[:, 0].mean().item()
    agent.fit(data, 400, action_key="z", show_progress=False)
    after = agent(obs)[:, 0].mean().item()
    assert after > before + 0.1 and after > 0.4, (before, after)
    agent.save(tmp_path / "a.pt")
    loaded = Agent.load(tmp_path / "a.pt")
    assert type(loaded) is GraphIQL and loaded.config.graph_edges == agent.config.graph_edges
    assert torch.equal(loaded(obs), agent(obs))


def test_graph_agents_are_seeded():
    data = _node_dataset()
    outs = []
    for _ in range(2):
        agent = GraphIQL(OBS, N, 0.0, 1.0, _config())
        agent.fit(data, 20, action_key="z", show_progress=False)
        outs.append(agent(torch.as_tensor(data["observations"][:4])))
    assert torch.equal(outs[0], outs[1])


def test_graph_calql_proposals_on_the_simplex_and_finetune_handover():
    from ohio_layers.rl import add_mc_returns

    data = add_mc_returns(_node_dataset(), 0.9)
    cql = GraphCQL(OBS, N, 0.0, 1.0, _config(calql=True, num_samples=3, auto_alpha=False, init_alpha=0.05))
    z, logp = cql.random_actions(500, torch.zeros(1))
    assert torch.allclose(z.sum(1), torch.ones(500), atol=1e-5) and bool((z >= 0).all())
    assert torch.allclose(logp, torch.full((500,), math.lgamma(N)))  # uniform density on the simplex = (n-1)!
    assert abs(z[:, 0].mean().item() - 1 / N) < 0.05
    hist = cql.fit(data, 30, action_key="z", show_progress=False, log_every=10)
    assert all(np.isfinite(v) for row in hist for v in row.values())
    sac = GraphSAC.from_agent(cql, {"offline_ratio": 0.5})
    assert isinstance(sac, GraphSAC) and sac.config.n_nodes == N and sac.config.offline_ratio == 0.5
    obs = torch.as_tensor(data["observations"][:8])
    act = torch.as_tensor(data["z"][:8], dtype=torch.float32)
    assert torch.equal(sac(obs), cql(obs))
    assert torch.equal(sac.q.min(obs, act), cql.q.min(obs, act))  # critics handed over too
    assert torch.equal(sac.log_alpha, cql.log_alpha)


def test_per_edge_agent_and_errors():
    cfg = {**graph_fields(N, RING, FLOWS), "hidden": (16, 16), "batch_size": 16}
    agent = GraphCQL(OBS, FLOWS.shape[1], 0.0, 5.0, cfg)
    a, logp = agent.random_actions(10, torch.zeros(1))
    assert a.shape == (10, FLOWS.shape[1]) and bool((a >= 0).all() and (a <= 5).all())
    assert torch.allclose(logp, torch.full((10,), -FLOWS.shape[1] * math.log(2.0)))
    with pytest.raises(ValueError, match="action_dim must be"):
        GraphIQL(OBS, N, 0.0, 1.0, cfg)  # per-edge graph, node-sized actions
    with pytest.raises(ValueError, match="n_nodes"):
        GraphIQL(OBS, N, 0.0, 1.0, {"hidden": (16,)})
    with pytest.raises(TypeError, match="bogus"):
        GraphIQL(OBS, N, 0.0, 1.0, {**cfg, "bogus": 1})
    with pytest.raises(ValueError, match="graph_edges"):
        GraphIQL(OBS, N, 0.0, 1.0, {"n_nodes": N, "graph_edges": ((0, 1), (9, 0))})


def test_plain_sac_from_agent_still_works():
    from ohio_layers.rl import IQL

    iql = IQL(3, 2, -1.0, 1.0, {"hidden": (8,)})
    sac = SAC.from_agent(iql, {"offline_ratio": 0.3})
    x = torch.randn(4, 3)
    assert torch.equal(sac(x), iql(x)) and sac.config.offline_ratio == 0.3
