"""Graph neural network actor-critics over a region graph, pluggable into IQL, CQL / Cal-QL and SAC.

Observations are flat ``(B, n * F)`` vectors, the row-major flattening of node features
``(B, n, F)`` (``n`` nodes, ``F`` features per node, e.g. the AMoD env's 13). Every network owns

* an :class:`~ohio_layers.rl.networks.ObsNormalizer` on the flat observation (identity unless the
  agent sets statistics; with ``obs_norm`` they are pooled per ``(node group, feature)``, since the
  weights are shared over nodes: ``GraphSpec.norm_groups``, default all nodes one group, see
  :mod:`ohio_layers.rl.graph_spec`), and
* its own :class:`GCNEncoder`: ``layers`` GCN convolutions ``h <- h + relu(A_hat h W + b)`` with
  ``A_hat = D^-1/2 (A + I) D^-1/2`` of a fixed directed ``edge_index (2, E_graph)`` (messages
  flow ``src -> dst``; ``A_hat`` is a dense ``(n, n)`` buffer, as graphs here have tens of nodes),
  or, when the config has static edge features ``edge_attr (E_graph, d_e)``, an
  :class:`~ohio_layers.rl.graph_layers.EdgeConvEncoder` (messages on ``[x_i, x_j, e_ij]``).

Actors (same interface as :class:`~ohio_layers.rl.networks.TanhGaussianActor`:
``forward(obs, deterministic)``, ``log_prob(obs, action)``, reparameterised ``sample(obs)``):

* :class:`DirichletActor` -- a distribution over nodes, ``z ~ Dirichlet(alpha(s))`` with
  ``alpha_i = softplus(mlp(h_i)) + min_concentration``. ``log_prob`` is the exact Dirichlet
  log-density (actions are floored at ``z_min`` and renormalised, so smoothed labels with zeros
  stay finite); the deterministic action is the mean ``alpha / sum(alpha)`` per row.
* :class:`EdgeGaussianActor` -- one tanh-squashed Gaussian per edge of ``flow_edges (2, E)``
  (the end-to-end baseline's per-edge vehicle flows), from ``mlp([h_src, h_dst])``; it *is* a
  :class:`TanhGaussianActor` (exact squashed density, deployment = ``scale(tanh(mu))``).
* :class:`DirichletBetaActor` -- a :class:`DirichletActor` plus a second head: a Beta
  distribution on the ``production_node``'s embedding, scaled by ``production_max``; actions
  ``(B, n + 1)`` = ``[z on the simplex, production]`` (the supply chain's OHIO high level).

Critics: :class:`GraphTwinQ` (per-node ``[h_i, a_i]`` or per-edge ``[h_src, h_dst, a_e]`` MLP,
summed over the graph, then linear) and :class:`GraphValue` (sum-pooled encoder, then an MLP).

Agents: :class:`GraphIQL`, :class:`GraphCQL` (``calql=True`` for Cal-QL) and :class:`GraphSAC`
are the library's agents with these networks (the :class:`GraphNetworks` mixin overrides their
network factories). The graph lives in the config (``n_nodes``, ``graph_edges``, ``flow_edges``;
see :func:`graph_fields` and :mod:`ohio_layers.rl.graph_spec`), so ``save``/``load`` and ``GraphSAC.from_agent`` rebuild it. Empty
``flow_edges`` = Dirichlet over nodes (OHIO's high level); non-empty = per-edge flows (end-to-end);
``production_node >= 0`` adds the Beta head (critics then append the production to every node's
input). :class:`GraphBC` is behaviour cloning with the same actors.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Optional, Sequence, Tuple, Type

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Beta, Dirichlet

from .._validate import check_tensor
from ..data.dataset import Dataset
from .bc import BC, BCConfig
from .cql import CQL, CQLConfig
from .graph_layers import EdgesLike, GCNEncoder, GraphTrunk, _edge_tensor, _PairLayer, normalized_adjacency
from .graph_spec import GraphSpec, graph_fields, node_group_stats
from .iql import IQL, IQLConfig
from .networks import MLP, ActionScaler, BoundLike, ObsNormalizer, TanhGaussianActor
from .sac import SAC, SACConfig

__all__ = ["normalized_adjacency", "GCNEncoder", "DirichletActor", "DirichletBetaActor", "EdgeGaussianActor", "GraphTwinQ",
           "GraphValue", "GraphSpec", "graph_fields", "node_group_stats", "GraphNetworks", "GraphIQLConfig", "GraphIQL", "GraphCQLConfig",
           "GraphCQL", "GraphSACConfig", "GraphSAC", "GraphBCConfig", "GraphBC"]
EdgeAttr = Optional[Sequence[Sequence[float]]]


# ---------------------------------------------------------------------------------- actors
class DirichletActor(nn.Module):
    """Dirichlet policy over ``n`` nodes (the OHIO high level: a desired vehicle distribution).

    Args:
        obs_dim: ``n * F``.
        n_nodes: ``n``.
        graph_edges: ``(2, E_graph)`` GCN edges.
        hidden: hidden sizes of the per-node MLP ``F -> hidden -> 1``.
        layers: GCN layers.
        min_concentration: added to ``softplus`` so every ``alpha_i > 0``.
        max_concentration: clamp of ``alpha`` (keeps ``lgamma`` and sampling finite).
        z_min: actions are floored at ``z_min`` and renormalised before the density is evaluated.
    Shapes: ``obs (B, n F)``; actions ``(B, n)`` on the simplex; log-densities ``(B,)``.
    """

    def __init__(self, obs_dim: int, n_nodes: int, graph_edges: EdgesLike, hidden: Sequence[int] = (256, 256),
                 layers: int = 1, min_concentration: float = 1e-3, max_concentration: float = 1e4,
                 z_min: float = 1e-6, edge_attr: EdgeAttr = None) -> None:
        super().__init__()
        if not 0 < min_concentration < max_concentration:
            raise ValueError(f"need 0 < min_concentration < max_concentration, got {min_concentration} / {max_concentration}")
        if not 0 < z_min < 1.0 / n_nodes:
            raise ValueError(f"z_min must be in (0, 1/n_nodes), got {z_min}")
        self.trunk = GraphTrunk(obs_dim, n_nodes, graph_edges, layers, edge_attr)
        self.n_nodes, self.action_dim = int(n_nodes), int(n_nodes)
        self.min_concentration, self.max_concentration, self.z_min = min_concentration, max_concentration, z_min
        self.head = MLP(self.trunk.n_features, 1, tuple(hidden))

    @property
    def normalizer(self) -> ObsNormalizer:
        return self.trunk.normalizer

    def concentration(self, obs: Tensor) -> Tensor:
        """``alpha (B, n)``."""
        h = self.trunk(obs)
        alpha = F.softplus(self.head(h).squeeze(-1)) + self.min_concentration
        return alpha.clamp(max=self.max_concentration)

    def _floor(self, z: Tensor) -> Tensor:
        z = z.clamp_min(self.z_min)
        return z / z.sum(-1, keepdim=True)

    def log_prob(self, obs: Tensor, action: Tensor) -> Tensor:
        """Exact Dirichlet log-density ``(B,)`` of ``action (B, n)`` (floored at ``z_min``, renormalised)."""
        check_tensor("action", action, (obs.shape[0], self.n_nodes))
        return Dirichlet(self.concentration(obs)).log_prob(self._floor(action))

    def sample(self, obs: Tensor, deterministic: bool = False) -> Tuple[Tensor, Tensor]:
        """Reparameterised ``(action (B, n), log_prob (B,))``; ``deterministic`` gives the mean."""
        alpha = self.concentration(obs)
        dist = Dirichlet(alpha)
        z = alpha / alpha.sum(-1, keepdim=True) if deterministic else dist.rsample()
        z = self._floor(z)
        return z, dist.log_prob(z)

    def forward(self, obs: Tensor, deterministic: bool = True) -> Tensor:
        """Action ``(B, n)`` on the simplex: the mean (default) or a sample."""
        alpha = self.concentration(obs)
        if deterministic:
            return alpha / alpha.sum(-1, keepdim=True)
        return self._floor(Dirichlet(alpha).rsample())


class DirichletBetaActor(DirichletActor):
    """``[z ~ Dirichlet(alpha(s)) (n), production = production_max * y, y ~ Beta(a(s), b(s))]``, actions ``(B, n + 1)``.

    ``a, b = softplus(mlp(h_k)) + min_concentration`` on the embedding of node ``k =
    production_node``. ``log_prob`` = Dirichlet + Beta log-densities ``- log(production_max)``
    (``y`` clamped to ``[y_eps, 1 - y_eps]``); deterministic action = both means.
    """

    def __init__(self, obs_dim: int, n_nodes: int, graph_edges: EdgesLike, production_node: int, production_max: float,
                 hidden: Sequence[int] = (256, 256), layers: int = 1, min_concentration: float = 1e-3,
                 edge_attr: EdgeAttr = None, y_eps: float = 1e-4) -> None:
        super().__init__(obs_dim, n_nodes, graph_edges, hidden, layers, min_concentration, edge_attr=edge_attr)
        if not 0 <= production_node < n_nodes or not production_max > 0:
            raise ValueError(f"need 0 <= production_node < {n_nodes} and production_max > 0, got {production_node} / {production_max}")
        self.production_node, self.production_max, self.y_eps = int(production_node), float(production_max), float(y_eps)
        self.action_dim = int(n_nodes) + 1
        self.beta_head = MLP(self.trunk.n_features, 2, tuple(hidden))

    def distributions(self, obs: Tensor) -> Tuple[Dirichlet, Beta]:
        h = self.trunk(obs)
        alpha = (F.softplus(self.head(h).squeeze(-1)) + self.min_concentration).clamp(max=self.max_concentration)
        ab = (F.softplus(self.beta_head(h[..., self.production_node, :])) + self.min_concentration).clamp(max=self.max_concentration)
        return Dirichlet(alpha), Beta(ab[..., 0], ab[..., 1])

    def _y(self, production: Tensor) -> Tensor:
        return (production / self.production_max).clamp(self.y_eps, 1.0 - self.y_eps)

    def log_prob(self, obs: Tensor, action: Tensor) -> Tensor:
        check_tensor("action", action, (obs.shape[0], self.action_dim))
        dz, dy = self.distributions(obs)
        n = self.n_nodes
        return dz.log_prob(self._floor(action[:, :n])) + dy.log_prob(self._y(action[:, n])) - math.log(self.production_max)

    def sample(self, obs: Tensor, deterministic: bool = False) -> Tuple[Tensor, Tensor]:
        dz, dy = self.distributions(obs)
        z = self._floor(dz.mean if deterministic else dz.rsample())
        y = (dy.mean if deterministic else dy.rsample()).clamp(self.y_eps, 1.0 - self.y_eps)
        logp = dz.log_prob(z) + dy.log_prob(y) - math.log(self.production_max)
        return torch.cat([z, self.production_max * y[:, None]], -1), logp

    def forward(self, obs: Tensor, deterministic: bool = True) -> Tensor:
        return self.sample(obs, deterministic)[0]


class _EdgeHead(nn.Module):
    """``(B, n F) -> (B, E, out)``: ``mlp([h_src, h_dst])`` per edge of ``flow_edges`` (first layer via :class:`_PairLayer`)."""

    def __init__(self, obs_dim: int, n_nodes: int, graph_edges: EdgesLike, flow_edges: EdgesLike, out: int,
                 hidden: Sequence[int], layers: int, edge_attr: EdgeAttr = None) -> None:
        super().__init__()
        self.trunk = GraphTrunk(obs_dim, n_nodes, graph_edges, layers, edge_attr)
        hidden = tuple(hidden)
        self.pair = _PairLayer(self.trunk.n_features, hidden[0], _edge_tensor(flow_edges, n_nodes, "flow_edges"), n_nodes)
        self.mlp = MLP(hidden[0], out, hidden[1:]) if len(hidden) > 1 else nn.Linear(hidden[0], out)

    def forward(self, obs: Tensor) -> Tensor:
        return self.mlp(F.relu(self.pair(self.trunk(obs))))


class EdgeGaussianActor(TanhGaussianActor):
    """Per-edge squashed Gaussian flows ``a_e = scale(tanh(x_e))``, ``x_e ~ N(mu_e(s), sigma_e(s))``.

    A :class:`TanhGaussianActor` whose mean and log-std come from the GNN edge head instead of
    an MLP on the flat observation (same exact log-density and deterministic action).

    Args:
        obs_dim: ``n * F``; n_nodes, graph_edges: the graph; flow_edges: ``(2, E)`` action edges.
        action_low, action_high: per-edge flow bounds (scalars or ``(E,)``).
    Shapes: actions ``(B, E)``.
    """

    def __init__(self, obs_dim: int, n_nodes: int, graph_edges: EdgesLike, flow_edges: EdgesLike,
                 action_low: BoundLike, action_high: BoundLike, hidden: Sequence[int] = (256, 256), layers: int = 1,
                 log_std_min: float = -5.0, log_std_max: float = 2.0, edge_attr: EdgeAttr = None) -> None:
        n_edges = _edge_tensor(flow_edges, n_nodes, "flow_edges").shape[1]
        super().__init__(obs_dim, n_edges, action_low, action_high, hidden=(1,), log_std_min=log_std_min,
                         log_std_max=log_std_max, state_dependent_std=True)
        self.net = _EdgeHead(obs_dim, n_nodes, graph_edges, flow_edges, 2, hidden, layers, edge_attr)
        self.normalizer = self.net.trunk.normalizer

    def dist_params(self, obs: Tensor) -> Tuple[Tensor, Tensor]:
        """Pre-tanh ``mean, log_std``, each ``(B, E)``."""
        out = self.net(obs)  # the trunk normalises the observation
        return out[..., 0], out[..., 1].clamp(self.log_std_min, self.log_std_max)


# ---------------------------------------------------------------------------------- critics
class _GraphQ(nn.Module):
    """One critic: ``relu(W [features_u, a_u] + b)`` per node (or per edge ``u``), summed over the graph, then an MLP.

    ``hidden[0]`` is the per-unit width, ``hidden[1:]`` the MLP after pooling (per-edge inputs use
    :class:`_PairLayer`, so the per-edge cost is a gather and an add). Per node, the last
    ``global_actions`` action entries (e.g. the production) are appended to every node's input.
    """

    def __init__(self, obs_dim: int, n_nodes: int, graph_edges: EdgesLike, flow_edges: Optional[EdgesLike],
                 hidden: Sequence[int], layers: int, layer_norm: bool, global_actions: int = 0,
                 edge_attr: EdgeAttr = None) -> None:
        super().__init__()
        self.trunk = GraphTrunk(obs_dim, n_nodes, graph_edges, layers, edge_attr)
        self.n_nodes, self.global_actions = int(n_nodes), int(global_actions)
        f, hidden = self.trunk.n_features, tuple(hidden)
        self.per_edge = flow_edges is not None
        if self.per_edge:
            self.pair = _PairLayer(f, hidden[0], _edge_tensor(flow_edges, n_nodes, "flow_edges"), n_nodes, extra=1)
        else:
            self.node = nn.Linear(f + 1 + self.global_actions, hidden[0])
        self.norm = nn.LayerNorm(hidden[0]) if layer_norm else nn.Identity()
        self.mlp = MLP(hidden[0], 1, hidden[1:], layer_norm=layer_norm)

    def forward(self, obs: Tensor, action_unit: Tensor) -> Tensor:
        h = self.trunk(obs)
        if self.per_edge:
            x = self.pair(h, action_unit.unsqueeze(-1))
        else:
            n = self.n_nodes
            g = action_unit[..., None, n:].expand(*action_unit.shape[:-1], n, self.global_actions)
            x = self.node(torch.cat([h, action_unit[..., :n, None], g], -1))
        return self.mlp(self.norm(F.relu(x).sum(-2))).squeeze(-1)


class GraphTwinQ(nn.Module):
    """Twin graph critics ``Q_i(s, a)``; actions enter in the unit scale of ``[action_low, action_high]``.

    Args:
        flow_edges: ``None`` -> one action entry per node (``(B, n)``); else one per edge ``(B, E)``.
        global_actions: per-node actions only: extra entries after the ``n`` node entries (``(B, n + g)``).
    Shapes: ``obs (B, n F), action (B, da) -> (q1 (B,), q2 (B,))``.
    """

    def __init__(self, obs_dim: int, n_nodes: int, graph_edges: EdgesLike, action_low: BoundLike = 0.0,
                 action_high: BoundLike = 1.0, hidden: Sequence[int] = (256, 256), flow_edges: Optional[EdgesLike] = None,
                 layers: int = 1, layer_norm: bool = False, global_actions: int = 0, edge_attr: EdgeAttr = None) -> None:
        super().__init__()
        da = n_nodes + global_actions if flow_edges is None else _edge_tensor(flow_edges, n_nodes, "flow_edges").shape[1]
        self.action_dim = int(da)
        self.scaler = ActionScaler(action_low, action_high, self.action_dim)
        self.q1, self.q2 = (_GraphQ(obs_dim, n_nodes, graph_edges, flow_edges, hidden, layers, layer_norm, global_actions,
                                    edge_attr) for _ in range(2))

    def forward(self, obs: Tensor, action: Tensor) -> Tuple[Tensor, Tensor]:
        check_tensor("action", action, (obs.shape[0], self.action_dim), finite=False)
        u = self.scaler.to_unit(action)
        return self.q1(obs, u), self.q2(obs, u)

    def min(self, obs: Tensor, action: Tensor) -> Tensor:
        """``min(Q1, Q2)`` ``(B,)``."""
        q1, q2 = self(obs, action)
        return torch.minimum(q1, q2)


class GraphValue(nn.Module):
    """State value: encoder, sum over nodes, MLP. ``(B, n F) -> (B,)``."""

    def __init__(self, obs_dim: int, n_nodes: int, graph_edges: EdgesLike, hidden: Sequence[int] = (256, 256),
                 layers: int = 1, edge_attr: EdgeAttr = None) -> None:
        super().__init__()
        self.trunk = GraphTrunk(obs_dim, n_nodes, graph_edges, layers, edge_attr)
        self.mlp = MLP(self.trunk.n_features, 1, tuple(hidden))

    def forward(self, obs: Tensor) -> Tensor:
        return self.mlp(self.trunk(obs).sum(-2)).squeeze(-1)


# ---------------------------------------------------------------------------------- agents
class GraphNetworks:
    """Mixin overriding an agent's network factories with graph networks (put it first in the bases).

    Needs a config with :class:`GraphSpec` fields. Also measures SAC/CQL densities on the
    action set: the simplex for the Dirichlet actor (uniform proposals ``Dirichlet(1)``, density
    ``(n-1)!``), the unit box for per-edge flows.
    """

    config: Any
    obs_dim: int
    action_dim: int
    action_low: Tensor
    action_high: Tensor
    actor: nn.Module

    def _check_dims(self) -> None:
        c = self.config
        da = len(c.flow_edges[0]) if c.per_edge else c.n_nodes + (c.production_node >= 0)
        if self.action_dim != da:
            raise ValueError(f"action_dim must be {da} for this graph ({'edges' if c.per_edge else 'nodes'}), got {self.action_dim}")
        if self.obs_dim % c.n_nodes != 0:
            raise ValueError(f"obs_dim ({self.obs_dim}) must be a multiple of n_nodes ({c.n_nodes})")

    def set_obs_stats_from(self, dataset: Dataset) -> None:
        """Observation mean/std per ``(node group, feature)`` of ``dataset["observations"]``.

        The graph networks share weights over nodes, so nodes of one group (``config.norm_groups``,
        default all nodes) share statistics; see :func:`~ohio_layers.rl.graph_spec.node_group_stats`.
        """
        mean, std = node_group_stats(np.asarray(dataset["observations"], dtype=np.float64), self.config.node_groups)
        self.set_obs_stats(mean, std)  # type: ignore[attr-defined]

    def _make_actor(self) -> nn.Module:
        self._check_dims()
        c = self.config
        ea = c.edge_attr or None
        if c.per_edge:
            return EdgeGaussianActor(self.obs_dim, c.n_nodes, c.graph_edges, c.flow_edges, self.action_low, self.action_high,
                                     c.hidden, c.gnn_layers, c.log_std_min, c.log_std_max, edge_attr=ea)
        if c.production_node >= 0:
            return DirichletBetaActor(self.obs_dim, c.n_nodes, c.graph_edges, c.production_node, float(self.action_high[-1]),
                                      c.hidden, c.gnn_layers, c.min_concentration, edge_attr=ea)
        return DirichletActor(self.obs_dim, c.n_nodes, c.graph_edges, c.hidden, c.gnn_layers, c.min_concentration, edge_attr=ea)

    def _make_q(self) -> nn.Module:
        c = self.config
        return GraphTwinQ(self.obs_dim, c.n_nodes, c.graph_edges, self.action_low, self.action_high, c.hidden,
                          c.flow_edges if c.per_edge else None, c.gnn_layers, bool(getattr(c, "layer_norm", False)),
                          int(c.production_node >= 0), c.edge_attr or None)

    def _make_value(self) -> nn.Module:
        c = self.config
        return GraphValue(self.obs_dim, c.n_nodes, c.graph_edges, c.hidden, c.gnn_layers, c.edge_attr or None)

    def sample_unit(self, obs: Tensor) -> Tuple[Tensor, Tensor]:
        """``(action, log-density)``: on the simplex (Dirichlet; production in the unit interval) or in the unit box (per-edge)."""
        a, logp = self.actor.sample(obs)  # type: ignore[operator]
        if self.config.per_edge:
            logp = logp + self.actor.scaler.log_abs_det()  # type: ignore[union-attr]
        elif self.config.production_node >= 0:
            logp = logp + math.log(self.actor.production_max)  # type: ignore[union-attr]
        return a, logp

    def default_target_entropy(self) -> float:
        """Simplex: one nat per simplex dimension below the uniform Dirichlet's ``-lgamma(n)`` (``-da`` is unreachable for n >= 8)."""
        if self.config.per_edge:
            return super().default_target_entropy()  # type: ignore[misc]
        return -math.lgamma(self.action_dim) - (self.action_dim - 1)

    def max_entropy(self) -> Optional[float]:
        """Simplex: ``-lgamma(n)``, the entropy of ``Dirichlet(1)`` (uniform, density ``(n-1)!``)."""
        if self.config.per_edge:
            return super().max_entropy()  # type: ignore[misc]
        return -math.lgamma(self.action_dim)

    def random_actions(self, count: int, like: Tensor) -> Tuple[Tensor, Tensor]:
        """Uniform proposals: ``Dirichlet(1)`` on the simplex, or uniform on the per-edge flow box."""
        if self.config.per_edge:
            return super().random_actions(count, like)  # type: ignore[misc]
        n = self.config.n_nodes
        z = -torch.rand(count, n, device=like.device, dtype=like.dtype).clamp_min(1e-12).log()  # Exp(1)
        z = z / z.sum(-1, keepdim=True)
        if self.config.production_node >= 0:  # uniform production: density 1 in the unit interval
            z = torch.cat([z, self.action_high[-1].to(like) * torch.rand(count, 1, device=like.device, dtype=like.dtype)], -1)
        return z, torch.full((count,), math.lgamma(n), device=like.device, dtype=like.dtype)


