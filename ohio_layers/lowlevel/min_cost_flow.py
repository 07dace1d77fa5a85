"""Min-cost-flow rebalancing controller: desired node distribution ``z`` -> integer edge flows.

The AMoD low level of the OHIO paper (reference §2.2). Given the idle vehicles per node
``a (B, n)`` and a desired distribution ``z (B, n)`` on the simplex, the controller

1. turns ``z`` into integer target counts ``d`` with ``sum(d) == sum(a)`` by **largest-remainder
   (Hamilton) rounding** of ``t = N z / sum(z)``, ``N = sum(a)``: every node gets ``floor(t_i)``
   and the ``N - sum(floor(t))`` leftover vehicles go to the nodes with the largest fractional
   parts (ties: lower node index first). Unlike the reference's ``floor`` (which leaves up to
   ``n - 1`` vehicles unassigned) the total is preserved, and the analytic inverse is exact: a
   ``z`` that is perturbed by less than ``1 / (2N)`` per node still rounds to the same counts;
2. solves the **transportation problem** (one hop per decision; only currently idle vehicles
   move)::

       min_x  sum_{(i,j) in E} c_ij x_ij
       s.t.   a_i - sum_j x_ij + sum_j x_ji = d_i      for every node i   (reach the targets)
              sum_j x_ij <= a_i                        for every node i   (only idle vehicles move)
              x >= 0.

   With the stay variables ``y_i = a_i - sum_j x_ij`` this is a transportation problem from
   supplies ``a`` to demands ``d`` over ``E`` plus the zero-cost diagonal; its constraint
   matrix is totally unimodular, so the simplex vertex returned by HiGHS (or networkx's network
   simplex) is integral. Self-loops of the graph are ignored (staying is the implicit ``y_i``).
   For multi-hop routing on a sparse road graph use :func:`metric_closure` first.

Device: everything but the exact LP runs on the inputs' device (status checks, rounding, the
regularised QP and its backward). The LP (``mode="lp"``, and the feasibility LP of a sparse
graph in ``mode="qp"``) is solved on the host by HiGHS: one copy of the batch there and one back
per call (:class:`~ohio_layers.lowlevel.flow_lp.TransportLP`), plus a few ``any()`` checks per
batch. Outputs (flows, targets, objective, status) are on the inputs' device.

Differentiability (a pure LP has zero cost gradients almost everywhere): the backward pass uses
the **quadratically regularised** transport problem ``min c.x + (reg/2)||x||^2`` (stays
included, same constraints with the continuous targets ``t``), solved *exactly* in its dual by
a batched semi-smooth Newton method and differentiated by the **implicit function theorem** on
its active set (closed form, one ``(2n, 2n)`` pseudo-inverse per problem). Two modes:

* ``mode="lp"`` (default): the returned flows are the exact integral LP optimum; if any input
  requires grad, the gradient is the regularised problem's (straight-through surrogate:
  ``x_lp + x_qp - x_qp.detach()``).
* ``mode="qp"``: the returned flows are the regularised solution itself (continuous); the
  gradients are exact derivatives of what is returned (``torch.autograd.gradcheck`` passes).

Gradients flow to ``z``, to the idle counts and to the edge costs (put per-sample costs
``(B, E)`` that require grad into the context under ``"edge_cost"``).

Per-sample problems do not fail the batch: :meth:`MinCostFlowController.solve` returns a
:class:`FlowSolution` whose ``status`` flags negative or non-integer idle counts, non-finite
inputs, invalid distributions and infeasible targets (e.g. a node with target vehicles that no
idle vehicle can reach in one hop on a disconnected or sparse graph); flagged members get zero
flows there (everybody stays) next to their status. The controller contract path
(``forward`` / ``act`` / ``law``, used by agents, wrappers and inverse problems) has no status
field, so there a flagged member's flows are **NaN**: the flag travels with the tensor and
cannot be mistaken for "nobody moves". ``forward`` (checked) raises on caller errors instead
(negative or non-integer counts, z off the simplex).

Module map: this file holds the controller; the exact LPs are in
:mod:`~ohio_layers.lowlevel.flow_lp`, the differentiable regularised transport in
:mod:`~ohio_layers.lowlevel.transport`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Dict, Hashable, List, Optional, Tuple

import torch
from torch import Tensor

from .._extras import require
from .._validate import check_tensor
from .base import Context, LowLevelController
from .flow_lp import TransportLP
from .transport import dense_costs, regularized_transport

__all__ = [
    "FlowStatus", "FlowSolution", "MinCostFlowController", "largest_remainder", "metric_closure",
    "regularized_transport",
]


class FlowStatus(IntEnum):
    """Per-sample outcome of :meth:`MinCostFlowController.solve`."""

    OK = 0
    NEGATIVE_COUNTS = 1  # some idle count < 0
    NON_INTEGER_COUNTS = 2  # some idle count is not an integer (LP mode only)
    INFEASIBLE = 3  # the targets cannot be reached in one hop on this graph
    NOT_CONVERGED = 4  # the regularised Newton solve did not reach its tolerance
    NON_FINITE = 5  # NaN or inf in the idle counts, z or the edge costs
    INVALID_Z = 6  # z has a negative entry or its row does not sum to 1 (unchecked calls only)


@dataclass
class FlowSolution:
    """Batched output of :meth:`MinCostFlowController.solve`.

    Attributes:
        flows: ``(B, E)`` flows on the controller's edges (integral in LP mode).
        targets: ``(B, n)`` counts after rebalancing the solver aimed at (integers in LP mode,
            ``N z / sum(z)`` in QP mode).
        objective: ``(B,)`` transport cost ``sum_e c_e flows_e`` (without the regulariser).
        status: ``(B,)`` int64 :class:`FlowStatus` codes.
    """

    flows: Tensor
    targets: Tensor
    objective: Tensor
    status: Tensor

    @property
    def ok(self) -> Tensor:
        """``(B,)`` bool, member solved."""
        return self.status == FlowStatus.OK


# ---------------------------------------------------------------------------------------- helpers
def largest_remainder(z: Tensor, total: Tensor) -> Tensor:
    """Integer counts ``(B, n)`` proportional to ``z`` that sum exactly to ``total``.

    Hamilton rounding of ``t = total * z / sum(z)``: ``floor(t)`` plus one extra unit for the
    ``total - sum(floor(t))`` entries with the largest fractional part (ties -> lower index).
    Rows with ``sum(z) <= 0`` are treated as uniform.

    Args:
        z: ``(B, n)`` non-negative weights.
        total: ``(B,)`` non-negative integers (float or int tensor).
    Returns:
        ``(B, n)`` float tensor of integers (dtype of ``z``).
    """
    z = z.detach()
    total = total.detach().to(z.dtype).round()
    s = z.sum(1, keepdim=True)
    zn = torch.where(s > 0, z / s.clamp_min(torch.finfo(z.dtype).tiny), torch.full_like(z, 1.0 / z.shape[1]))
    t = zn * total[:, None]
    fl = torch.floor(t + 1e-9 * total[:, None].clamp_min(1.0))  # absorb round-off just below an integer
    fl = torch.minimum(fl, t.ceil())
    left = (total - fl.sum(1)).round().long()  # in [0, n)
    frac = t - fl
    # stable ordering: descending fractional part, ascending index on ties
    order = torch.sort(-frac, dim=1, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(z.shape[1], device=z.device).expand_as(order))
    return fl + (rank < left[:, None]).to(z.dtype)


def metric_closure(graph: Any, cost_key: str = "time") -> Any:
    """Complete directed graph whose edge costs are shortest-path costs in ``graph``.

    Use it to let the one-hop controller route vehicles along multi-edge paths.
    """
    nx = require("networkx")
    out = nx.DiGraph()
    out.add_nodes_from(graph.nodes)
    lengths = dict(nx.all_pairs_dijkstra_path_length(graph, weight=cost_key))
    for u, row in lengths.items():
        for v, d in row.items():
            if u != v:
                out.add_edge(u, v, **{cost_key: float(d)})
    return out



class MinCostFlowController(LowLevelController):
    """Idle counts ``state (B, n)`` + distribution ``z (B, n)`` -> rebalancing flows ``(B, E)``.

    The graph is fixed at construction: nodes in ``list(graph.nodes)`` order (``self.nodes``),
    edges in ``list(graph.edges)`` order without self-loops (``self.edges``, ``self.edge_index
    (2, E)`` of node positions), costs from the edge attribute ``cost_key`` (``self.edge_cost
    (E,)``). Per-sample costs ``(B, E)`` can be passed in the context as ``"edge_cost"``.

    Args:
        graph: ``networkx.DiGraph`` (an undirected graph is used in both directions).
        cost_key: edge attribute with the travel time / cost (default ``"time"``).
        mode: ``"lp"`` (exact integral flows, surrogate gradient) or ``"qp"`` (regularised flows,
            exact gradient); see the module docstring.
        backend: LP solver, ``"highs"`` (highspy, model built once and re-solved cold, so the
            result never depends on earlier calls) or ``"networkx"`` (network simplex; exact for
            integer costs, otherwise costs are quantised to ``1e-9 * max|c|``).
        reg: quadratic regulariser of the differentiable problem (cost units per vehicle^2).
        qp_backend: ``"newton"`` (built-in, batched) or ``"cvxpylayers"`` (optional cross-check;
            needs ``cvxpylayers``).
        allow_disconnected: a graph that is not strongly connected raises ``ValueError`` unless
            this is set (infeasible members are then flagged per sample).
    """

    def __init__(
        self,
        graph: Any,
        cost_key: str = "time",
        mode: str = "lp",
        backend: str = "highs",
        reg: float = 0.1,
        qp_backend: str = "newton",
        allow_disconnected: bool = False,
        newton_tol: float = 1e-12,
        newton_max_iter: int = 100,
    ) -> None:
        nx = require("networkx")
        if not isinstance(graph, (nx.Graph, nx.DiGraph)):
            raise TypeError(f"graph must be a networkx Graph or DiGraph, got {type(graph).__name__}")
        if mode not in ("lp", "qp"):
            raise ValueError(f"mode must be 'lp' or 'qp', got {mode!r}")
        if backend not in ("highs", "networkx"):
            raise ValueError(f"backend must be 'highs' or 'networkx', got {backend!r}")
        if qp_backend not in ("newton", "cvxpylayers"):
            raise ValueError(f"qp_backend must be 'newton' or 'cvxpylayers', got {qp_backend!r}")
        if not reg > 0:
            raise ValueError(f"reg must be > 0, got {reg}")
        g = graph.to_directed() if not graph.is_directed() else graph
        nodes: List[Hashable] = list(g.nodes)
        if len(nodes) < 2:
            raise ValueError(f"graph needs at least 2 nodes, got {len(nodes)}")
        pos = {v: i for i, v in enumerate(nodes)}
        edges = [(u, v) for u, v in g.edges if u != v]
        if not edges:
            raise ValueError("graph has no edges besides self-loops")
        costs = []
        for u, v in edges:
            if cost_key not in g.edges[u, v]:
                raise ValueError(f"graph edge {(u, v)} has no cost attribute {cost_key!r}")
            c = float(g.edges[u, v][cost_key])
            if not math.isfinite(c):
                raise ValueError(f"graph edge {(u, v)} has a non-finite {cost_key!r}: {c}")
            costs.append(c)
        if not allow_disconnected and not nx.is_strongly_connected(g):
            raise ValueError("graph is not strongly connected; pass allow_disconnected=True to flag "
                             "infeasible problems per sample instead")
        n, E = len(nodes), len(edges)
        super().__init__(state_dim=n, z_dim=n, action_dim=E, horizon=1, z_low=0.0, z_high=1.0, action_low=0.0)
        self.nodes, self.edges = nodes, edges
        self.cost_key, self.mode, self.backend, self.qp_backend = cost_key, mode, backend, qp_backend
        self.reg, self.newton_tol, self.newton_max_iter = float(reg), float(newton_tol), int(newton_max_iter)
        src = torch.tensor([pos[u] for u, _ in edges], dtype=torch.long)
        dst = torch.tensor([pos[v] for _, v in edges], dtype=torch.long)
        self.register_buffer("edge_index", torch.stack([src, dst]), persistent=False)
        self.register_buffer("edge_cost", torch.tensor(costs, dtype=torch.float64), persistent=False)
        mask = torch.eye(n, dtype=torch.bool)
        mask[src, dst] = True
        self.register_buffer("pair_mask", mask, persistent=False)
        self.complete = bool(mask.all())
        self._cache: Dict[str, Any] = {}
        self.lp = TransportLP(self.edge_index, n, backend)

    failure_hint = "solve(state, z, edge_cost).status gives the reason per member (FlowStatus)"

    # ------------------------------------------------------------------ pickling (solver cache)
    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state

    @property
    def num_nodes(self) -> int:
        return self.state_dim

    @property
    def num_edges(self) -> int:
        return self.action_dim

    # ------------------------------------------------------------------ contract
    def context(self, state0: Tensor) -> Context:
        """``{"state0": (B, n), "edge_cost": (B, E)}``; replace ``edge_cost`` for per-sample costs."""
        return {"state0": state0, "edge_cost": self.edge_cost.to(state0).expand(state0.shape[0], -1)}

    def law(self, state: Tensor, z: Tensor, context: Context, step: int) -> Tensor:
        """Flows ``(B, E)``; NaN for members :meth:`solve` flags (their status is in ``solve(...).status``)."""
        sol = self.solve(state, z, context.get("edge_cost"), check=False)
        return torch.where(sol.ok[:, None].to(sol.flows.device), sol.flows, torch.full_like(sol.flows, float("nan")))

    def check_inputs(self, state: Tensor, z: Tensor) -> None:
        """Base checks plus the caller errors of this controller: counts must be non-negative
        (integers in LP mode) and every z row a distribution (sums to 1 within 1e-3)."""
        super().check_inputs(state, z)
        bad = (state < 0).any(1)
        if bool(bad.any()):
            raise ValueError(f"state (idle vehicles per node) must be >= 0; negative counts in rows "
                             f"{bad.nonzero()[:, 0].tolist()[:10]}")
        if self.mode == "lp":
            bad = (state - state.round()).abs().amax(1) > 1e-6
            if bool(bad.any()):
                raise ValueError(f"state (idle vehicles per node) must hold integers in mode='lp'; rows "
                                 f"{bad.nonzero()[:, 0].tolist()[:10]} do not")
        _check_distribution(z)

    def saturate(self, action: Tensor, state: Tensor, context: Context) -> Tensor:
        """Flows are feasible by construction; returned unchanged."""
        return action

    # ------------------------------------------------------------------ solving
    def targets(self, idle: Tensor, z: Tensor) -> Tensor:
        """Integer target counts ``(B, n)``: largest-remainder rounding of ``sum(idle) z / sum(z)``."""
        return largest_remainder(z, idle.detach().sum(1))

    def node_balance(self, idle: Tensor, flows: Tensor) -> Tensor:
        """Counts after rebalancing ``idle + inflow - outflow``, ``(B, n)``."""
        src, dst = self.edge_index
        out = torch.zeros_like(idle).index_add(1, src, flows)
        inn = torch.zeros_like(idle).index_add(1, dst, flows)
        return idle - out + inn

    def solve(self, idle: Tensor, z: Tensor, edge_cost: Optional[Tensor] = None, mode: Optional[str] = None,
              check: bool = True) -> FlowSolution:
        """Flows for every member; infeasible members are flagged in ``status`` (zero flows).

        Args:
            idle: ``(B, n)`` idle vehicles per node (the state).
            z: ``(B, n)`` desired distribution (non-negative; normalised here, its row sums must
                be within 1e-3 of 1).
            edge_cost: ``(E,)`` or ``(B, E)`` costs (default: the graph's).
            mode: override the controller's ``mode``.
            check: raise on caller errors (shapes, NaN/inf, z off the simplex); ``False`` (the
                ``act`` hot path) flags such members in ``status`` instead.
        """
        mode = self.mode if mode is None else mode
        n, E = self.num_nodes, self.num_edges
        if check:
            check_tensor("idle", idle, ("B", n))
            check_tensor("z", z, ("B", n))
            if idle.shape[0] != z.shape[0]:
                raise ValueError(f"idle and z batch sizes differ: {idle.shape[0]} vs {z.shape[0]}")
            _check_distribution(z)
        B = idle.shape[0]
        cost = self.edge_cost.to(z) if edge_cost is None else edge_cost
        if cost.dim() == 1:
            if check:
                check_tensor("edge_cost", cost, (E,))
            cost = cost.expand(B, E)
        elif check:
            check_tensor("edge_cost", cost, (B, E))
        dtype = z.dtype
        status = self._input_status(idle, z, cost, mode)
        # flagged members get harmless inputs so that nothing below sees NaN (their flows are 0)
        bad = (status != 0).to(z.device)[:, None]
        z = torch.where(bad, torch.full_like(z, 1.0 / n), z)
        idle = torch.where(bad, torch.zeros_like(idle), idle)
        cost = torch.where(bad, torch.zeros_like(cost), cost)
        idle_d = idle.detach().to(torch.float64)
        zn = z / z.sum(1, keepdim=True)
        total = idle.sum(1)
        if mode == "lp":
            targets = self.targets(idle_d.round(), z.detach().double())
            ok = status == 0
            x_lp, feas = self.lp.solve(idle_d.round(), targets, cost.detach().double(), ok)
            status[ok & ~feas] = FlowStatus.INFEASIBLE
            flows = x_lp.to(dtype)
            targets = targets.to(dtype)
            needs_grad = torch.is_grad_enabled() and (z.requires_grad or idle.requires_grad or cost.requires_grad)
            if needs_grad:
                ok = status == 0
                if bool(ok.any()):
                    x_qp, _ = self._solve_qp(idle[ok], total[ok, None] * zn[ok], cost[ok])
                    surrogate = torch.zeros_like(flows).index_put((ok.nonzero()[:, 0],), x_qp - x_qp.detach())
                    flows = flows + surrogate
        else:
            flows = torch.zeros(B, E, dtype=dtype, device=z.device)
            targets = total[:, None] * zn
            ok = status == 0
            if not self.complete and bool(ok.any()):
                # one-hop feasibility on a sparse graph, decided by the (continuous) LP
                _, feas = self.lp.solve(idle_d, targets.detach().double(), cost.detach().double(), ok, integral=False)
                status[ok & ~feas] = FlowStatus.INFEASIBLE
                ok = status == 0
            if bool(ok.any()):
                x_qp, conv = self._solve_qp(idle[ok], targets[ok], cost[ok])
                idx = ok.nonzero()[:, 0]
                status[idx[~conv]] = FlowStatus.NOT_CONVERGED
                keep = conv[:, None].to(dtype)
                flows = torch.zeros_like(flows).index_put((idx,), x_qp * keep)
        objective = (flows.detach().double() * cost.detach().double()).sum(1).to(dtype)
        return FlowSolution(flows, targets, objective, status)

    @staticmethod
    def _input_status(idle: Tensor, z: Tensor, cost: Tensor, mode: str) -> Tensor:
        """``(B,)`` int64 status from the inputs alone (first failing test wins)."""
        idle_d, z_d, c_d = idle.detach().double(), z.detach().double(), cost.detach().double()  # on their device
        status = torch.zeros(idle.shape[0], dtype=torch.long, device=idle.device)
        finite = torch.isfinite(idle_d).all(1) & torch.isfinite(z_d).all(1) & torch.isfinite(c_d).all(1)
        status[~finite] = FlowStatus.NON_FINITE
        status[(idle_d < 0).any(1) & (status == 0)] = FlowStatus.NEGATIVE_COUNTS
        if mode == "lp":
            nonint = (idle_d - idle_d.round()).abs().amax(1) > 1e-6
            status[nonint & (status == 0)] = FlowStatus.NON_INTEGER_COUNTS
        on_simplex = ~(z_d < -1e-9).any(1) & ((z_d.sum(1) - 1).abs() <= 1e-3)
        status[~on_simplex & (status == 0)] = FlowStatus.INVALID_Z
        return status

    # ------------------------------------------------------------------ QP (differentiable)
    def _solve_qp(self, idle: Tensor, targets: Tensor, cost: Tensor) -> Tuple[Tensor, Tensor]:
        """Regularised flows ``(b, E)`` and converged ``(b,)`` for a sub-batch of valid members."""
        b, n = idle.shape
        src, dst = self.edge_index
        C = dense_costs(cost, src, dst, n)
        if self.qp_backend == "cvxpylayers":
            X = self._cvxpylayers_qp(idle.to(cost.dtype), targets.to(cost.dtype), C)
            conv = torch.ones(b, dtype=torch.bool)
        else:
            a64, t64 = idle.double(), targets.double()
            t64 = t64 * (a64.sum(1, keepdim=True) / t64.sum(1, keepdim=True).clamp_min(1e-300))
            X, conv = regularized_transport(a64, t64, C.double(), self.pair_mask, self.reg,
                                            self.newton_tol, self.newton_max_iter)
        return X[:, src, dst].to(targets.dtype), conv

    def _cvxpylayers_qp(self, idle: Tensor, targets: Tensor, C: Tensor) -> Tensor:  # pragma: no cover - optional
        """The same regularised problem through cvxpylayers (cross-check backend)."""
        cp = require("cvxpy")
        layers = require("cvxpylayers.torch")
        n = self.num_nodes
        key = "cvxpylayer"
        if key not in self._cache:
            mask = self.pair_mask.numpy()
            X = cp.Variable((n, n), nonneg=True)
            a, t, c = cp.Parameter(n), cp.Parameter(n), cp.Parameter((n, n))
            cons = [cp.sum(X, axis=1) == a, cp.sum(X, axis=0) == t]
            if not mask.all():
                cons.append(cp.multiply(1.0 - mask, X) == 0)
            prob = cp.Problem(cp.Minimize(cp.sum(cp.multiply(c, X)) + self.reg / 2 * cp.sum_squares(X)), cons)
            self._cache[key] = layers.CvxpyLayer(prob, parameters=[a, t, c], variables=[X])
        (X,) = self._cache[key](idle, targets, C)
        return X


def _check_distribution(z: Tensor) -> None:
    """Raise naming the rows of ``z (B, n)`` that are not distributions over the nodes."""
    neg = (z < -1e-9).any(1)
    if bool(neg.any()):
        raise ValueError(f"z must be non-negative (a distribution over the {z.shape[1]} nodes); rows "
                         f"{neg.nonzero()[:, 0].tolist()[:10]} have negative entries")
    zs = z.sum(1)
    off = ~((zs - 1).abs() <= 1e-3)  # NaN-safe
    if bool(off.any()):
        bad = off.nonzero()[:, 0].tolist()[:10]
        raise ValueError(f"z rows must sum to 1 (a distribution over nodes); rows {bad} sum to {zs[bad].tolist()}")
