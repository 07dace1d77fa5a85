"""Low-level controllers as differentiable, batched ``nn.Module``s, and their solvers."""
from .base import Context, LowLevelController, index_context, repeat_context
from .closed_loop import rollout
from .dynamics import ConstantLinearization, Dynamics, LearnedLinearization, LinearizedDynamics
from .lqr import LQRGoalController, riccati_gains

__all__ = [
    "Context", "LowLevelController", "index_context", "repeat_context", "rollout",
    "ConstantLinearization", "Dynamics", "LearnedLinearization", "LinearizedDynamics",
    "LQRGoalController", "riccati_gains",
]
