"""Recover high-level actions z by inverting the low-level controller, and relabel datasets."""
from .amortized import AmortizedInverse, AmortizedInverter, AmortizedResult, window_features
from .identify import Identification, Identifier, Unknown, diagonal_unknown, identify, osc_unknowns
from .mixed import PerEpisodeInverter, cluster_identifications, identify_and_relabel
from .flow_inverse import (FlowInverter, FlowReplay, counts_after_flows, flows_to_distribution, invert_flows,
                           replay_flows)
from .osc_inverse import OSCInverse
from .problem import InverseProblem, WindowBatch
from .relabel import Inverter, ProblemInverter, RelabelReport, high_level_rows, relabel
from .result import InverseResult
from .supply_chain_inverse import SupplyChainInverter, SupplyReplay, replay_supply, shipments_to_z
from .solvers import AdamSolver, AnalyticSolver, BestStart, CEMSolver, LevenbergMarquardt, residual_jacobian, select_windows

__all__ = [
    "InverseProblem", "WindowBatch", "InverseResult", "Inverter", "ProblemInverter", "RelabelReport",
    "high_level_rows", "relabel", "AdamSolver", "AnalyticSolver", "CEMSolver", "LevenbergMarquardt",
    "residual_jacobian", "FlowInverter", "FlowReplay", "counts_after_flows", "flows_to_distribution", "invert_flows",
    "replay_flows", "OSCInverse", "SupplyChainInverter", "SupplyReplay", "replay_supply", "shipments_to_z",
    "AmortizedInverse", "AmortizedInverter", "AmortizedResult", "window_features", "select_windows", "BestStart",
    "replay_flows", "OSCInverse", "Identification", "Identifier", "Unknown", "diagonal_unknown", "identify",
    "osc_unknowns", "PerEpisodeInverter", "cluster_identifications", "identify_and_relabel",
]
