"""Recover high-level actions z by inverting the low-level controller, and relabel datasets."""
from .identify import Identification, Identifier, Unknown, diagonal_unknown, identify, osc_unknowns
from .mixed import PerEpisodeInverter, cluster_identifications, identify_and_relabel
from .flow_inverse import (FlowInverter, FlowReplay, counts_after_flows, flows_to_distribution, invert_flows,
                           replay_flows)
from .osc_inverse import OSCInverse
from .problem import InverseProblem, WindowBatch
from .relabel import Inverter, ProblemInverter, RelabelReport, high_level_rows, relabel
from .result import InverseResult
from .solvers import AdamSolver, AnalyticSolver, CEMSolver, LevenbergMarquardt, residual_jacobian

__all__ = [
    "InverseProblem", "WindowBatch", "InverseResult", "Inverter", "ProblemInverter", "RelabelReport",
    "high_level_rows", "relabel", "AdamSolver", "AnalyticSolver", "CEMSolver", "LevenbergMarquardt",
    "residual_jacobian", "FlowInverter", "FlowReplay", "counts_after_flows", "flows_to_distribution", "invert_flows",
    "replay_flows", "OSCInverse", "Identification", "Identifier", "Unknown", "diagonal_unknown", "identify",
    "osc_unknowns", "PerEpisodeInverter", "cluster_identifications", "identify_and_relabel",
]
