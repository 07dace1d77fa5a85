"""Regression tests of issue 16: SAC's simplex target entropy, Monte-Carlo returns of overlapping
windows, ``SAC.from_agent`` normalisers, online rows entering the buffer at once, the agent's own
generator, and the k-step discount stored with relabelled data."""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import random_transitions

from ohio_layers.data import Dataset
from ohio_layers.inverse.relabel import relabel
from ohio_layers.inverse.result import InverseResult
from ohio_layers.rl import BC, CQL, IQL, SAC, GraphSAC, graph_fields
from ohio_layers.rl.base import Agent
from ohio_layers.rl.cql import compute_mc_returns
from ohio_layers.rl.networks import ObsNormalizer

TINY = {"hidden": (16, 16), "batch_size": 32}


def _dataset(n: int = 160, episodes: int = 4):
    """Observations off-centre (mean 3, std 2) so normalisation statistics are visible; no terminals."""
    return random_transitions(n, 3, 2, episodes=episodes, obs_loc=3.0, obs_scale=2.0, terminal_rate=0.0, action_bound=1.0)


# ---------------------------------------------------------------------------- 1. simplex target entropy
def test_dirichlet_sac_default_target_entropy_is_below_the_simplex_maximum():
    n = 9
    ring = np.array([list(range(n)), [(i + 1) % n for i in range(n)]])
    sac = GraphSAC(n * 2, n, 0.0, 1.0, {**graph_fields(n, ring), **TINY})
    max_entropy = -math.lgamma(n)  # Dirichlet(1), the uniform density (n-1)! on the simplex: -10.6
    assert sac.target_entropy < max_entropy
    # at the most spread-out policy (log pi = lgamma(n) everywhere) a temperature step must LOWER alpha;
    # with the old default -n = -9 > -10.6 it raised alpha at every reachable entropy
    loss = sac.alpha_loss(torch.full((64,), math.lgamma(n)))
    loss.backward()
    assert float(sac.log_alpha.grad) > 0
    with pytest.raises(ValueError, match="target_entropy"):
        GraphSAC(n * 2, n, 0.0, 1.0, {**graph_fields(n, ring), **TINY, "target_entropy": -9.0})
    GraphSAC(n * 2, n, 0.0, 1.0, {**graph_fields(n, ring), **TINY, "target_entropy": -9.0, "auto_alpha": False})
    assert SAC(3, 2, config=TINY).target_entropy == -2.0  # the box default is unchanged


# ---------------------------------------------------------------------------- 2. MC returns, overlapping windows
def _windows(rewards: np.ndarray, k: int, stride: int) -> Dataset:
    starts = np.arange(0, len(rewards) - k + 1, stride)
    sums = np.array([rewards[s:s + k].sum() for s in starts])
    return Dataset({"rewards": sums, "terminals": np.zeros(len(starts), bool), "episode_ids": np.zeros(len(starts), int)},
                   {"k": k, "stride": stride})


@pytest.mark.parametrize("stride", [1, 5])
def test_mc_returns_chain_each_window_to_the_one_k_steps_later(stride):
    k, gamma = 5, 0.9
    rewards = np.random.default_rng(1).uniform(0, 1, 23)
    data = _windows(rewards, k, stride)
    starts = np.arange(0, len(rewards) - k + 1, stride)
    expected = []
    for s in starts:  # sum over the windows s, s+k, s+2k, ... that exist, gamma per high-level step
        g, t, j = 0.0, s, 0
        while t + k <= len(rewards):
            g += gamma ** j * rewards[t:t + k].sum()
            t, j = t + k, j + 1
        expected.append(g)
    np.testing.assert_allclose(compute_mc_returns(data, gamma), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="stride"):
        compute_mc_returns(_windows(rewards, 5, 2), gamma)


# ---------------------------------------------------------------------------- 3. from_agent normalisers
def test_sac_from_bc_sets_every_observation_normaliser():
    data = _dataset()
    bc = BC.from_dataset(data, {**TINY, "obs_norm": True})
    sac = SAC.from_agent(bc)
    mean = np.asarray(data["observations"], np.float64).mean(0)
    norms = [m for m in sac.modules() if isinstance(m, ObsNormalizer)]
    assert len(norms) == 3  # actor, q, target_q (the twin critics share one)
    for m in norms:
        np.testing.assert_allclose(m.mean.numpy(), mean, rtol=1e-5)
    assert bool(sac.obs_stats_set)


