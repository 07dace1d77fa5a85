"""Item 3 of issue 15: the min-cost-flow status reaches the caller through every path.

``solve`` reports a status per member; the contract path (``act`` / ``forward`` / ``law``) has
no status field, so a member the controller cannot serve must come back as NaN (never as the
plausible "nobody moves" zero flows), ``forward`` must raise on caller errors, and agents,
env wrappers and inverse problems must pass the flag on.
"""
import gymnasium as gym
import networkx as nx
import numpy as np
import pytest
import torch

from ohio_layers.inverse import InverseProblem, LevenbergMarquardt
from ohio_layers.lowlevel import ControllerFailure, FlowStatus, MinCostFlowController
from ohio_layers.rl.agent import HierarchicalAgent, HighLevelActionWrapper

F64 = torch.float64


def two_islands() -> MinCostFlowController:
    """Nodes {0, 1} and {2, 3}: no vehicle can cross between the islands."""
    g = nx.DiGraph()
    for u, v in ((0, 1), (1, 0), (2, 3), (3, 2)):
        g.add_edge(u, v, time=1.0)
    return MinCostFlowController(g, allow_disconnected=True)


def bad_batch():
    nan = float("nan")
    idle = torch.tensor([[2.0, 2, 2, 2],    # 0 ok
                         [4.0, 0, 0, 0],    # 1 infeasible: targets on the other island
                         [2.0, -1, 2, 2],   # 2 negative count
                         [1.5, 2.5, 2, 2],  # 3 fractional count
                         [2.0, 2, 2, 2],    # 4 NaN in z
                         [2.0, 2, 2, 2],    # 5 z does not sum to 1
                         [2.0, 2, 2, 2],    # 6 NaN edge cost
                         [nan, 2, 2, 2]], dtype=F64)  # 7 NaN count
    z = torch.full((8, 4), 0.25, dtype=F64)
    z[0] = torch.tensor([0.375, 0.125, 0.125, 0.375])
    z[4, 1] = nan
    z[5] = 0.5
    cost = torch.ones(8, 4, dtype=F64)
    cost[6, 2] = nan
    expected = [FlowStatus.OK, FlowStatus.INFEASIBLE, FlowStatus.NEGATIVE_COUNTS, FlowStatus.NON_INTEGER_COUNTS,
                FlowStatus.NON_FINITE, FlowStatus.INVALID_Z, FlowStatus.NON_FINITE, FlowStatus.NON_FINITE]
    return idle, z, cost, expected


def test_act_returns_nan_for_every_flagged_member_and_solve_names_the_reason():
    ctrl = two_islands()
    idle, z, cost, expected = bad_batch()
    ctx = ctrl.context(torch.nan_to_num(idle))
    ctx["edge_cost"] = cost
    flows = ctrl.act(idle, z, ctx)
    assert torch.isnan(flows[1:]).all(-1).all()  # every flagged member, whole row
    sol = ctrl.solve(idle, z, cost, check=False)
    assert sol.status.tolist() == expected
    torch.testing.assert_close(flows[0], sol.flows[0], rtol=0, atol=0)  # the good member is untouched
    assert torch.equal(ctrl.node_balance(idle[:1], flows[:1]), sol.targets[:1])


def test_forward_raises_on_caller_errors_and_flags_infeasible_members():
    ctrl = two_islands()
    idle, z, _, _ = bad_batch()
    with pytest.raises(ValueError, match="state .*negative counts in rows \\[0\\]"):
        ctrl(idle[2:3], z[2:3])
    with pytest.raises(ValueError, match="state .*integers"):
        ctrl(idle[3:4], z[3:4])
    with pytest.raises(ValueError, match="z"):
        ctrl(idle[4:5], z[4:5])
    with pytest.raises(ValueError, match="z rows must sum to 1"):
        ctrl(idle[5:6], z[5:6])
    out = ctrl(idle[:2], z[:2])  # infeasible is not a caller error: flagged per member
    assert torch.isfinite(out[0]).all() and torch.isnan(out[1]).all()


class IdleEnv(gym.Env):
    """A stand-in AMoD env: the state is the idle counts, any flow vector is accepted."""

    def __init__(self, idle):
        self.idle = np.asarray(idle, dtype=np.float64)
        self.action_space = gym.spaces.Box(0.0, np.inf, (4,), dtype=np.float64)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), dtype=np.float64)
        self.executed = []

    def reset(self, *, seed=None, options=None):
        return self.idle.copy(), {}

    def step(self, action):
        self.executed.append(np.asarray(action))
        return self.idle.copy(), 0.0, False, False, {}


def test_agent_and_wrapper_refuse_to_execute_flagged_members():
    ctrl = two_islands()
    uniform = lambda obs: torch.full((obs.shape[0], 4), 0.25, dtype=obs.dtype)  # noqa: E731
    agent = HierarchicalAgent(uniform, ctrl)
    a, _ = agent.act(np.zeros(4), np.array([2.0, 2, 2, 2]))  # feasible: executes
    assert np.isfinite(a).all()
    with pytest.raises(ControllerFailure, match="members \\[0\\].*FlowStatus"):
        agent.act(np.zeros(4), np.array([4.0, 0, 0, 0]))
    env = IdleEnv([4.0, 0, 0, 0])
    wrapped = HighLevelActionWrapper(env, ctrl, get_state=lambda e: e.idle)
    with pytest.raises(ControllerFailure, match="HighLevelActionWrapper"):
        wrapped.step(np.full(4, 0.25))
    assert env.executed == []  # nothing reached the env


def test_inverse_problem_never_calls_a_flagged_member_converged():
    ctrl = two_islands()
    idle = torch.tensor([[2.0, 2, 2, 2], [4.0, 0, 0, 0]], dtype=F64)
    z = torch.full((2, 4), 0.25, dtype=F64)
    observed = torch.nan_to_num(ctrl.solve(idle, z).flows)[:, None]  # zero flows for the infeasible member
    problem = InverseProblem(ctrl, match="actions")
    batch = problem.batch(idle, states=idle[:, None], actions=observed)
    res = LevenbergMarquardt(max_iter=0).solve(problem, batch, z0=z)
    assert res.converged.tolist() == [True, False]
    assert float(res.residual[0]) == 0.0 and bool(torch.isnan(res.residual[1]))
    assert res.reproduced(1e-9).tolist() == [True, False]
