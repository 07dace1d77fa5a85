"""Tests of ohio_layers.rl: networks, IQL, BC, CQL/Cal-QL, SAC, the hierarchical agent and wrapper."""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import Tensor

from ohio_layers.data import Dataset
from ohio_layers.lowlevel import LowLevelController
from ohio_layers.rl.agent import Decision, HierarchicalAgent, HighLevelActionWrapper
from ohio_layers.rl.base import Agent, ReplayBuffer, TransitionSampler
from ohio_layers.rl.bc import BC, BCConfig
from ohio_layers.rl.cql import CQL, CQLConfig, add_mc_returns, compute_mc_returns
from ohio_layers.rl.iql import IQL, IQLConfig, iql_critic_loss
from ohio_layers.rl.networks import TanhGaussianActor
from ohio_layers.rl.sac import SAC, SACConfig

TINY = {"hidden": (32, 32), "batch_size": 64}


def random_dataset(n: int = 200, do: int = 3, da: int = 2, seed: int = 0, episodes: int = 4) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset({
        "observations": rng.normal(size=(n, do)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, da)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "next_observations": rng.normal(size=(n, do)).astype(np.float32),
        "terminals": rng.random(n) < 0.05,
        "episode_ids": np.repeat(np.arange(episodes), n // episodes),
    })


def params_of(module: torch.nn.Module) -> Dict[int, str]:
    return {id(p): name for name, p in module.named_parameters()}


def grads_reach(agent: Agent, loss: Tensor) -> set:
    """Names of the agent's top-level submodules whose parameters get a non-zero gradient from ``loss``."""
    agent.zero_grad(set_to_none=True)
    for p in agent.parameters():
        p.grad = None
    loss.backward(retain_graph=True)
    reached = set()
    for name, p in agent.named_parameters():
        if p.grad is not None and bool((p.grad != 0).any()):
            reached.add(name.split(".")[0])
    agent.zero_grad(set_to_none=True)
    return reached


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize("cls", [IQLConfig, BCConfig, CQLConfig, SACConfig])
def test_unknown_config_key_is_named(cls):
    with pytest.raises(TypeError, match="expectil_typo"):
        cls.from_dict({"expectil_typo": 0.7})
    assert cls.from_dict(cls().to_dict()) == cls()


def test_agent_rejects_unknown_config_key_and_bad_values():
    with pytest.raises(TypeError, match="temprature"):
        IQL(3, 2, config={"temprature": 3.0})
    with pytest.raises(ValueError, match="expectile"):
        IQLConfig(expectile=1.5)
    with pytest.raises(ValueError, match="action_low"):
        IQL(3, 2, action_low=[0.0, 1.0], action_high=[1.0, 1.0], config=TINY)


# ----------------------------------------------------------------------------- networks
def test_tanh_log_prob_matches_change_of_variables():
    """exp(log_prob) equals the derivative of the exact CDF of the squashed, scaled Gaussian."""
    torch.manual_seed(0)
    low, high = torch.tensor([-3.0, 0.5]), torch.tensor([5.0, 0.7])
    actor = TanhGaussianActor(2, 2, low, high, hidden=(8,)).double()
    obs = torch.randn(1, 2, dtype=torch.float64)
    mean, log_std = actor.dist_params(obs)
    normal = torch.distributions.Normal(mean[0], log_std[0].exp())

    def cdf(a: Tensor) -> Tensor:  # P(A_d <= a_d) per dimension
        u = (a - 0.5 * (high + low).double()) / (0.5 * (high - low).double())
        return normal.cdf(torch.atanh(u))

    for frac in (0.1, 0.3, 0.5, 0.77, 0.95):
        a = (low + frac * (high - low)).double()[None]
        h = 1e-6 * (high - low).double()
        dens = (cdf(a[0] + h) - cdf(a[0] - h)) / (2 * h)  # per-dimension density (independent dims)
        expected = torch.log(dens).sum()
        assert torch.allclose(actor.log_prob(obs, a)[0], expected, rtol=1e-6, atol=1e-6)
    # sample() reports the same density as log_prob() of its own sample
    a, logp = actor.sample(obs.repeat(5, 1))
    assert torch.allclose(actor.log_prob(obs.repeat(5, 1), a), logp, atol=1e-6)
    assert bool(((a >= low.double()) & (a <= high.double())).all())


def test_log_prob_finite_at_bounds_and_deterministic_mode():
    actor = TanhGaussianActor(3, 2, [-8 * math.pi, -1.0], [8 * math.pi, 1.0], hidden=(8,))
    obs = torch.randn(4, 3)
    at_bounds = torch.tensor([[8 * math.pi, -1.0]]).repeat(4, 1)
    lp = actor.log_prob(obs, at_bounds)
    assert bool(torch.isfinite(lp).all())
    mean, _ = actor.dist_params(obs)
    expected = torch.tensor([8 * math.pi, 1.0]) * torch.tanh(mean)
    assert torch.allclose(actor(obs), expected, atol=1e-5)


# ----------------------------------------------------------------------------- IQL
def test_iql_losses_reach_only_their_network():
    agent = IQL(3, 2, config=TINY)
    batch = TransitionSampler(random_dataset(), obs_dim=3, action_dim=2).sample(32)
    losses = agent.losses(batch)
    assert grads_reach(agent, losses["loss_value"]) == {"value"}
    assert grads_reach(agent, losses["loss_q"]) == {"q"}
    assert grads_reach(agent, losses["loss_actor"]) == {"actor"}


def test_iql_value_is_regressed_at_s_not_next_state():
    """One-step episodes: s=A -> s'=B with r=1, s=B -> s'=A with r=0 (all terminal).

    Q(A, .) = 1 and Q(B, .) = 0, so V(A) must go to 1 and V(B) to 0. Evaluating the expectile target
    at s' (the reference code's bug) would swap them.
    """
    n = 256
    rng = np.random.default_rng(0)
    is_a = np.arange(n) % 2 == 0
    obs = np.where(is_a[:, None], [[1.0, 0.0]], [[0.0, 1.0]]).astype(np.float32)
    data = Dataset({"observations": obs, "next_observations": obs[:, ::-1].copy(),
                    "actions": rng.uniform(-1, 1, (n, 1)).astype(np.float32),
                    "rewards": is_a.astype(np.float32), "terminals": np.ones(n, bool)})
    agent = IQL(2, 1, config={**TINY, "expectile": 0.7, "critic_lr": 3e-3, "value_lr": 3e-3, "tau": 0.05})
    agent.fit(data, 400, show_progress=False)
    with torch.no_grad():
        v = agent.value(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert abs(float(v[0]) - 1.0) < 0.1 and abs(float(v[1])) < 0.1, v


def test_critic_target_uses_row_discounts():
    agent = IQL(3, 2, config=TINY)
    batch = TransitionSampler(random_dataset(), obs_dim=3, action_dim=2).sample(16)
    batch["terminals"] = torch.zeros(16)
    with torch.no_grad():
        q1, q2 = agent.q(batch["observations"], batch["actions"])
        v_next = agent.value(batch["next_observations"])
    batch["discounts"] = torch.full((16,), 0.5)
    target = batch["rewards"] + 0.5 * v_next
    expected = (q1 - target).pow(2).mean() + (q2 - target).pow(2).mean()
    assert torch.allclose(iql_critic_loss(agent.q, agent.value, batch), expected)
    data = random_dataset()
    data.arrays["gammas"] = np.full(len(data), 0.25)
    sampler = agent.make_sampler(data, discount_key="gammas")
    assert torch.all(sampler.sample(8)["discounts"] == 0.25)


def bandit(n: int = 512, seed: int = 0) -> Dataset:
    """One state; behaviour = 50/50 mix of a=-0.5 (reward 0) and a=+0.5 (reward 1), plus noise."""
    rng = np.random.default_rng(seed)
    good = rng.random(n) < 0.5
    actions = (np.where(good, 0.5, -0.5) + 0.05 * rng.normal(size=n)).astype(np.float32)[:, None]
    obs = np.ones((n, 1), np.float32)
    return Dataset({"observations": obs, "actions": actions, "rewards": good.astype(np.float32),
                    "next_observations": obs, "terminals": np.ones(n, bool)})


def test_iql_prefers_high_reward_action_over_behaviour_mix():
    data = bandit()
    iql = IQL(1, 1, config={**TINY, "temperature": 10.0, "expectile": 0.7, "actor_lr": 3e-3, "critic_lr": 3e-3,
                            "value_lr": 3e-3, "tau": 0.05})
    iql.fit(data, 400, show_progress=False)
    bc = BC(1, 1, config={**TINY, "lr": 3e-3})
    bc.fit(data, 400, show_progress=False)
    a_iql = float(iql.act(np.ones(1))[0])
    a_bc = float(bc.act(np.ones(1))[0])
    assert a_iql > 0.35, a_iql
    assert a_iql > a_bc + 0.2, (a_iql, a_bc)


def test_seeded_fits_are_identical_and_leave_global_rng_alone():
    data = random_dataset()
    before = torch.get_rng_state()
    a, b = IQL(3, 2, config={**TINY, "seed": 3}), IQL(3, 2, config={**TINY, "seed": 3})
    a.fit(data, 15, show_progress=False)
    b.fit(data, 15, show_progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    c = IQL(3, 2, config={**TINY, "seed": 4})
    assert not torch.equal(a.actor.net.net[0].weight, c.actor.net.net[0].weight)


def test_save_load_roundtrip_and_resume(tmp_path):
    data = random_dataset()
    agent = IQL.from_dataset(data, {**TINY, "obs_norm": True}, action_low=-1.0, action_high=1.0)
    agent.fit(data, 10, show_progress=False)
    path = tmp_path / "iql.pt"
    agent.save(path)
    loaded = Agent.load(path)
    assert isinstance(loaded, IQL) and loaded.step == agent.step and loaded.config == agent.config
    obs = np.random.default_rng(1).normal(size=(7, 3)).astype(np.float32)
    np.testing.assert_array_equal(agent.act(obs), loaded.act(obs))
    assert bool(loaded.obs_stats_set)
    # training resumes identically (optimizer state and RNG stream are saved)
    agent.fit(data, 5, show_progress=False)
    loaded.fit(data, 5, show_progress=False)
    for (k, va), vb in zip(agent.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(va, vb), k
    with pytest.raises(TypeError, match="BC"):
        BC.load(path)
    assert not list(tmp_path.glob("*.tmp"))


def test_obs_normalisation_uses_dataset_stats():
    data = random_dataset()
    data.arrays["observations"] = data["observations"] * 10 + 5
    agent = IQL.from_dataset(data, {**TINY, "obs_norm": True})
    np.testing.assert_allclose(agent.actor.normalizer.mean.numpy(), data["observations"].mean(0), rtol=1e-5)
    np.testing.assert_allclose(agent.q.normalizer.std.numpy(), data["observations"].std(0), rtol=1e-5)
    assert torch.all(agent.action_low < torch.as_tensor(data["actions"].min(0)))


def test_action_key_and_bad_dataset_errors():
    data = random_dataset()
    data.arrays["z"] = data.arrays.pop("actions")
    agent = IQL(3, 2, config=TINY)
    agent.fit(data, 2, action_key="z", show_progress=False)
    with pytest.raises(KeyError, match="actions"):
        agent.fit(data, 2, show_progress=False)
    with pytest.raises(ValueError, match="'z'"):
        IQL(3, 5, config=TINY).fit(data, 2, action_key="z", show_progress=False)
    with pytest.warns(UserWarning, match="outside"):
        IQL(3, 2, -0.1, 0.1, config=TINY).fit(data, 1, action_key="z", show_progress=False)


# ----------------------------------------------------------------------------- BC
def test_bc_recovers_linear_policy():
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, size=(1024, 2)).astype(np.float32)
    W = np.array([[0.6, -0.3], [0.2, 0.5]], np.float32)
    act = obs @ W.T + 0.01 * rng.normal(size=(1024, 2)).astype(np.float32)
    data = Dataset({"observations": obs, "actions": act})
    bc = BC(2, 2, -2.0, 2.0, {**TINY, "lr": 3e-3, "batch_size": 128})
    bc.fit(data, 600, show_progress=False)
    test = rng.uniform(-0.8, 0.8, size=(64, 2)).astype(np.float32)
    err = np.abs(bc.act(test) - test @ W.T).max()
    assert err < 0.08, err
    assert bc.history and "loss_actor" in bc.history[-1]


# ----------------------------------------------------------------------------- CQL / Cal-QL / SAC
def test_cql_losses_reach_only_their_parameters():
    data = add_mc_returns(random_dataset(), 0.9)
    agent = CQL(3, 2, config={**TINY, "calql": True, "num_samples": 3})
    batch = agent.make_sampler(data).sample(16)
    losses = agent.losses(batch)
    assert grads_reach(agent, losses["loss_q"]) == {"q"}
    assert grads_reach(agent, losses["loss_actor"]) == {"actor"}
    assert grads_reach(agent, losses["loss_alpha"]) == {"log_alpha"}


def test_calql_lower_bound_only_raises_the_penalty_term():
    data = add_mc_returns(random_dataset(), 0.9)
    cql = CQL(3, 2, config={**TINY, "num_samples": 4})
    cal = CQL(3, 2, config={**TINY, "num_samples": 4, "calql": True})
    cal.load_state_dict(cql.state_dict())
    batch = cal.make_sampler(data).sample(16)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        p_cql = cql.conservative_penalty(batch)["lse"]
    batch_low = dict(batch, mc_returns=torch.full((16,), -1e6))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        p_low = cal.conservative_penalty(batch_low)["lse"]
    batch_high = dict(batch, mc_returns=torch.full((16,), 50.0))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        p_high = cal.conservative_penalty(batch_high)["lse"]
    assert torch.allclose(p_cql, p_low)  # a bound that never binds changes nothing
    assert float(p_high) > float(p_cql) + 40  # a binding bound lifts the policy Q-values
    with pytest.raises(KeyError, match="mc_returns"):
        cal.make_sampler(random_dataset())


def test_cql_without_importance_sampling_weighs_proposals_equally():
    class ConstantQ(torch.nn.Module):  # Q = 2 everywhere: the logsumexp then only sees the weights
        def forward(self, obs, action):
            q = torch.full((obs.shape[0],), 2.0)
            return q, q

    data = random_dataset()
    n = 4
    plain = CQL(3, 2, config={**TINY, "num_samples": n, "importance_sampling": False})
    weighted = CQL(3, 2, config={**TINY, "num_samples": n})
    for agent in (plain, weighted):
        agent.q = ConstantQ()
    batch = plain.make_sampler(data).sample(16)
    out = plain.conservative_penalty(batch)
    # lse over 3 n equal values = 2 + log(3 n); the penalty subtracts Q(s, a_data) = 2
    assert float(out["lse"]) == pytest.approx(2.0 + math.log(3 * n), abs=1e-5)
    assert float(out["penalty"]) == pytest.approx(2 * math.log(3 * n), abs=1e-5)
    # with importance weights the proposals' densities enter: uniform ones have log mu = -2 log 2
    assert abs(float(weighted.conservative_penalty(batch)["lse"]) - (2.0 + math.log(3 * n))) > 0.1


def test_sac_bc_weight_adds_the_batch_log_likelihood_and_pulls_the_actor_to_the_data():
    data = random_dataset(n=256, do=3, da=2)
    data.arrays["actions"] = np.tile(np.array([[0.6, -0.3]], np.float32), (256, 1))  # one action everywhere
    plain, cloned = SAC(3, 2, config={**TINY, "seed": 3}), SAC(3, 2, config={**TINY, "seed": 3, "bc_weight": 0.5})
    batch = plain.make_sampler(data).sample(32)
    torch.manual_seed(0)
    loss_plain = plain.actor_loss(batch)["loss"]
    torch.manual_seed(0)  # same reparameterisation noise: the losses differ by the BC term only
    loss_cloned = cloned.actor_loss(batch)["loss"]
    nll = -plain.actor.log_prob(batch["observations"], batch["actions"]).mean()
    assert (loss_cloned - loss_plain).item() == pytest.approx(0.5 * nll.item(), rel=1e-5)
    assert grads_reach(cloned, loss_cloned) == {"actor"}
    # trained with a strong BC term and a frozen critic, the deterministic action moves to the data's
    strong = SAC(3, 2, config={**TINY, "seed": 3, "bc_weight": 10.0, "critic_lr": 1e-12, "init_alpha": 1e-3,
                               "auto_alpha": False})
    strong.fit(data, 300, show_progress=False)
    acts = strong.act(np.asarray(data["observations"][:50]))
    np.testing.assert_allclose(acts, np.tile([0.6, -0.3], (50, 1)), atol=0.1)
    with pytest.raises(ValueError, match="bc_weight"):
        SACConfig(bc_weight=-1.0)


def test_mc_returns():
    data = Dataset({"rewards": np.array([1.0, 1.0, 1.0, 2.0, 2.0]), "terminals": np.array([0, 0, 1, 0, 0], bool),
                    "episode_ids": np.array([0, 0, 0, 1, 1])})
    np.testing.assert_allclose(compute_mc_returns(data, 0.5), [1.75, 1.5, 1.0, 3.0, 2.0])


def test_cql_fit_and_sac_finetune_online(tmp_path):
    data = add_mc_returns(random_dataset(n=128, do=2, da=1), 0.9)
    data.arrays["actions"] = data["actions"][:, :1]
    cql = CQL(2, 1, config={**TINY, "calql": True, "num_samples": 2, "batch_size": 32, "update_after": 8})
    cql.fit(data, 10, show_progress=False)
    assert "cql_penalty" in cql.history[-1]
    env = gym.wrappers.TimeLimit(PointEnv(), 10)
    cql.fit_online(env, 30, offline=data, show_progress=False, log_every=15)
    assert cql.history[-1]["env_step"] == 30 and "episode_return" in cql.history[-1]
    assert "mc_returns" in cql.replay.columns and len(cql.replay) == 30
    sac = SAC.from_agent(cql, {"update_after": 8, "batch_size": 16})
    assert sac.config.hidden == (32, 32)
    np.testing.assert_array_equal(sac.act(np.zeros(2, np.float32)), cql.act(np.zeros(2, np.float32)))
    sac.fit_online(env, 20, show_progress=False, log_every=10)
    assert sac.step > 0
    sac.save(tmp_path / "sac.pt")
    assert isinstance(Agent.load(tmp_path / "sac.pt"), SAC)
    with pytest.raises(TypeError, match="buffersize"):
        SAC.from_agent(cql, {"buffersize": 3})
    # an IQL-pretrained agent (state-independent std) fine-tunes too, critics included
    iql = IQL(2, 1, config=TINY)
    sac2 = SAC.from_agent(iql)
    assert not sac2.config.state_dependent_std
    assert torch.equal(sac2.q.q1.net[0].weight, iql.q.q1.net[0].weight)


def test_sac_critic_warmup_trains_only_the_critics_first():
    env = gym.wrappers.TimeLimit(PointEnv(), 10)
    sac = SAC(2, 1, config={**TINY, "batch_size": 8, "update_after": 1, "critic_warmup": 12, "init_alpha": 0.5})
    actor0, q0 = [p.detach().clone() for p in sac.actor.parameters()], [p.detach().clone() for p in sac.q.parameters()]
    sac.fit_online(env, 12, show_progress=False, log_every=12)
    assert all(torch.equal(a, b) for a, b in zip(actor0, sac.actor.parameters()))  # actor frozen during the warm-up
    assert sac.alpha.item() == pytest.approx(0.5) and "loss_actor" not in sac.history[-1]
    assert not all(torch.equal(a, b) for a, b in zip(q0, sac.q.parameters())) and sac.step == 12
    sac.fit_online(env, 13, show_progress=False, log_every=13)  # a new call warms up again: 1 actor update
    assert not all(torch.equal(a, b) for a, b in zip(actor0, sac.actor.parameters())) and "loss_actor" in sac.history[-1]
    with pytest.raises(ValueError, match="critic_warmup"):
        SACConfig(critic_warmup=-1)


def test_replay_buffer_wraps_and_mixes():
    buf = ReplayBuffer(4)
    buf.add(x=np.arange(3.0), y=np.ones((3, 2)))
    buf.add(x=np.arange(3.0, 6.0), y=np.zeros((3, 2)))
    assert len(buf) == 4 and sorted(buf.columns["x"].tolist()) == [2.0, 3.0, 4.0, 5.0]
    with pytest.raises(KeyError, match="columns"):
        buf.add(x=np.zeros(1))


# ----------------------------------------------------------------------------- hierarchy
class PointEnv(gym.Env):
    """1-D double integrator, obs = state = (x, v); reward -|x|; terminates when |x| > 5."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float64)
        self.state = np.zeros(2)
        self.n_steps = 0

    def reset(self, *, seed: Optional[int] = None, options: Optional[Dict[str, Any]] = None):
        super().reset(seed=seed)
        self.state = np.array([self.np_random.uniform(-1, 1), 0.0])
        self.n_steps = 0
        return self.state.copy(), {}

    def step(self, action):
        a = float(np.clip(action, -1, 1)[0])
        x, v = self.state
        v = v + 0.1 * a
        x = x + 0.1 * v
        self.state = np.array([x, v])
        self.n_steps += 1
        return self.state.copy(), -abs(x), bool(abs(x) > 5), False, {"a": a}


class RelativePD(LowLevelController):
    """1-D PD to the set-point ``x0 + z`` where ``x0`` is the position at the decision start (context)."""

    def __init__(self, horizon: int = 3, action_bound: float = 1.0) -> None:
        super().__init__(state_dim=2, z_dim=1, action_dim=1, horizon=horizon, z_low=-2.0, z_high=2.0,
                         action_low=-action_bound, action_high=action_bound)

    def context(self, state0: Tensor) -> Dict[str, Tensor]:
        return {"x0": state0[:, :1]}

    def law(self, state: Tensor, z: Tensor, context: Dict[str, Tensor], step: int) -> Tensor:
        return 2.0 * (context["x0"] + z - state[:, :1]) - 1.0 * state[:, 1:]


def get_state(env: gym.Env) -> np.ndarray:
    return env.unwrapped.state.copy()


def test_wrapper_runs_k_low_level_steps_with_one_context():
    ctrl = RelativePD(horizon=3)
    env = HighLevelActionWrapper(PointEnv(), ctrl, get_state)
    assert env.action_space.shape == (1,)
    np.testing.assert_allclose(env.action_space.low, [-2.0]) and np.testing.assert_allclose(env.action_space.high, [2.0])
    obs, _ = env.reset(seed=0)
    # manual reference following the contract
    ref = PointEnv()
    ref.reset(seed=0)
    z = np.array([0.7])
    x0 = ref.state[0]
    total = 0.0
    for _ in range(3):
        x, v = ref.state
        a = np.clip(2.0 * (x0 + z[0] - x) - v, -1, 1)
        _, r, *_ = ref.step(np.array([a]))
        total += r
    obs, reward, term, trunc, info = env.step(z)
    assert info["low_level_steps"] == 3 and env.unwrapped.n_steps == 3
    np.testing.assert_allclose(obs, ref.state, atol=1e-12)
    assert abs(reward - total) < 1e-12
    # z outside the bounds is projected
    env.step(np.array([10.0]))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(2))


def test_wrapper_stops_on_termination():
    env = HighLevelActionWrapper(PointEnv(), RelativePD(horizon=50), get_state)
    env.reset(seed=0)
    env.unwrapped.state = np.array([4.9, 2.0])
    _, _, term, _, info = env.step(np.array([2.0]))
    assert term and info["low_level_steps"] < 50


def test_hierarchical_agent_follows_the_contract():
    ctrl = RelativePD(horizon=2)
    agent = IQL(2, 1, -2.0, 2.0, TINY)
    hier = HierarchicalAgent(agent, ctrl)
    states = torch.tensor([[0.3, 0.1], [-0.2, 0.0]], dtype=torch.float64)
    z = agent(states.float()).double()
    # forward = step 0 of a new decision, differentiable in the actor
    a0 = hier(states.float(), states)
    assert torch.allclose(a0, ctrl.act(states, z, ctrl.context(states), 0))
    # act() carries the decision: the context stays that of the first state for k steps
    env = PointEnv()
    obs, _ = env.reset(seed=1)
    dec: Optional[Decision] = None
    contexts = []
    for t in range(4):
        a, dec = hier.act(obs, env.state, dec)
        contexts.append(float(dec.context["x0"][0, 0]))
        assert dec.step == t % 2 + 1 and a.shape == (1,)
        obs, *_ = env.step(a)
    assert contexts[0] == contexts[1] and contexts[2] == contexts[3] and contexts[1] != contexts[2]
    # gradients flow from the low-level action into the actor (end-to-end differentiable)
    wide = HierarchicalAgent(agent, RelativePD(horizon=2, action_bound=100.0))
    agent.zero_grad(set_to_none=True)
    wide(states.float(), states).sum().backward()
    assert agent.actor.net.net[0].weight.grad is not None and bool(agent.actor.net.net[0].weight.grad.abs().sum() > 0)
    with pytest.raises(ValueError, match="z has 1"):
        HierarchicalAgent(IQL(2, 3, config=TINY), ctrl)
    # a plain callable works as the actor; z is clamped to the controller bounds
    plain = HierarchicalAgent(lambda o: torch.full((o.shape[0], 1), 9.0, dtype=o.dtype), ctrl)
    assert float(plain.high_level(torch.zeros(1, 2))[0, 0]) == 2.0


def test_bc_mse_recovers_conditional_mean_of_noisy_labels():
    """With label noise far larger than the signal, the MSE loss still finds the mean a(s) = 0.5 s."""
    import numpy as _np

    from ohio_layers.data import Dataset as _Dataset
    from ohio_layers.rl import BC as _BC

    rng = _np.random.default_rng(0)
    s = rng.uniform(-1, 1, size=(4000, 1))
    a = 0.5 * s + rng.normal(0, 1.0, size=s.shape)
    data = _Dataset({"observations": s, "actions": a})
    agent = _BC(1, 1, -6.0, 6.0, {"loss": "mse", "steps": 1500, "hidden": (32, 32), "seed": 0})
    agent.fit(data, show_progress=False)
    grid = _np.linspace(-0.8, 0.8, 9)[:, None].astype(_np.float32)
    assert _np.abs(agent.act(grid)[:, 0] - 0.5 * grid[:, 0]).max() < 0.12
    with pytest.raises(ValueError, match="loss must be 'nll' or 'mse'"):
        _BC(1, 1, -1.0, 1.0, {"loss": "l1"})
