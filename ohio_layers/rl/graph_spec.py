"""The graph of a graph agent (:class:`GraphSpec`, :func:`graph_fields`) and its observation statistics.

Graph networks share their weights over nodes, so a feature must mean the same thing at every
node that the same weights read. Observation statistics are therefore pooled per
``(node group, feature)`` (:func:`node_group_stats`): nodes with the same role (the supply
chain's stores; all of AMoD's regions) form one group and get one mean/std per feature,
broadcast back to every node of the group. Per-``(node, feature)`` statistics (every node its own
group) would give each node a differently shifted and scaled input for the same weights, and a
node whose feature happens to be constant in the data a near-zero std that blows up any other
value at deployment.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from ..config import setting
from .graph_layers import EdgesLike, _edge_tensor

__all__ = ["GraphSpec", "graph_fields", "node_group_stats"]


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
        edge_attr: ``(E_graph, d_e)`` static edge features; non-empty = edge-conditioned encoder.
        production_node: ``>= 0`` adds the Beta production head on that node (node actions
            ``(n + 1,)``, the last scaled to ``[0, action_high[-1]]``); ``-1`` = none.
        norm_groups: ``(n,)`` group index per node for the observation statistics (``obs_norm``):
            one mean/std per ``(group, feature)``, see :func:`node_group_stats`. Empty (default) =
            all nodes one group. ``tuple(range(n))`` (every node its own group) reproduces
            per-``(node, feature)`` statistics; only ask for it when nodes are not interchangeable.
    """

    n_nodes: int = 0
    graph_edges: Tuple[Tuple[int, ...], Tuple[int, ...]] = ((), ())
    flow_edges: Tuple[Tuple[int, ...], Tuple[int, ...]] = ((), ())
    gnn_layers: int = 1
    min_concentration: float = 1e-3
    edge_attr: Tuple[Tuple[float, ...], ...] = setting((), allow_empty=True)
    production_node: int = -1
    norm_groups: Tuple[int, ...] = setting((), allow_empty=True)

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
        self.edge_attr = tuple(tuple(float(v) for v in row) for row in self.edge_attr)
        if self.edge_attr and (len(self.edge_attr) != len(self.graph_edges[0]) or len({len(r) for r in self.edge_attr}) != 1):
            raise ValueError(f"edge_attr must have one equally long row per graph edge ({len(self.graph_edges[0])}), "
                             f"got {len(self.edge_attr)} rows")
        self.production_node = int(self.production_node)
        if not -1 <= self.production_node < self.n_nodes or (self.production_node >= 0 and self.per_edge):
            raise ValueError(f"production_node must be -1 or a node index (node actions only), got {self.production_node}")
        self.norm_groups = check_groups(self.norm_groups, self.n_nodes) if len(self.norm_groups) else ()

    @property
    def per_edge(self) -> bool:
        """Whether the action is one flow per ``flow_edges`` entry (else a distribution over nodes)."""
        return len(self.flow_edges[0]) > 0

    @property
    def node_groups(self) -> Tuple[int, ...]:
        """``(n,)`` group index per node (``norm_groups``, or all zeros when it is empty)."""
        return self.norm_groups or (0,) * self.n_nodes


def check_groups(groups: Union[Sequence[int], np.ndarray], n_nodes: int, name: str = "norm_groups") -> Tuple[int, ...]:
    """``groups`` as a tuple of ``n_nodes`` non-negative ints; raises naming ``name``."""
    g = np.asarray(groups)
    if g.ndim != 1 or g.shape[0] != n_nodes:
        raise ValueError(f"{name} must hold one group index per node ({n_nodes}), got shape {tuple(g.shape)}")
    if g.size and (not np.issubdtype(g.dtype, np.integer) or int(g.min()) < 0):
        raise ValueError(f"{name} must be non-negative ints, got {g.tolist()}")
    return tuple(int(i) for i in g)


def node_group_stats(obs: Union[np.ndarray, Any], groups: Union[Sequence[int], np.ndarray],
                     min_std: float = 1e-6) -> Tuple[np.ndarray, np.ndarray]:
    """Per-``(group, feature)`` mean and std of node observations, broadcast back to the nodes.

    Args:
        obs: ``(B, n * F)`` flat observations (row-major ``(B, n, F)``) or ``(B, n, F)``.
        groups: ``(n,)`` group index per node; nodes of a group pool their ``B * |group|`` values
            of each feature into one mean and one (population) std.
        min_std: a feature whose pooled std is below ``min_std * max(1, |mean|)`` (constant in
            its group) gets std ``1``: it is centred, not divided by ~0 (which would blow up
            any other value met at deployment).
    Returns:
        ``mean, std`` float64 ``(n * F,)`` (flat, as :meth:`Agent.set_obs_stats` takes them);
        nodes of one group hold identical rows.
    """
    x = np.asarray(obs, dtype=np.float64)
    g = np.asarray(groups)
    if g.ndim != 1:
        raise ValueError(f"groups must be 1-D (one group index per node), got shape {tuple(g.shape)}")
    g = np.asarray(check_groups(g, g.shape[0], "groups"))
    n = g.shape[0]
    if x.ndim == 2:
        if x.shape[1] % n != 0:
            raise ValueError(f"obs has {x.shape[1]} columns, not a multiple of the {n} nodes of groups")
        x = x.reshape(x.shape[0], n, -1)
    if x.ndim != 3 or x.shape[1] != n or x.shape[0] < 1:
        raise ValueError(f"obs must have shape (B, n * F) or (B, n, F) with n = {n} and B >= 1, got {np.shape(obs)}")
    if not np.isfinite(x).all():
        raise ValueError("obs must be finite to compute normalisation statistics")
    mean, std = np.empty(x.shape[1:]), np.empty(x.shape[1:])
    for k in np.unique(g):
        vals = x[:, g == k, :].reshape(-1, x.shape[2])  # (B |group|, F)
        m, s = vals.mean(0), vals.std(0)
        s = np.where(s < min_std * np.maximum(1.0, np.abs(m)), 1.0, s)
        mean[g == k], std[g == k] = m, s
    return mean.reshape(-1), std.reshape(-1)


def graph_fields(n_nodes: int, graph_edges: EdgesLike, flow_edges: Optional[EdgesLike] = None,
                 edge_attr: Optional[Any] = None, production_node: Optional[int] = None,
                 norm_groups: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """Config entries of :class:`GraphSpec` from ``(2, E)`` arrays (``flow_edges=None``: Dirichlet;
    ``edge_attr (E_graph, d_e)``: edge-conditioned encoder; ``production_node``: Beta production head;
    ``norm_groups (n,)``: observation-statistics group per node, default one group)."""
    g = _edge_tensor(graph_edges, n_nodes, "graph_edges")
    out: Dict[str, Any] = {"n_nodes": int(n_nodes), "graph_edges": (tuple(g[0].tolist()), tuple(g[1].tolist()))}
    if flow_edges is not None:
        f = _edge_tensor(flow_edges, n_nodes, "flow_edges")
        out["flow_edges"] = (tuple(f[0].tolist()), tuple(f[1].tolist()))
    if edge_attr is not None:
        out["edge_attr"] = tuple(tuple(float(v) for v in row) for row in np.asarray(edge_attr, dtype=np.float64).reshape(g.shape[1], -1))
    if production_node is not None:
        out["production_node"] = int(production_node)
    if norm_groups is not None:
        out["norm_groups"] = check_groups(norm_groups, int(n_nodes))
    return out
