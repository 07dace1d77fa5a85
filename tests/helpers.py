"""Small systems shared by the tests."""
import torch

from ohio_layers.data import Dataset, EpisodeRecorder
from ohio_layers.inverse import AnalyticSolver, InverseProblem, LevenbergMarquardt, ProblemInverter
from ohio_layers.lowlevel import ConstantLinearization, LinearizedDynamics, LQRGoalController

DT = 0.02


def reacher_like_linearization(dtype=torch.float64) -> ConstantLinearization:
    """A 2-joint double integrator with the reacher's measured input gains (B_vel ~ 3.96)."""
    A = torch.tensor([[1, 0, DT, 0.001], [0, 1, 0.002, DT], [0, 0, 0.98, 0.01], [0, 0, 0.02, 0.97]], dtype=dtype)
    B = torch.tensor([[0.0397, 0.001], [0.002, 0.0397], [3.96, 0.1], [-0.2, 3.9]], dtype=dtype)
    return ConstantLinearization(A, B)


def reacher_like_lqr(action_bound=1.0) -> LQRGoalController:
    return LQRGoalController(reacher_like_linearization(), relative_dims=(0, 1), action_bound=action_bound)


def synthetic_dataset(controller, episodes=6, length=23, seed=0) -> Dataset:
    """Low-level data generated through the controller with a known z per 5-step window."""
    g = torch.Generator().manual_seed(seed)
    dyn, rec = LinearizedDynamics(), EpisodeRecorder()
    for _ in range(episodes):
        x = torch.randn(1, 4, generator=g, dtype=torch.float64)
        for t in range(length):
            if t % controller.horizon == 0:
                z = 2 * torch.randn(1, 4, generator=g, dtype=torch.float64)
                ctx = controller.context(x)
            u = controller.act(x, z, ctx, t % controller.horizon)
            x1 = dyn(x, u, ctx)
            rec.add(observations=x[0].numpy(), states=x[0].numpy(), actions=u[0].numpy(), rewards=float(-x1.norm()),
                    next_observations=x1[0].numpy(), next_states=x1[0].numpy(), terminals=False,
                    timeouts=t == length - 1, z_true=z[0].numpy())
            x = x1
        rec.end_episode()
    return rec.to_dataset({"generator": "test"})


def make_inverter(controller):
    return ProblemInverter(InverseProblem(controller, LinearizedDynamics()), LevenbergMarquardt(), init=AnalyticSolver())
