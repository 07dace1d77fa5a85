"""Every controller, solver, inverse and agent follows its inputs' dtype (float32 in -> float32 out) and device.

The CPU cases always run; the CUDA cases skip without a GPU (device-following can only be seen there).
Each float32 result is also compared with the float64 one to a float32 tolerance, so a layer that
silently computes in float32 where it should not (or drops to float64 and back) is caught too.
"""
import numpy as np
import pytest
import torch

from helpers import reacher_like_lqr, substep_states
from ohio_layers.inverse import (AdamSolver, AnalyticSolver, CEMSolver, InverseProblem, LevenbergMarquardt, OSCInverse,
                                 invert_flows, shipments_to_z)
from ohio_layers.lowlevel import (LinearizedDynamics, MinCostFlowController, OperationalSpaceController, SupplyChainController,
                                  rollout, solve_qp)
from ohio_layers.rl.base import accumulate, metric_floats

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]
F32 = torch.float32


def follows(device, *tensors, dtype=F32):
    for t in tensors:
        assert t.device.type == torch.device(device).type, f"{t.device} instead of {device}"
        if t.is_floating_point():
            assert t.dtype == dtype, f"{t.dtype} instead of {dtype}"


# ------------------------------------------------------------------------------ controllers and solvers
@pytest.mark.parametrize("device", DEVICES)
def test_lqr_rollout_and_the_inverse_solvers_follow_float32(device):
    g = torch.Generator().manual_seed(0)
    x0, z = torch.randn(32, 4, generator=g, dtype=torch.float64), torch.randn(32, 4, generator=g, dtype=torch.float64)
    c = reacher_like_lqr(action_bound=1.0).to(device)
    traj64, actions64 = rollout(c, LinearizedDynamics(), x0.to(device), z.to(device))
    traj, actions = rollout(c, LinearizedDynamics(), x0.to(device, F32), z.to(device, F32))
    follows(device, traj, actions)
    torch.testing.assert_close(traj.double(), traj64, atol=1e-4, rtol=1e-4)
    problem = InverseProblem(c, LinearizedDynamics())
    batch = problem.batch(x0.to(device, F32), target=traj[:, -1])
    start = AnalyticSolver().solve(problem, batch)
    follows(device, start.z, start.residual, start.converged, start.iterations)
    for solver in (LevenbergMarquardt(max_iter=5), AdamSolver(max_iter=5), CEMSolver(max_iter=2, population=16)):
        res = solver.solve(problem, batch, start.z)
        follows(device, res.z, res.residual, res.converged, res.iterations)


@pytest.mark.parametrize("device", DEVICES)
def test_osc_and_its_inverse_follow_float32(device):
    states = substep_states(16, seed=3).to(device)
    z = 0.02 * torch.randn(16, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(device)
    c = OperationalSpaceController(150.0, 1.0, delta_limit=None).to(device)
    ctx = c.context(states[:, 0])
    tau64 = torch.stack([c.act(states[:, j], z, ctx, j) for j in range(5)], 1)
    s32 = states.float()
    ctx32 = c.context(s32[:, 0])
    tau = torch.stack([c.act(s32[:, j], z.float(), ctx32, j) for j in range(5)], 1)
    follows(device, tau)
    torch.testing.assert_close(tau.double(), tau64, atol=1e-2, rtol=1e-3)
    res = OSCInverse(max_iter=5).invert(c, s32, tau)
    follows(device, res.z, res.residual, res.converged, res.iterations)


@pytest.mark.parametrize("device", DEVICES)
def test_qp_follows_float32(device):
    g = torch.Generator().manual_seed(2)
    M = torch.randn(40, 3, 3, generator=g, dtype=torch.float64)
    Q = (M @ M.transpose(1, 2) + torch.eye(3, dtype=torch.float64)).to(device)
    p = torch.randn(40, 3, generator=g, dtype=torch.float64).to(device)
    lo, hi = -0.3 * torch.ones_like(p), 0.3 * torch.ones_like(p)
    ref = solve_qp(Q, p, lower=lo, upper=hi)
    sol = solve_qp(Q.float(), p.float(), lower=lo.float(), upper=hi.float())
    follows(device, sol.x, sol.status)
    torch.testing.assert_close(sol.x.double(), ref.x, atol=1e-4, rtol=0)


def _flow_controller(n=5, seed=0):
    import networkx as nx

    rng = np.random.default_rng(seed)
    g = nx.DiGraph()
    for i in range(n):
        for j in range(n):
            if i != j:
                g.add_edge(i, j, time=float(1 + rng.integers(1, 9)))
    return MinCostFlowController(g)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["lp", "qp"])
