"""Small systems shared by the tests."""
import torch

from ohio_layers.lowlevel import ConstantLinearization, LQRGoalController

DT = 0.02


def reacher_like_linearization(dtype=torch.float64) -> ConstantLinearization:
    """A 2-joint double integrator with the reacher's measured input gains (B_vel ~ 3.96)."""
    A = torch.tensor([[1, 0, DT, 0.001], [0, 1, 0.002, DT], [0, 0, 0.98, 0.01], [0, 0, 0.02, 0.97]], dtype=dtype)
    B = torch.tensor([[0.0397, 0.001], [0.002, 0.0397], [3.96, 0.1], [-0.2, 3.9]], dtype=dtype)
    return ConstantLinearization(A, B)


def reacher_like_lqr(action_bound=1.0) -> LQRGoalController:
    return LQRGoalController(reacher_like_linearization(), relative_dims=(0, 1), action_bound=action_bound)
