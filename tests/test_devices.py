"""Every layer runs where its inputs are. The CPU cases always run; the CUDA cases skip without a GPU.

Each case compares the device's result with the CPU reference to a stated tolerance, and
checks that the outputs stay on the device (no silent round trip through the host).
"""
import numpy as np
import pytest
import torch

from helpers import make_inverter, reacher_like_lqr, synthetic_dataset
from ohio_layers.data import Dataset
from ohio_layers.inverse import AnalyticSolver, InverseProblem, LevenbergMarquardt, relabel
from ohio_layers.lowlevel import LinearizedDynamics, rollout
from ohio_layers.rl import BC, CQL, IQL, SAC

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]


def windows(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = reacher_like_lqr(action_bound=1.0)
    x0 = torch.randn(n, 4, generator=g, dtype=torch.float64)
    z = 2 * torch.randn(n, 4, generator=g, dtype=torch.float64)
    traj, actions = rollout(c, LinearizedDynamics(), x0, z)
    return c, x0, z, traj, actions


@pytest.mark.parametrize("device", DEVICES)
def test_lqr_rollout_and_inverse_follow_the_device(device):
    c, x0, z, traj, _ = windows()
    cd = reacher_like_lqr(action_bound=1.0).to(device)
    traj_d, actions_d = rollout(cd, LinearizedDynamics(), x0.to(device), z.to(device))
    assert traj_d.device.type == actions_d.device.type == torch.device(device).type
    torch.testing.assert_close(traj_d.cpu(), traj, atol=1e-10, rtol=0)
    problem = InverseProblem(cd, LinearizedDynamics())
    batch = problem.batch(x0.to(device), target=traj_d[:, -1])
    res = LevenbergMarquardt().solve(problem, batch, AnalyticSolver().solve(problem, batch).z)
    assert {t.device.type for t in (res.z, res.residual, res.converged, res.iterations)} == {torch.device(device).type}
    p_cpu = InverseProblem(c, LinearizedDynamics())
    b_cpu = p_cpu.batch(x0, target=traj[:, -1])
    ref = LevenbergMarquardt().solve(p_cpu, b_cpu, AnalyticSolver().solve(p_cpu, b_cpu).z)
    assert res.converged.all() and ref.converged.all()
    torch.testing.assert_close(res.z.cpu(), ref.z, atol=1e-8, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_relabel_runs_on_the_controllers_device(device, tmp_path):
    c = reacher_like_lqr(action_bound=1.0)
    data = synthetic_dataset(c, episodes=3)
    ref, _ = relabel(data, make_inverter(c), 5, tmp_path / "cpu.npz", progress=False)
    inverter = make_inverter(reacher_like_lqr(action_bound=1.0).to(device))
    assert inverter.problem.device.type == torch.device(device).type
    out, _ = relabel(data, inverter, 5, tmp_path / "dev.npz", progress=False)
    np.testing.assert_allclose(out["z"], ref["z"], atol=1e-8)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("agent_cls", [IQL, CQL, BC, SAC])
def test_agents_train_and_act_on_the_device(agent_cls, device):
    rng = np.random.default_rng(0)
    n = 300
    obs = rng.normal(size=(n, 3))
    data = Dataset({"observations": obs, "actions": np.tanh(obs[:, :2]), "rewards": -np.abs(obs[:, 0]),
                    "next_observations": obs + 0.1, "terminals": np.zeros(n, bool), "episode_ids": np.repeat(np.arange(6), 50)})
    agent = agent_cls.from_dataset(data, {"hidden": [16, 16], "batch_size": 16, "device": device})
    agent.fit(data, 5, show_progress=False)
    assert agent.step == 5 and all(p.device.type == torch.device(device).type for p in agent.parameters())
    a = agent.act(torch.as_tensor(obs[:4], dtype=torch.float32, device=device))
    assert a.device.type == torch.device(device).type and a.shape == (4, 2)
    assert np.isfinite(agent.act(obs[0])).all()
