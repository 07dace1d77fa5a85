"""Low-level controllers as differentiable, batched ``nn.Module``s, and their solvers."""
from .base import Context, ControllerFailure, LowLevelController, check_actions, index_context, repeat_context
from .closed_loop import rollout
from .dynamics import ConstantLinearization, Dynamics, LearnedLinearization, LinearizedDynamics, MemoizedLinearization
from .learned_dynamics import LearnedDynamics, sequence_windows
from .lqr import LQRGoalController, riccati_gains
from .osc import PANDA_TORQUE_LIMIT, OperationalSpaceController, OSCStateLayout, OSCTerms, osc_terms, osc_torques, task_space_inverse
from .qp import QPSolution, QPStatus, solve_qp
from .min_cost_flow import (FlowSolution, FlowStatus, MinCostFlowController, largest_remainder, metric_closure,
                            regularized_transport)
from .supply_chain import SupplyChainController, SupplyChainInputError, SupplySolution, SupplyStatus

__all__ = [
    "Context", "ControllerFailure", "LowLevelController", "check_actions", "index_context", "repeat_context", "rollout",
    "ConstantLinearization", "Dynamics", "LearnedLinearization", "LinearizedDynamics", "MemoizedLinearization",
    "LearnedDynamics", "sequence_windows", "LQRGoalController", "riccati_gains", "FlowSolution", "FlowStatus", "MinCostFlowController",
    "largest_remainder", "metric_closure", "regularized_transport", "PANDA_TORQUE_LIMIT", "OperationalSpaceController",
    "OSCStateLayout", "OSCTerms", "osc_terms", "osc_torques", "task_space_inverse", "QPSolution", "QPStatus", "solve_qp",
    "SupplyChainController", "SupplyChainInputError", "SupplySolution", "SupplyStatus",
]
