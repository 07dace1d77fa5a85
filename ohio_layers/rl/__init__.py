"""Offline and online RL (IQL, BC, CQL / Cal-QL, SAC) and the hierarchical agent."""
from .agent import Decision, HierarchicalAgent, HighLevelActionWrapper
from .base import Agent, AgentConfig, Batch, ReplayBuffer, TransitionSampler, concat_batches, seed_everything, soft_update
from .bc import BC, BCConfig, bc_loss
from .cql import CQL, CQLConfig, add_mc_returns, compute_mc_returns
from .gnn import (DirichletActor, DirichletBetaActor, EdgeGaussianActor, GCNEncoder, GraphBC, GraphBCConfig, GraphCQL,
                  GraphCQLConfig, GraphIQL, GraphIQLConfig, GraphNetworks, GraphSAC, GraphSACConfig, GraphSpec, GraphTwinQ,
                  GraphValue, graph_fields)
from .graph_spec import node_group_stats
from .graph_layers import EdgeConvEncoder, GraphTrunk
from .iql import IQL, IQLConfig, expectile_loss, iql_actor_loss, iql_critic_loss, iql_value_loss
from .networks import MLP, ActionScaler, ObsNormalizer, TanhGaussianActor, TwinQ, ValueNetwork
from .sac import SAC, SACConfig, frozen

__all__ = [
    "Decision", "HierarchicalAgent", "HighLevelActionWrapper", "Agent", "AgentConfig", "Batch", "ReplayBuffer",
    "TransitionSampler", "concat_batches", "seed_everything", "soft_update", "BC", "BCConfig", "bc_loss", "CQL",
    "CQLConfig", "add_mc_returns", "compute_mc_returns", "IQL", "IQLConfig", "expectile_loss", "iql_actor_loss",
    "iql_critic_loss", "iql_value_loss", "MLP", "ActionScaler", "ObsNormalizer", "TanhGaussianActor", "TwinQ",
    "ValueNetwork", "SAC", "SACConfig", "frozen", "DirichletActor", "EdgeGaussianActor", "GCNEncoder", "GraphCQL",
    "GraphCQLConfig", "GraphIQL", "GraphIQLConfig", "GraphNetworks", "GraphSAC", "GraphSACConfig", "GraphSpec", "GraphTwinQ",
    "GraphValue", "graph_fields", "node_group_stats", "DirichletBetaActor", "GraphBC", "GraphBCConfig", "EdgeConvEncoder", "GraphTrunk",
]
