"""Graph neural network actor-critics over a region graph, pluggable into IQL, CQL / Cal-QL and SAC.

Observations are flat ``(B, n * F)`` vectors, the row-major flattening of node features
``(B, n, F)`` (``n`` nodes, ``F`` features per node, e.g. the AMoD env's 13). Every network owns

* an :class:`~ohio_layers.rl.networks.ObsNormalizer` on the flat observation (identity unless the
  agent sets statistics), and
* its own :class:`GCNEncoder`: ``layers`` GCN convolutions ``h <- h + relu(A_hat h W + b)`` with
  ``A_hat = D^-1/2 (A + I) D^-1/2`` of a fixed directed ``edge_index (2, E_graph)`` (messages
  flow ``src -> dst``; ``A_hat`` is a dense ``(n, n)`` buffer, as graphs here have tens of nodes).

Actors (same interface as :class:`~ohio_layers.rl.networks.TanhGaussianActor`:
``forward(obs, deterministic)``, ``log_prob(obs, action)``, reparameterised ``sample(obs)``):

* :class:`DirichletActor` -- a distribution over nodes, ``z ~ Dirichlet(alpha(s))`` with
  ``alpha_i = softplus(mlp(h_i)) + min_concentration``. ``log_prob`` is the exact Dirichlet
  log-density (actions are floored at ``z_min`` and renormalised, so smoothed labels with zeros
  stay finite); the deterministic action is the mean ``alpha / sum(alpha)`` per row.
* :class:`EdgeGaussianActor` -- one tanh-squashed Gaussian per edge of ``flow_edges (2, E)``
  (the end-to-end baseline's per-edge vehicle flows), from ``mlp([h_src, h_dst])``; it *is* a
  :class:`TanhGaussianActor` (exact squashed density, deployment = ``scale(tanh(mu))``).

Critics: :class:`GraphTwinQ` (per-node ``[h_i, a_i]`` or per-edge ``[h_src, h_dst, a_e]`` MLP,
summed over the graph, then linear) and :class:`GraphValue` (sum-pooled encoder, then an MLP).

Agents: :class:`GraphIQL`, :class:`GraphCQL` (``calql=True`` for Cal-QL) and :class:`GraphSAC`
are the library's agents with these networks (the :class:`GraphNetworks` mixin overrides their
network factories). The graph lives in the config (``n_nodes``, ``graph_edges``, ``flow_edges``;
see :func:`graph_fields`), so ``save``/``load`` and ``GraphSAC.from_agent`` rebuild it. Empty
``flow_edges`` = Dirichlet over nodes (OHIO's high level); non-empty = per-edge flows (end-to-end).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Dict, Optional, Sequence, Tuple, Type, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Dirichlet

from .._validate import check_tensor
from .cql import CQL, CQLConfig
from .iql import IQL, IQLConfig
from .networks import MLP, ActionScaler, BoundLike, ObsNormalizer, TanhGaussianActor
from .sac import SAC, SACConfig

__all__ = ["normalized_adjacency", "GCNEncoder", "DirichletActor", "EdgeGaussianActor", "GraphTwinQ", "GraphValue",
           "GraphSpec", "graph_fields", "GraphNetworks", "GraphIQLConfig", "GraphIQL", "GraphCQLConfig", "GraphCQL",
           "GraphSACConfig", "GraphSAC"]

EdgesLike = Union[Tensor, np.ndarray, Sequence[Sequence[int]]]


def _edge_tensor(edges: EdgesLike, n_nodes: int, name: str) -> Tensor:
    """``(2, E)`` int64 tensor of node indices in ``[0, n_nodes)``; raises naming ``name``."""
    e = torch.as_tensor(np.asarray(edges, dtype=np.int64).reshape(2, -1) if not isinstance(edges, Tensor) else edges)
    e = e.long()
    if e.dim() != 2 or e.shape[0] != 2:
        raise ValueError(f"{name} must have shape (2, E), got {tuple(e.shape)}")
    if e.numel() and (int(e.min()) < 0 or int(e.max()) >= n_nodes):
        raise ValueError(f"{name} has node indices outside [0, {n_nodes})")
    return e


def normalized_adjacency(edge_index: EdgesLike, n_nodes: int) -> Tensor:
    """Dense GCN propagation matrix ``D^-1/2 (A + I) D^-1/2`` ``(n, n)``, ``A[dst, src] = 1`` per edge.

    Row ``i`` of ``A_hat @ H`` aggregates node ``i``'s own features and those of its in-neighbours
    (duplicate edges count once, self-loops are added once).
    """
    e = _edge_tensor(edge_index, n_nodes, "edge_index")
    a = torch.zeros(n_nodes, n_nodes)
    a[e[1], e[0]] = 1.0
    a = ((a + torch.eye(n_nodes)) > 0).float()
    deg = a.sum(1)
    d = deg.rsqrt()
    return d[:, None] * a * d[None, :]


class GCNEncoder(nn.Module):
    """Residual GCN over node features: ``(B, n, F) -> (B, n, F)``.

    Each layer: ``h <- h + relu(A_hat h W + b)`` (``W (F, F)``; the reference uses one layer).

    Args:
        n_nodes, n_features: ``n``, ``F``.
        edge_index: ``(2, E_graph)`` directed message-passing edges.
        layers: number of convolutions.
    """

    def __init__(self, n_nodes: int, n_features: int, edge_index: EdgesLike, layers: int = 1) -> None:
        super().__init__()
        for name, v in (("n_nodes", n_nodes), ("n_features", n_features)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not isinstance(layers, int) or layers < 1:
            raise ValueError(f"layers must be a positive int, got {layers!r}")
        self.n_nodes, self.n_features = int(n_nodes), int(n_features)
        self.register_buffer("adjacency", normalized_adjacency(edge_index, self.n_nodes))
        self.convs = nn.ModuleList(nn.Linear(self.n_features, self.n_features) for _ in range(layers))

    def forward(self, x: Tensor) -> Tensor:
        check_tensor("x", x, ("B", self.n_nodes, self.n_features), finite=False)
        h = x
        for conv in self.convs:
            h = h + F.relu(torch.matmul(self.adjacency, conv(h)))
        return h


class _GraphTrunk(nn.Module):
    """Normaliser + encoder shared by every graph network: flat ``(B, n F)`` -> nodes ``(B, n, F)``."""

    def __init__(self, obs_dim: int, n_nodes: int, graph_edges: EdgesLike, layers: int) -> None:
        super().__init__()
        if not isinstance(n_nodes, (int, np.integer)) or n_nodes < 1 or obs_dim % n_nodes != 0:
            raise ValueError(f"obs_dim ({obs_dim}) must be a positive multiple of n_nodes ({n_nodes!r})")
        self.obs_dim, self.n_nodes, self.n_features = int(obs_dim), int(n_nodes), int(obs_dim // n_nodes)
        self.normalizer = ObsNormalizer(self.obs_dim)
        self.encoder = GCNEncoder(self.n_nodes, self.n_features, graph_edges, layers)

    def forward(self, obs: Tensor) -> Tensor:
        x = self.normalizer(obs)
        return self.encoder(x.reshape(*x.shape[:-1], self.n_nodes, self.n_features))


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
                 z_min: float = 1e-6) -> None:
        super().__init__()
        if not 0 < min_concentration < max_concentration:
            raise ValueError(f"need 0 < min_concentration < max_concentration, got {min_concentration} / {max_concentration}")
        if not 0 < z_min < 1.0 / n_nodes:
            raise ValueError(f"z_min must be in (0, 1/n_nodes), got {z_min}")
        self.trunk = _GraphTrunk(obs_dim, n_nodes, graph_edges, layers)
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


class _PairLayer(nn.Module):
    """First layer on per-edge inputs ``[h_src, h_dst, extra]`` without materialising the concatenation.

    ``W [h_src; h_dst; e] + b = (h W_s)[src] + (h W_d)[dst] + e W_e + b``: the node projections are
    computed once per node, so the cost per edge is a gather and an add.
    Shapes: ``h (..., n, F)``, ``extra (..., E, d_extra)`` or ``None`` -> ``(..., E, out)``.
    """

    def __init__(self, n_features: int, out: int, edges: Tensor, n_nodes: int, extra: int = 0) -> None:
        super().__init__()
        e = torch.arange(edges.shape[1])
        # gathers as one-hot matmuls (E, n): much faster than indexing, forward and backward, on CPU
        for name, row in (("src_onehot", edges[0]), ("dst_onehot", edges[1])):
            m = torch.zeros(edges.shape[1], n_nodes)
            m[e, row] = 1.0
            self.register_buffer(name, m)
        self.src = nn.Linear(n_features, out)
        self.dst = nn.Linear(n_features, out, bias=False)
        self.extra = nn.Linear(extra, out, bias=False) if extra else None

    def forward(self, h: Tensor, extra: Optional[Tensor] = None) -> Tensor:
        x = torch.matmul(self.src_onehot, self.src(h)) + torch.matmul(self.dst_onehot, self.dst(h))
        if self.extra is not None:
            if extra is None:
                raise ValueError("extra must be given to a _PairLayer built with extra inputs")
            x = x + self.extra(extra)
        return x


class _EdgeHead(nn.Module):
    """``(B, n F) -> (B, E, out)``: ``mlp([h_src, h_dst])`` per edge of ``flow_edges`` (first layer via :class:`_PairLayer`)."""

    def __init__(self, obs_dim: int, n_nodes: int, graph_edges: EdgesLike, flow_edges: EdgesLike, out: int,
                 hidden: Sequence[int], layers: int) -> None:
        super().__init__()
        self.trunk = _GraphTrunk(obs_dim, n_nodes, graph_edges, layers)
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
                 log_std_min: float = -5.0, log_std_max: float = 2.0) -> None:
        n_edges = _edge_tensor(flow_edges, n_nodes, "flow_edges").shape[1]
        super().__init__(obs_dim, n_edges, action_low, action_high, hidden=(1,), log_std_min=log_std_min,
                         log_std_max=log_std_max, state_dependent_std=True)
        self.net = _EdgeHead(obs_dim, n_nodes, graph_edges, flow_edges, 2, hidden, layers)
        self.normalizer = self.net.trunk.normalizer

    def dist_params(self, obs: Tensor) -> Tuple[Tensor, Tensor]:
        """Pre-tanh ``mean, log_std``, each ``(B, E)``."""
        out = self.net(obs)  # the trunk normalises the observation
        return out[..., 0], out[..., 1].clamp(self.log_std_min, self.log_std_max)


# ---------------------------------------------------------------------------------- critics
class _GraphQ(nn.Module):
    """One critic: ``relu(W [features_u, a_u] + b)`` per node (or per edge ``u``), summed over the graph, then an MLP.

    ``hidden[0]`` is the per-unit width, ``hidden[1:]`` the MLP after pooling (per-edge inputs use
    :class:`_PairLayer`, so the per-edge cost is a gather and an add).
    """

    def __init__(self, obs_dim: int, n_nodes: int, graph_edges: EdgesLike, flow_edges: Optional[EdgesLike],
                 hidden: Sequence[int], layers: int, layer_norm: bool) -> None:
        super().__init__()
        self.trunk = _GraphTrunk(obs_dim, n_nodes, graph_edges, layers)
        f, hidden = self.trunk.n_features, tuple(hidden)
        self.per_edge = flow_edges is not None
        if self.per_edge:
            self.pair = _PairLayer(f, hidden[0], _edge_tensor(flow_edges, n_nodes, "flow_edges"), n_nodes, extra=1)
        else:
            self.node = nn.Linear(f + 1, hidden[0])
        self.norm = nn.LayerNorm(hidden[0]) if layer_norm else nn.Identity()
        self.mlp = MLP(hidden[0], 1, hidden[1:], layer_norm=layer_norm)

    def forward(self, obs: Tensor, action_unit: Tensor) -> Tensor:
        h = self.trunk(obs)
        a = action_unit.unsqueeze(-1)
        x = self.pair(h, a) if self.per_edge else self.node(torch.cat([h, a], -1))
        return self.mlp(self.norm(F.relu(x).sum(-2))).squeeze(-1)


class GraphTwinQ(nn.Module):
    """Twin graph critics ``Q_i(s, a)``; actions enter in the unit scale of ``[action_low, action_high]``.

    Args:
        flow_edges: ``None`` -> one action entry per node (``(B, n)``); else one per edge ``(B, E)``.
    Shapes: ``obs (B, n F), action (B, da) -> (q1 (B,), q2 (B,))``.
    """

    def __init__(self, obs_dim: int, n_nodes: int, graph_edges: EdgesLike, action_low: BoundLike = 0.0,
                 action_high: BoundLike = 1.0, hidden: Sequence[int] = (256, 256), flow_edges: Optional[EdgesLike] = None,
                 layers: int = 1, layer_norm: bool = False) -> None:
        super().__init__()
        da = n_nodes if flow_edges is None else _edge_tensor(flow_edges, n_nodes, "flow_edges").shape[1]
        self.action_dim = int(da)
        self.scaler = ActionScaler(action_low, action_high, self.action_dim)
        self.q1 = _GraphQ(obs_dim, n_nodes, graph_edges, flow_edges, hidden, layers, layer_norm)
        self.q2 = _GraphQ(obs_dim, n_nodes, graph_edges, flow_edges, hidden, layers, layer_norm)

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
                 layers: int = 1) -> None:
        super().__init__()
        self.trunk = _GraphTrunk(obs_dim, n_nodes, graph_edges, layers)
        self.mlp = MLP(self.trunk.n_features, 1, tuple(hidden))

    def forward(self, obs: Tensor) -> Tensor:
        return self.mlp(self.trunk(obs).sum(-2)).squeeze(-1)


# ---------------------------------------------------------------------------------- agents
@dataclasses.dataclass
class GraphSpec:
    """The graph of a graph agent (mixed into its config; use :func:`graph_fields` to fill it).

    Attributes:
        n_nodes: ``n`` (observations are ``(n * F,)``).
        graph_edges: ``(2, E_graph)`` GCN message-passing edges as two index tuples.
        flow_edges: ``(2, E)`` action edges for per-edge flows (end-to-end); empty = Dirichlet
            over the nodes (OHIO's high level).
        gnn_layers: GCN layers per encoder.
        min_concentration: Dirichlet ``alpha`` floor.
    """

    n_nodes: int = 0
    graph_edges: Tuple[Tuple[int, ...], Tuple[int, ...]] = ((), ())
    flow_edges: Tuple[Tuple[int, ...], Tuple[int, ...]] = ((), ())
    gnn_layers: int = 1
    min_concentration: float = 1e-3

    def __post_init__(self) -> None:
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        if int(self.n_nodes) < 2:
            raise ValueError(f"n_nodes must be >= 2 (fill it with graph_fields(...)), got {self.n_nodes}")
        self.n_nodes = int(self.n_nodes)
        for name in ("graph_edges", "flow_edges"):
            value = getattr(self, name)
            rows = [tuple(int(i) for i in r) for r in value]
            if len(rows) != 2 or len(rows[0]) != len(rows[1]):
                raise ValueError(f"{name} must be two equally long index sequences (2, E), got {len(rows)} rows")
            if any(not 0 <= i < self.n_nodes for r in rows for i in r):
                raise ValueError(f"{name} has node indices outside [0, {self.n_nodes})")
            setattr(self, name, (rows[0], rows[1]))
        if int(self.gnn_layers) < 1:
            raise ValueError(f"gnn_layers must be >= 1, got {self.gnn_layers}")
        if self.min_concentration <= 0:
            raise ValueError(f"min_concentration must be > 0, got {self.min_concentration}")

    @property
    def per_edge(self) -> bool:
        """Whether the action is one flow per ``flow_edges`` entry (else a distribution over nodes)."""
        return len(self.flow_edges[0]) > 0


def graph_fields(n_nodes: int, graph_edges: EdgesLike, flow_edges: Optional[EdgesLike] = None) -> Dict[str, Any]:
    """Config entries ``{"n_nodes", "graph_edges", "flow_edges"}`` from ``(2, E)`` arrays (``flow_edges=None``: Dirichlet)."""
    g = _edge_tensor(graph_edges, n_nodes, "graph_edges")
    out: Dict[str, Any] = {"n_nodes": int(n_nodes), "graph_edges": (tuple(g[0].tolist()), tuple(g[1].tolist()))}
    if flow_edges is not None:
        f = _edge_tensor(flow_edges, n_nodes, "flow_edges")
        out["flow_edges"] = (tuple(f[0].tolist()), tuple(f[1].tolist()))
    return out


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
        da = len(c.flow_edges[0]) if c.per_edge else c.n_nodes
        if self.action_dim != da:
            raise ValueError(f"action_dim must be {da} for this graph ({'edges' if c.per_edge else 'nodes'}), got {self.action_dim}")
        if self.obs_dim % c.n_nodes != 0:
            raise ValueError(f"obs_dim ({self.obs_dim}) must be a multiple of n_nodes ({c.n_nodes})")

    def _make_actor(self) -> nn.Module:
        self._check_dims()
        c = self.config
        if c.per_edge:
            return EdgeGaussianActor(self.obs_dim, c.n_nodes, c.graph_edges, c.flow_edges, self.action_low, self.action_high,
                                     c.hidden, c.gnn_layers, c.log_std_min, c.log_std_max)
        return DirichletActor(self.obs_dim, c.n_nodes, c.graph_edges, c.hidden, c.gnn_layers, c.min_concentration)

    def _make_q(self) -> nn.Module:
        c = self.config
        return GraphTwinQ(self.obs_dim, c.n_nodes, c.graph_edges, self.action_low, self.action_high, c.hidden,
                          c.flow_edges if c.per_edge else None, c.gnn_layers, bool(getattr(c, "layer_norm", False)))

    def _make_value(self) -> nn.Module:
        c = self.config
        return GraphValue(self.obs_dim, c.n_nodes, c.graph_edges, c.hidden, c.gnn_layers)

    def sample_unit(self, obs: Tensor) -> Tuple[Tensor, Tensor]:
        """``(action, log-density)``: on the simplex (Dirichlet) or in the unit box (per-edge)."""
        a, logp = self.actor.sample(obs)  # type: ignore[operator]
        if self.config.per_edge:
            logp = logp + self.actor.scaler.log_abs_det()  # type: ignore[union-attr]
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
        n = self.action_dim
        z = -torch.rand(count, n, device=like.device, dtype=like.dtype).clamp_min(1e-12).log()  # Exp(1)
        z = z / z.sum(-1, keepdim=True)
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