@dataclasses.dataclass
class GraphIQLConfig(GraphSpec, IQLConfig):
    """:class:`~ohio_layers.rl.iql.IQLConfig` plus :class:`GraphSpec`."""


@dataclasses.dataclass
class GraphCQLConfig(GraphSpec, CQLConfig):
    """:class:`~ohio_layers.rl.cql.CQLConfig` plus :class:`GraphSpec`."""


@dataclasses.dataclass
class GraphSACConfig(GraphSpec, SACConfig):
    """:class:`~ohio_layers.rl.sac.SACConfig` plus :class:`GraphSpec`."""


class GraphIQL(GraphNetworks, IQL):
    """IQL with graph networks (Dirichlet or per-edge actor)."""

    config_class: ClassVar[Type[GraphIQLConfig]] = GraphIQLConfig
    config: GraphIQLConfig


class GraphCQL(GraphNetworks, CQL):
    """CQL / Cal-QL (``calql=True``) with graph networks."""

    config_class: ClassVar[Type[GraphCQLConfig]] = GraphCQLConfig
    config: GraphCQLConfig


class GraphSAC(GraphNetworks, SAC):
    """SAC with graph networks; ``GraphSAC.from_agent(graph_cql)`` fine-tunes a Cal-QL agent online."""

    config_class: ClassVar[Type[GraphSACConfig]] = GraphSACConfig
    config: GraphSACConfig


@dataclasses.dataclass
class GraphBCConfig(GraphSpec, BCConfig):
    """:class:`~ohio_layers.rl.bc.BCConfig` plus :class:`GraphSpec` (``loss="nll"`` only)."""


class GraphBC(GraphNetworks, BC):
    """Behaviour cloning (likelihood) with the graph actors."""

    config_class: ClassVar[Type[GraphBCConfig]] = GraphBCConfig
    config: GraphBCConfig

    def _build(self) -> None:
        if self.config.loss != "nll":
            raise ValueError(f"GraphBC supports loss='nll' only, got {self.config.loss!r}")
        self.actor = self._make_actor()
        self.optimizers = {"actor": torch.optim.Adam(self.actor.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)}
