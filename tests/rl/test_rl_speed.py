"""The fast update paths of issue 16 compute the documented losses: IQL's shared target-critic and
value passes, CQL's once-per-state actor samples and shared TD pass, and the opt-in bf16 mode."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from helpers import random_transitions

from ohio_layers.rl import CQL, IQL, BC
from ohio_layers.rl.base import accumulate, metric_floats, soft_update
from ohio_layers.rl.iql import iql_actor_loss, iql_critic_loss, iql_value_loss
from ohio_layers.rl.networks import TanhGaussianActor

TINY = {"hidden": (32, 32), "batch_size": 64}


def _dataset():
    return random_transitions(256, 5, 3)


def test_iql_update_equals_the_three_separate_losses_in_sequence():
    data = _dataset()
    fast = IQL(5, 3, config={**TINY, "expectile": 0.8})
    ref = copy.deepcopy(fast)
    batch = fast.make_sampler(data).sample(64)
    metrics = fast.update(batch)
    c = ref.config
    loss_v = iql_value_loss(ref.value, ref.target_q, batch, c.expectile)
    ref._optimize("value", loss_v, ref.value)
    loss_pi = iql_actor_loss(ref.actor, ref.target_q, ref.value, batch, c.temperature, c.max_weight)["loss"]
    ref._optimize("actor", loss_pi, ref.actor)
    loss_q = iql_critic_loss(ref.q, ref.value, batch)
    ref._optimize("q", loss_q, ref.q)
    soft_update(ref.target_q, ref.q, c.tau)
    assert metrics["loss_value"] == pytest.approx(loss_v.item(), rel=1e-6)
    assert metrics["loss_actor"] == pytest.approx(loss_pi.item(), rel=1e-5)
    assert metrics["loss_q"] == pytest.approx(loss_q.item(), rel=1e-5)
    for (name, p), r in zip(fast.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(p, r, rtol=1e-5, atol=1e-6, msg=name)


def test_actor_sample_n_draws_like_the_repeated_sample():
    actor = TanhGaussianActor(5, 3, -1.0, 2.0, (16, 16))
    obs = torch.randn(6, 5)
    torch.manual_seed(4)
    a, logp = actor.sample_n(obs, 3)
    torch.manual_seed(4)
    ra, rlogp = actor.sample(obs.repeat_interleave(3, 0))
    torch.testing.assert_close(a, ra, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logp, rlogp, rtol=1e-5, atol=1e-5)


def _reference_penalty(agent: CQL, batch):
    """The pre-optimisation penalty: every proposal through the actor and critics on repeated states."""
    c = agent.config
    obs, next_obs = batch["observations"], batch["next_observations"]
    b, n = obs.shape[0], c.num_samples
    obs_rep = obs.repeat_interleave(n, 0)
    with torch.no_grad():
        rand_a, rand_logp = agent.random_actions(b * n, obs)
        pi_a, pi_logp = agent.sample_unit(obs_rep)
        next_a, next_logp = agent.sample_unit(next_obs.repeat_interleave(n, 0))
    qs = agent.q(obs_rep.repeat(3, 1), torch.cat([rand_a, pi_a, next_a]))
    logps = torch.stack([rand_logp, pi_logp, next_logp]).view(3, b, n)
    q_data = agent.q(obs, batch["actions"])
    penalty = 0.0
    for i in range(2):
        q = qs[i].view(3, b, n)
        if c.calql:
            q = torch.cat([q[:1], torch.maximum(q[1:], batch["mc_returns"].view(1, b, 1))])
        cat = (q - logps).permute(1, 0, 2).reshape(b, 3 * n)
        penalty = penalty + (c.cql_temperature * torch.logsumexp(cat / c.cql_temperature, 1) - q_data[i]).mean()
    return penalty


@pytest.mark.parametrize("calql", [False, True])
def test_cql_penalty_and_its_gradient_match_the_unshared_computation(calql):
    data = _dataset()
    data.arrays["mc_returns"] = np.linspace(-1, 1, len(data)).astype(np.float32)
    agent = CQL(5, 3, config={**TINY, "num_samples": 4, "calql": calql, "cql_temperature": 0.7})
    batch = agent.make_sampler(data).sample(32)
    torch.manual_seed(9)
    fast = agent.conservative_penalty(batch)["penalty"]
    g_fast = torch.autograd.grad(fast, list(agent.q.parameters()))
    torch.manual_seed(9)
    ref = _reference_penalty(agent, batch)
    g_ref = torch.autograd.grad(ref, list(agent.q.parameters()))
    assert fast.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-5)
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # the critic loss reuses the TD pass on the data actions: TD + alpha * penalty
    torch.manual_seed(3)
    out = agent.critic_loss(batch)
    torch.manual_seed(3)
    td = agent.td_loss(batch)[0]
    pen = agent.conservative_penalty(batch)["penalty"]
    assert out["loss"].item() == pytest.approx((td + agent.config.cql_alpha * pen).item(), rel=1e-6)


def test_bf16_mode_autocasts_the_forward_passes_and_keeps_float32_state():
    with pytest.raises(ValueError, match="mixed_precision"):
        IQL(5, 3, config={**TINY, "mixed_precision": "fp8"})
    data = _dataset()
    for cls, extra in ((IQL, {}), (CQL, {"num_samples": 2}), (BC, {})):
        agent = cls(5, 3, config={**TINY, **extra, "mixed_precision": "bf16"})
        with agent.autocast():
            assert agent.actor.net.net[0](torch.randn(2, 5)).dtype == torch.bfloat16
            assert agent.actor.dist_params(torch.randn(2, 5))[0].dtype == torch.float32  # outputs back in fp32
        agent.fit(data, 3, show_progress=False)
        assert all(p.dtype == torch.float32 for p in agent.parameters())
        assert all(math.isfinite(v) for v in agent.history[-1].values())


def test_lean_adam_is_bit_for_bit_the_library_fused_adam_including_resume_and_fallbacks():
    from ohio_layers.rl.optim import LeanAdam

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    lean_net = copy.deepcopy(net)
    lib = torch.optim.Adam([{"params": net[0].parameters()}, {"params": net[2].parameters(), "lr": 3e-3}],
                           lr=1e-2, weight_decay=0.1, fused=True)
    lean = LeanAdam([{"params": lean_net[0].parameters()}, {"params": lean_net[2].parameters(), "lr": 3e-3}],
                    lr=1e-2, weight_decay=0.1)

    def step(i: int, freeze_bias: bool = False) -> None:
        x = torch.randn(16, 5, generator=torch.Generator().manual_seed(i))
        for n, o in ((net, lib), (lean_net, lean)):
            o.zero_grad(set_to_none=True)
            n[2].bias.requires_grad_(not freeze_bias)
            n(x).pow(2).mean().backward()
            o.step()

    calls = []
    lean.register_step_post_hook(lambda opt, args, kwargs: calls.append(1))
    for i in range(4):
        step(i)
    assert lean._lean is not None  # the cached fast path is in use after the first step
    assert len(calls) == 4  # step hooks run once per step
    step(4, freeze_bias=True)  # a parameter without gradient: the library's step handles it
    assert len(calls) == 5
    other = copy.deepcopy(lean_net)
    resumed = LeanAdam([{"params": other[0].parameters()}, {"params": other[2].parameters()}], lr=1.0)
    resumed.load_state_dict(copy.deepcopy(lean.state_dict()))
    for i in range(5, 8):
        step(i)
    for a, b in zip(net.parameters(), lean_net.parameters()):
        assert torch.equal(a, b)
    for (ka, sa), (kb, sb) in zip(lib.state.items(), lean.state.items()):
        assert all(torch.equal(sa[k], sb[k]) for k in ("step", "exp_avg", "exp_avg_sq"))
    assert resumed.param_groups[1]["lr"] == 3e-3 and resumed._lean is None


@pytest.mark.parametrize("grad_clip", [None, 0.5])
def test_one_backward_over_disjoint_losses_steps_exactly_like_separate_ones(grad_clip):
    data = _dataset()
    joint = IQL(5, 3, config={**TINY, "grad_clip": grad_clip})
    apart = copy.deepcopy(joint)
    batch = joint.make_sampler(data).sample(64)

    def losses(agent):
        c = agent.config
        actor = iql_actor_loss(agent.actor, agent.target_q, agent.value, batch, c.temperature, c.max_weight)["loss"]
        return actor, iql_critic_loss(agent.q, agent.value, batch)

    actor, critic = losses(joint)
    joint._optimize_together([("actor", actor, joint.actor), ("q", critic, joint.q)])
    actor, critic = losses(apart)
    apart._optimize("actor", actor, apart.actor)
    apart._optimize("q", critic, apart.q)
    for (name, p), r in zip(joint.state_dict().items(), apart.state_dict().values()):
        assert torch.equal(p, r), name


def test_one_backward_pass_refuses_optimizers_that_share_parameters():
    agent = IQL(5, 3, config=TINY)
    agent.optimizers["both"] = torch.optim.Adam(list(agent.actor.parameters()) + list(agent.q.parameters()))
    loss = agent.actor.log_prob(torch.zeros(2, 5), torch.zeros(2, 3)).sum()
    with pytest.raises(ValueError, match="share parameters"):
        agent._optimize_together([("actor", loss, agent.actor), ("both", loss, None)])


def test_lean_adam_updates_a_group_added_after_its_first_steps_and_survives_a_cleared_state():
    from ohio_layers.rl.optim import LeanAdam

    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    ra, rb = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    lean, ref = LeanAdam([a], lr=0.1), torch.optim.Adam([ra], lr=0.1, fused=True)
    for opt, x in ((lean, a), (ref, ra)):
        for _ in range(2):
            opt.zero_grad()
            x.pow(2).sum().backward()
            opt.step()
    lean.add_param_group({"params": [b]})
    ref.add_param_group({"params": [rb]})
    for opt, x, y in ((lean, a, b), (ref, ra, rb)):
        for _ in range(3):
            opt.zero_grad()
            (x.pow(2).sum() + y.pow(3).sum()).backward()
            opt.step()
        opt.state.clear()
        opt.zero_grad()
        (x.pow(2).sum() + y.pow(3).sum()).backward()
        opt.step()
    assert torch.equal(a, ra) and torch.equal(b, rb) and len(lean.state) == len(ref.state) == 2


def test_metrics_missing_from_some_steps_are_averaged_over_the_steps_that_report_them():
    sums, counts = {}, {}
    accumulate(sums, {"loss_q": torch.tensor(1.0)}, counts)  # a critic warm-up step: no actor metrics
    accumulate(sums, {"loss_q": torch.tensor(3.0), "alpha": torch.tensor(0.2)}, counts)
    assert metric_floats(sums, counts) == pytest.approx({"loss_q": 2.0, "alpha": 0.2})


def test_lean_adam_counts_steps_in_one_tensor_and_resumes_from_a_weights_only_checkpoint(tmp_path):
    from ohio_layers.rl.optim import LeanAdam

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    ref_net = copy.deepcopy(net)
    lean, ref = LeanAdam(net.parameters(), lr=1e-2), torch.optim.Adam(ref_net.parameters(), lr=1e-2, fused=True)

    def step(n, opt, i):
        opt.zero_grad(set_to_none=True)
        n(torch.randn(8, 4, generator=torch.Generator().manual_seed(i))).pow(2).mean().backward()
        opt.step()

    for i in range(3):
        step(net, lean, i)
        step(ref_net, ref, i)
    steps = [lean.state[p]["step"] for p in net.parameters()]
    assert len({s.untyped_storage().data_ptr() for s in steps}) == 1  # views of one tensor
    torch.save({"net": net.state_dict(), "opt": lean.state_dict()}, tmp_path / "ckpt.pt")
    payload = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    resumed_net = copy.deepcopy(net)
    resumed_net.load_state_dict(payload["net"])
    resumed = LeanAdam(resumed_net.parameters(), lr=1e-2)
    resumed.load_state_dict(payload["opt"])
    for i in range(3, 6):
        step(resumed_net, resumed, i)
        step(ref_net, ref, i)
    for a, b in zip(resumed_net.parameters(), ref_net.parameters()):
        assert torch.equal(a, b)
    for p, q in zip(resumed_net.parameters(), ref_net.parameters()):
        assert all(torch.equal(resumed.state[p][k], ref.state[q][k]) for k in ("step", "exp_avg", "exp_avg_sq"))
        assert float(resumed.state[p]["step"]) == 6.0