def test_min_cost_flow_and_its_inverse_follow_float32(device, mode):
    rng = np.random.default_rng(4)
    c = _flow_controller().to(device)
    idle = torch.tensor(rng.multinomial(25, np.ones(5) / 5, size=12), dtype=F32, device=device)
    z = torch.tensor(rng.dirichlet(np.ones(5), size=12), dtype=F32, device=device)
    sol = c.solve(idle, z, mode=mode)
    follows(device, sol.flows, sol.targets, sol.objective, sol.status)
    assert bool(sol.ok.all())
    ref = c.solve(idle.double(), z.double(), mode=mode)
    torch.testing.assert_close(sol.flows.double(), ref.flows, atol=1e-3, rtol=1e-3)
    if mode == "lp":
        inv, _ = invert_flows(c, idle, sol.flows)
        follows(device, inv.z, inv.residual, inv.converged, inv.iterations)
        assert bool(inv.converged.all())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["closed_form", "highs"])
def test_supply_chain_controller_and_its_inverse_follow_float32(device, method):
    g = torch.Generator().manual_seed(5)
    S = 3
    state = torch.cat([torch.randint(0, 15, (8, S), generator=g).double(), 20 * torch.rand(8, S, generator=g, dtype=torch.float64),
                       torch.randint(0, 5, (8, S), generator=g).double(), torch.full((8, 1), 30.0, dtype=torch.float64),
                       torch.full((8, 1), 10.0, dtype=torch.float64)], 1).to(device)
    u = torch.distributions.Dirichlet(torch.full((S + 1,), 1.0)).sample((8,)).double()
    z = torch.cat([u, torch.full((8, 1), 20.0, dtype=torch.float64)], 1).to(device)
    c = SupplyChainController([15.0] * S, 80.0, 60.0).to(device)
    sol = c.solve(state.float(), z.float(), method=method)
    follows(device, sol.action, sol.status)
    torch.testing.assert_close(sol.action.double(), c.solve(state, z, method=method).action, atol=1e-3, rtol=0)
    z_back = shipments_to_z(c, state.float(), sol.action)
    follows(device, z_back)


# ------------------------------------------------------------------------------ agents
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["BC", "IQL", "CQL", "SAC"])
def test_agents_act_in_float32_and_report_metrics_without_a_sync_per_step(device, name):
    from ohio_layers import rl
    from ohio_layers.data import Dataset

    rng = np.random.default_rng(0)
    n = 200
    obs = rng.normal(size=(n, 3))
    data = Dataset({"observations": obs, "actions": np.tanh(obs[:, :2]), "rewards": -np.abs(obs[:, 0]),
                    "next_observations": obs + 0.1, "terminals": np.zeros(n, bool),
                    "episode_ids": np.repeat(np.arange(4), 50)})
    agent = getattr(rl, name).from_dataset(data, {"hidden": [16], "batch_size": 16, "device": device, "seed": 0})
    sampler = agent.make_sampler(data)
    with agent.rng_scope():
        metrics = agent.update_tensors(sampler.sample(16))
    for v in metrics.values():  # device scalars: fit syncs once per log row, not once per step
        assert isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad
        assert v.device.type == torch.device(device).type
    history = agent.fit(data, 4, show_progress=False, log_every=2)
    assert [r["step"] for r in history] == [3.0, 5.0] and all(np.isfinite(list(r.values())).all() for r in history)
    a = agent.act(torch.as_tensor(obs[:4], dtype=F32, device=device))
    follows(device, a)


def test_metrics_averaged_on_the_device_equal_the_float_average_bitwise():
    g = torch.Generator().manual_seed(6)
    steps = [{"a": torch.rand((), generator=g), "b": torch.rand((), generator=g, dtype=torch.float64)} for _ in range(7)]
    sums = {}
    for m in steps:
        accumulate(sums, m)
    expected = {k: sum(float(m[k]) for m in steps) / 7 for k in ("a", "b")}
    assert metric_floats(sums, 7) == expected
    assert metric_floats({"a": torch.tensor(2.0), "c": 3}, 2) == {"a": 1.0, "c": 1.5}