# ---------------------------------------------------------------------------- 4. online rows at once
class _Walk(gym.Env):
    """1-D walk, reward = the action, never terminates (a TimeLimit truncates it)."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float64)
        self.x = 0.0

    def reset(self, *, seed: Optional[int] = None, options: Optional[Dict[str, Any]] = None):
        super().reset(seed=seed)
        self.x = 0.0
        return np.array([self.x, 0.0]), {}

    def step(self, action):
        a = float(np.clip(action, -1, 1)[0])
        self.x += a
        return np.array([self.x, a]), a, False, False, {}


@pytest.mark.parametrize("limit", [12, 100])
def test_calql_online_rows_enter_the_buffer_at_once_with_current_returns(limit):
    gamma, steps = 0.9, 30
    cql = CQL(2, 1, config={**TINY, "calql": True, "num_samples": 2, "update_after": 10 ** 6, "discount": gamma})
    cql.fit_online(gym.wrappers.TimeLimit(_Walk(), limit), steps, show_progress=False)
    buf = cql.replay
    assert len(buf) == steps  # the unfinished last episode is in the buffer too
    assert float(buf.columns["terminals"][:steps].abs().sum()) == 0.0  # truncation stays non-terminal
    r = buf.columns["rewards"][:steps].double().numpy()
    expected = np.zeros(steps)
    for start in range(0, steps, limit):  # returns-to-go of the rewards seen, per episode
        g = 0.0
        for i in range(min(start + limit, steps) - 1, start - 1, -1):
            g = r[i] + gamma * g
            expected[i] = g
    np.testing.assert_allclose(buf.columns["mc_returns"][:steps].double().numpy(), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- generator
def test_agent_generator_is_its_own_and_resumes(tmp_path):
    data = _dataset()
    a, b = IQL(3, 2, config=TINY), IQL(3, 2, config=TINY)
    assert isinstance(a.generator, torch.Generator) and a.generator.device.type == "cpu"
    torch.manual_seed(123)
    a.fit(data, 6, show_progress=False)
    torch.manual_seed(999)  # another global state: the agent's stream must not see it
    before = torch.get_rng_state()
    b.fit(data, 3, show_progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    b.save(tmp_path / "b.pt")
    c = Agent.load(tmp_path / "b.pt")
    torch.rand(5)
    c.fit(data, 3, show_progress=False)
    for (name, pa), pc in zip(a.state_dict().items(), c.state_dict().values()):
        assert torch.equal(pa, pc), name
    assert torch.equal(a.generator.get_state(), c.generator.get_state())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_agent_generator_lives_on_its_device_and_leaves_the_global_cuda_rng_alone():
    data = _dataset()
    a = IQL(3, 2, config={**TINY, "device": "cuda"})
    assert a.generator.device.type == "cuda"
    before = torch.cuda.get_rng_state()
    a.fit(data, 2, show_progress=False)
    assert torch.equal(torch.cuda.get_rng_state(), before)


# ---------------------------------------------------------------------------- k-step discount
class _Ones:
    """An inverter returning z = 0 with zero residual (relabelling plumbing only)."""

    def __call__(self, dataset: Dataset, starts: np.ndarray) -> InverseResult:
        n = len(starts)
        return InverseResult(z=torch.zeros(n, 2, dtype=torch.float64), residual=torch.zeros(n, dtype=torch.float64),
                             converged=torch.ones(n, dtype=torch.bool), iterations=torch.zeros(n, dtype=torch.long))

    def describe(self) -> str:
        return "zeros"


def test_relabel_stores_the_k_step_discount_and_fit_uses_it(tmp_path):
    low = _dataset(n=40, episodes=2)
    k, gamma = 4, 0.9
    high, _ = relabel(low, _Ones(), k, tmp_path / "hi.npz", progress=False, discount=gamma)
    np.testing.assert_allclose(high["discounts"], gamma ** k)
    assert high.metadata["discount"] == gamma
    np.testing.assert_allclose(Dataset.load(tmp_path / "hi.npz")["discounts"], gamma ** k)
    agent = IQL(3, 2, config={**TINY, "discount": 0.5})
    sampler = agent.make_sampler(high, action_key="z")
    assert torch.allclose(sampler.columns["discounts"], torch.full((len(high),), gamma ** k))
    np.testing.assert_allclose(compute_mc_returns(high, 0.5)[-1], high["rewards"][-1])  # column wins over 0.5
    plain, _ = relabel(low, _Ones(), k, tmp_path / "plain.npz", progress=False)
    with pytest.warns(UserWarning, match="gamma\\*\\*k"):
        agent.make_sampler(plain, action_key="z")
    with pytest.raises(ValueError, match="discount"):
        relabel(low, _Ones(), k, tmp_path / "bad.npz", progress=False, discount=1.5)
