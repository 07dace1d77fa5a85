"""Exact LP backends of the min-cost-flow controller (HiGHS, networkx network simplex, scipy).

One problem per batch member: the transportation problem from idle counts ``a (n,)`` to
targets ``t (n,)`` over the graph's edges plus the zero-cost stays (see
:mod:`ohio_layers.lowlevel.min_cost_flow`). Its constraint matrix is totally unimodular, so the
simplex vertex is integral for integral ``a`` and ``t``.

Device: HiGHS and networkx solve on the host, so a CUDA batch makes one round trip per call (not
per member): :meth:`TransportLP.solve` packs ``idle, targets, cost, ok`` into one ``(B, 2n + E + 1)``
tensor, copies it to the host once, and copies the flows and flags back in one tensor. That copy
synchronises the device; it is inherent to an exact host LP (the differentiable QP path of
:mod:`~ohio_layers.lowlevel.min_cost_flow` stays on the device).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .._extras import require

__all__ = ["TransportLP"]


class TransportLP:
    """Exact per-member transportation LPs on a fixed graph.

    Args:
        edge_index: ``(2, E)`` node positions of the edges (no self-loops).
        num_nodes: ``n``.
        backend: ``"highs"`` (model built once, re-solved cold) or ``"networkx"``.
    """

    def __init__(self, edge_index: Tensor, num_nodes: int, backend: str = "highs") -> None:
        if backend not in ("highs", "networkx"):
            raise ValueError(f"backend must be 'highs' or 'networkx', got {backend!r}")
        self.edge_index = edge_index.detach().cpu()
        self.num_nodes, self.num_edges, self.backend = int(num_nodes), int(edge_index.shape[1]), backend
        self._cache: Dict[str, Any] = {}

    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = {}  # the HiGHS model is rebuilt on demand
        return state

    def solve(self, idle: Tensor, targets: Tensor, cost: Tensor, ok: Tensor, integral: bool = True
              ) -> Tuple[Tensor, Tensor]:
        """Exact flows ``(B, E)`` float64 and feasible ``(B,)`` for the members with ``ok`` (others: 0, False),
        on the inputs' device (one host round trip per call, see the module doc)."""
        B, E = cost.shape
        n = idle.shape[1]
        packed = torch.cat([idle.detach().double(), targets.detach().double(), cost.detach().double(),
                            ok.to(idle.device, torch.float64)[:, None]], 1).cpu().numpy()  # the one copy to the host
        a_np, t_np, c_np, ok_np = packed[:, :n], packed[:, n:2 * n], packed[:, 2 * n:2 * n + E], packed[:, -1] > 0
        out = np.zeros((B, E + 1))  # flows, then the feasible flag
        for b in np.flatnonzero(ok_np):
            if self.backend == "networkx":
                x = self._lp_networkx(a_np[b], t_np[b], c_np[b])
            else:
                x = self._lp_highs(a_np[b], t_np[b], c_np[b])
            if x is None:
                continue
            if integral:
                x = np.round(x)
                if not np.allclose(self._balance_np(a_np[b], x), t_np[b], atol=1e-6):  # pragma: no cover - TU guards this
                    continue
            out[b, :E] = np.maximum(x, 0.0)
            out[b, E] = 1.0
        back = torch.from_numpy(out).to(idle.device)  # the one copy back
        return back[:, :E], back[:, E] > 0

    def _balance_np(self, a: np.ndarray, x: np.ndarray) -> np.ndarray:
        src, dst = self.edge_index.numpy()
        return a - np.bincount(src, x, len(a)) + np.bincount(dst, x, len(a))

    def _highs(self) -> Any:
        if "highs" in self._cache:
            return self._cache["highs"]
        n, E = self.num_nodes, self.num_edges
        src, dst = self.edge_index.numpy()
        V = E + n  # edges then stays
        s = np.r_[src, np.arange(n)]
        d = np.r_[dst, np.arange(n)]
        try:
            highspy = require("highspy")
        except ImportError:  # pragma: no cover - highspy is a dependency of scipy's HiGHS too
            self._cache["highs"] = None
            return None
        import scipy.sparse as sp

        A = sp.csc_matrix((np.ones(2 * V), (np.r_[s, n + d], np.r_[np.arange(V), np.arange(V)])), shape=(2 * n, V))
        h = highspy.Highs()
        h.silent()
        h.setOptionValue("presolve", "off")
        h.setOptionValue("solver", "simplex")
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = V, 2 * n
        lp.col_cost_ = np.zeros(V)
        lp.col_lower_ = np.zeros(V)
        lp.col_upper_ = np.full(V, highspy.kHighsInf)
        lp.row_lower_ = np.zeros(2 * n)
        lp.row_upper_ = np.zeros(2 * n)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = A.indptr
        lp.a_matrix_.index_ = A.indices
        lp.a_matrix_.value_ = A.data
        h.passModel(lp)
        self._cache["highs"] = (h, highspy, np.arange(V, dtype=np.int32), np.arange(2 * n, dtype=np.int32))
        return self._cache["highs"]

    def _lp_highs(self, a: np.ndarray, t: np.ndarray, c: np.ndarray) -> Optional[np.ndarray]:
        n, E = self.num_nodes, self.num_edges
        cache = self._highs()
        if cache is None:  # pragma: no cover
            return self._lp_scipy(a, t, c)
        h, highspy, cols, rows = cache
        h.clearSolver()  # cold start: the answer depends on this problem only
        h.changeColsCost(E + n, cols, np.r_[c, np.zeros(n)])
        rhs = np.r_[a, t].astype(np.float64)
        h.changeRowsBounds(2 * n, rows, rhs, rhs)
        h.run()
        if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return None
        return np.asarray(h.getSolution().col_value)[:E]

    def _lp_scipy(self, a: np.ndarray, t: np.ndarray, c: np.ndarray) -> Optional[np.ndarray]:  # pragma: no cover
        from scipy.optimize import linprog
        import scipy.sparse as sp

        n, E = self.num_nodes, self.num_edges
        src, dst = self.edge_index.numpy()
        V = E + n
        s, d = np.r_[src, np.arange(n)], np.r_[dst, np.arange(n)]
        A = sp.csr_matrix((np.ones(2 * V), (np.r_[s, n + d], np.r_[np.arange(V), np.arange(V)])), shape=(2 * n, V))
        res = linprog(np.r_[c, np.zeros(n)], A_eq=A, b_eq=np.r_[a, t], bounds=(0, None), method="highs-ds")
        return res.x[:E] if res.status == 0 else None

    def _lp_networkx(self, a: np.ndarray, t: np.ndarray, c: np.ndarray) -> Optional[np.ndarray]:
        import networkx as nx

        n, E = self.num_nodes, self.num_edges
        src, dst = self.edge_index.numpy()
        if np.all(c == np.round(c)):
            w = c.astype(np.int64)
        else:
            w = np.round(c / max(np.abs(c).max(), 1e-300) * 1e9).astype(np.int64)
        G = nx.DiGraph()
        for i in range(n):
            G.add_node(("s", i), demand=-int(round(a[i])))
            G.add_node(("d", i), demand=int(round(t[i])))
            G.add_edge(("s", i), ("d", i), weight=0)
        for e in range(E):
            G.add_edge(("s", int(src[e])), ("d", int(dst[e])), weight=int(w[e]))
        try:
            _, flow = nx.network_simplex(G)
        except nx.NetworkXUnfeasible:
            return None
        return np.array([flow[("s", int(src[e]))][("d", int(dst[e]))] for e in range(E)], dtype=np.float64)

