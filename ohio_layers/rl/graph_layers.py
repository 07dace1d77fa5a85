"""Graph layers shared by the graph networks of :mod:`ohio_layers.rl.gnn`.

* :class:`GCNEncoder` -- residual GCN convolutions with a fixed normalised adjacency.
* :class:`EdgeConvEncoder` -- edge-conditioned message passing: per directed edge ``j -> i`` a
  message ``m_ij = W_o relu(W [x_i, x_j, e_ij] + b)`` on the receiver's and sender's features and
  the edge's features ``e_ij``, summed at the receiver, ``h_i <- h_i + relu(sum_j m_ij)``
  (the supply chain's ``EdgeConv``, digest §5.3, with a residual so the width stays ``F``).
* :class:`GraphTrunk` -- observation normaliser + encoder (edge features select ``EdgeConvEncoder``).
* ``_PairLayer`` -- the first layer on per-edge inputs ``[h_src, h_dst, extra]``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validate import check_tensor
from .networks import ObsNormalizer

__all__ = ["EdgesLike", "normalized_adjacency", "GCNEncoder", "EdgeConvEncoder", "GraphTrunk"]

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


class EdgeConvEncoder(nn.Module):
    """Edge-conditioned message passing over node features: ``(B, n, F) -> (B, n, F)`` (module docstring).

    Args:
        n_nodes, n_features: ``n``, ``F``.
        edge_index: ``(2, E)`` directed edges ``src -> dst`` (messages to ``dst``).
        edge_attr: ``(E, d_e)`` static edge features (e.g. lead times).
        layers: rounds of message passing; hidden: message width (default ``2 F``).
    """

    def __init__(self, n_nodes: int, n_features: int, edge_index: EdgesLike, edge_attr: Union[Tensor, np.ndarray, Sequence],
                 layers: int = 1, hidden: Optional[int] = None) -> None:
        super().__init__()
        if not isinstance(layers, int) or layers < 1:
            raise ValueError(f"layers must be a positive int, got {layers!r}")
        e = _edge_tensor(edge_index, n_nodes, "edge_index")
        attr = torch.as_tensor(np.asarray(edge_attr, dtype=np.float32)).reshape(e.shape[1], -1)
        if attr.shape[1] < 1:
            raise ValueError(f"edge_attr must have shape ({e.shape[1]}, d_e) with d_e >= 1, got {tuple(attr.shape)}")
        self.n_nodes, self.n_features = int(n_nodes), int(n_features)
        width = hidden or 2 * self.n_features
        self.register_buffer("edge_attr", attr)
        # message to dst from [h_src, h_dst, e]; _PairLayer's dst one-hot (E, n) also aggregates at dst
        self.pairs = nn.ModuleList(_PairLayer(self.n_features, width, e, self.n_nodes, extra=attr.shape[1]) for _ in range(layers))
        self.outs = nn.ModuleList(nn.Linear(width, self.n_features) for _ in range(layers))

    def forward(self, x: Tensor) -> Tensor:
        check_tensor("x", x, ("B", self.n_nodes, self.n_features), finite=False)
        h = x
        attr = self.edge_attr.expand(*x.shape[:-2], *self.edge_attr.shape)
        for pair, out in zip(self.pairs, self.outs):
            m = out(F.relu(pair(h, attr)))  # (B, E, F)
            h = h + F.relu(torch.matmul(pair.dst_onehot.t(), m))
        return h


class GraphTrunk(nn.Module):
    """Normaliser + encoder shared by every graph network: flat ``(B, n F)`` -> nodes ``(B, n, F)``.

    ``edge_attr`` ``(E_graph, d_e)`` (non-empty) selects :class:`EdgeConvEncoder`, else :class:`GCNEncoder`.
    """

    def __init__(self, obs_dim: int, n_nodes: int, graph_edges: EdgesLike, layers: int, edge_attr: Optional[Sequence] = None) -> None:
        super().__init__()
        if not isinstance(n_nodes, (int, np.integer)) or n_nodes < 1 or obs_dim % n_nodes != 0:
            raise ValueError(f"obs_dim ({obs_dim}) must be a positive multiple of n_nodes ({n_nodes!r})")
        self.obs_dim, self.n_nodes, self.n_features = int(obs_dim), int(n_nodes), int(obs_dim // n_nodes)
        self.normalizer = ObsNormalizer(self.obs_dim)
        if edge_attr is not None and len(edge_attr) > 0:
            self.encoder: nn.Module = EdgeConvEncoder(self.n_nodes, self.n_features, graph_edges, edge_attr, layers)
        else:
            self.encoder = GCNEncoder(self.n_nodes, self.n_features, graph_edges, layers)

    def forward(self, obs: Tensor) -> Tensor:
        x = self.normalizer(obs)
        return self.encoder(x.reshape(*x.shape[:-1], self.n_nodes, self.n_features))
