"""Vehicle rebalancing (autonomous mobility-on-demand): a fleet on a city graph, rebalanced by a min-cost-flow LP.
env (``AMoDEnv``), scenario (cities), policies (behaviour heuristics), data (collection), oracle (LP with known demand).

Importing this package registers ``ohio_layers/AMoD-v0`` with gymnasium.
"""
import gymnasium as _gym

from .env import AMoDEnv, match_requests
from .data import collect, evaluate, flow_violations, heuristic_decider, run_episode
from .policies import (
    POLICIES, BehaviourPolicy, DemandProportional, DispatchToDemand, EqualDistribution, NoRebalancing,
    RandomDistribution, make_policy,
)
from .oracle import OracleResult, oracle_plan, oracle_returns
from .scenario import Scenario, builtin_scenario_path, load_scenario_json, synthetic_city, synthetic_reference_json

ENV_ID = "ohio_layers/AMoD-v0"

if ENV_ID not in _gym.registry:
    _gym.register(id=ENV_ID, entry_point="ohio_layers.envs.amod.env:AMoDEnv")

__all__ = [
    "AMoDEnv", "ENV_ID", "Scenario", "builtin_scenario_path", "load_scenario_json", "match_requests", "synthetic_city",
    "synthetic_reference_json", "POLICIES", "BehaviourPolicy", "DemandProportional", "DispatchToDemand",
    "EqualDistribution", "NoRebalancing", "RandomDistribution", "collect", "evaluate", "run_episode", "flow_violations",
    "heuristic_decider", "make_policy", "OracleResult", "oracle_plan",
    "oracle_returns",
]
