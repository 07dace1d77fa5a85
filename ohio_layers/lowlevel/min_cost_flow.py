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
:class:`FlowSolution` whose ``status`` flags negative or non-integer idle counts and infeasible
targets (e.g. a node with target vehicles that no idle vehicle can reach in one hop on a
disconnected or sparse graph); flagged members get zero flows (everybody stays).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Dict, Hashable, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .._extras import require
from .._validate import check_tensor
from .base import Context, LowLevelController

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


# -------------------------------------------------------------- regularised transport (dual Newton)
def _dual_newton(a: Tensor, t: Tensor, C: Tensor, mask: Tensor, reg: float, tol: float, max_iter: int
                 ) -> Tuple[Tensor, Tensor, Tensor]:
    """Solve ``min_x <C, x> + reg/2 ||x||^2, x >= 0 on mask, row sums a, column sums t``.

    Dual: ``max_{u, v} u.a + v.t - (1 / 2 reg) sum_mask relu(u_i + v_j - C_ij)^2``; the primal is
    ``x_ij = relu(u_i + v_j - C_ij) / reg``. Regularised semi-smooth Newton with Armijo line
    search (all float64, batched). Returns ``x (B, n, n)``, active mask, converged ``(B,)``.
    """
    B, n = a.shape
    m = mask.to(C.dtype).expand(B, n, n)
    big = torch.finfo(C.dtype).max / 4
    Cm = torch.where(m > 0, C, torch.full_like(C, big))
    # start with every allowed edge active and total flow ~ N
    cnt = m.sum((1, 2))
    cmax = torch.where(m > 0, C, torch.full_like(C, -big)).amax((1, 2))
    two_s = torch.maximum(cmax + reg, (reg * a.sum(1) + (C * m).sum((1, 2))) / cnt)
    u = (two_s / 2)[:, None].expand(B, n).clone()
    v = u.clone()
    scale = 1.0 + torch.maximum(a.abs().amax(1), t.abs().amax(1))
    converged = torch.zeros(B, dtype=torch.bool)

    def dual(u: Tensor, v: Tensor) -> Tensor:
        r = torch.relu(u[:, :, None] + v[:, None, :] - Cm)
        return (u * a).sum(1) + (v * t).sum(1) - 0.5 / reg * (r * r).sum((1, 2))

    for _ in range(max_iter):
        r = u[:, :, None] + v[:, None, :] - Cm
        A = (r > 0).to(C.dtype)
        x = torch.relu(r) / reg
        gu, gv = a - x.sum(2), t - x.sum(1)  # ascent direction of the dual
        gn = torch.maximum(gu.abs().amax(1), gv.abs().amax(1))
        converged = gn <= tol * scale
        if bool(converged.all()):
            break
        # Newton system (K + mu I) d = reg g with K = [[diag(A 1), A], [A', diag(A' 1)]]; the dual is
        # invariant along (1, -1), so v[-1] is pinned (d_v[-1] = 0) and u eliminated (Schur complement)
        mu = (1e-3 * gn.clamp_max(1.0) + 1e-10)[:, None]
        dr = A.sum(2) + mu
        S = torch.diag_embed(A.sum(1) + mu) - A.transpose(1, 2) @ (A / dr[:, :, None])
        rhs = reg * gv - ((reg * gu / dr)[:, :, None] * A).sum(1)
        L, info = torch.linalg.cholesky_ex(S[:, :-1, :-1])
        dv = torch.zeros_like(v)
        dv[:, :-1] = torch.cholesky_solve(rhs[:, :-1, None], L)[:, :, 0]
        du = (reg * gu - (A * dv[:, None, :]).sum(2)) / dr
        d0 = dual(u, v)
        slope = (gu * du).sum(1) + (gv * dv).sum(1)
        alpha = torch.ones(B, dtype=C.dtype)
        done = converged | (info != 0)
        for _ls in range(40):
            ok = dual(u + alpha[:, None] * du, v + alpha[:, None] * dv) >= d0 + 1e-4 * alpha * slope - 1e-13 * d0.abs()
            done = done | ok
            if bool(done.all()):
                break
            alpha = torch.where(done, alpha, alpha * 0.5)
        upd = (~converged & (info == 0))[:, None]
        u = torch.where(upd, u + alpha[:, None] * du, u)
        v = torch.where(upd, v + alpha[:, None] * dv, v)
    r = u[:, :, None] + v[:, None, :] - Cm
    return torch.relu(r) / reg, (r > 0) & (m > 0), converged


class _RegTransport(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, t: Tensor, C: Tensor, mask: Tensor, reg: float, tol: float, max_iter: int
                ) -> Tuple[Tensor, Tensor]:
        dt = a.dtype
        a64, t64 = a.detach().double(), t.detach().double()
        t64 = t64 * (a64.sum(1, keepdim=True) / t64.sum(1, keepdim=True).clamp_min(1e-300))  # exact balance
        x, act, conv = _dual_newton(a64, t64, C.detach().double(), mask, reg, tol, max_iter)
        ctx.save_for_backward(act)
        ctx.reg = reg
        ctx.mark_non_differentiable(conv)
        return x.to(dt), conv

    @staticmethod
    def backward(ctx: Any, gx: Tensor, _gconv: Any) -> Tuple[Optional[Tensor], ...]:
        (act,) = ctx.saved_tensors
        reg = ctx.reg
        dt = gx.dtype
        A = act.double()
        G = gx.double() * A
        B, n, _ = A.shape
        K = torch.zeros(B, 2 * n, 2 * n, dtype=torch.float64)
        K[:, :n, :n] = torch.diag_embed(A.sum(2))
        K[:, n:, n:] = torch.diag_embed(A.sum(1))
        K[:, :n, n:] = A
        K[:, n:, :n] = A.transpose(1, 2)
        rhs = torch.cat([G.sum(2), G.sum(1)], 1)
        w = (torch.linalg.pinv(K, hermitian=True, rtol=1e-10) @ rhs[:, :, None])[:, :, 0]
        wu, wv = w[:, :n], w[:, n:]
        gC = A * (wu[:, :, None] + wv[:, None, :] - G) / reg
        return wu.to(dt), wv.to(dt), gC.to(dt), None, None, None, None


def regularized_transport(supply: Tensor, demand: Tensor, cost: Tensor, mask: Tensor, reg: float = 0.1,
                          tol: float = 1e-12, max_iter: int = 100) -> Tuple[Tensor, Tensor]:
    """Differentiable quadratically regularised transport, batched.

    ``min_x sum_ij C_ij x_ij + reg/2 sum_ij x_ij^2`` over ``x >= 0`` supported on ``mask``, with row
    sums ``supply`` and column sums ``demand`` (``sum(supply) == sum(demand)`` per problem).

    Args:
        supply: ``(B, n)``; demand: ``(B, n)``; cost: ``(B, n, n)`` (entries off the mask ignored);
        mask: ``(n, n)`` bool allowed pairs (include the diagonal for "stay").
    Returns:
        ``x (B, n, n)`` (differentiable w.r.t. supply, demand and cost by implicit
        differentiation; derivatives w.r.t. supply and demand are along perturbations that keep
        the sums equal) and ``converged (B,)`` bool.
    """
    gap = (supply.detach().sum(1) - demand.detach().sum(1)).abs()
    if bool((gap > 1e-9 * (1.0 + supply.detach().abs().sum(1))).any()):
        raise ValueError(f"supply and demand must have equal sums per problem; differences {gap.tolist()[:10]}")
    return _RegTransport.apply(supply, demand, cost, mask, float(reg), float(tol), int(max_iter))


# ------------------------------------------------------------------------------------ controller
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
        return self.solve(state, z, context.get("edge_cost"), check=False).flows

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
        """
        mode = self.mode if mode is None else mode
        n, E = self.num_nodes, self.num_edges
        if check:
            check_tensor("idle", idle, ("B", n))
            check_tensor("z", z, ("B", n))
            if idle.shape[0] != z.shape[0]:
                raise ValueError(f"idle and z batch sizes differ: {idle.shape[0]} vs {z.shape[0]}")
            if bool((z < -1e-9).any()):
                raise ValueError(f"z must be non-negative (a distribution over the {n} nodes)")
        zs = z.sum(1)
        if bool(((zs - 1).abs() > 1e-3).any()):
            bad = ((zs - 1).abs() > 1e-3).nonzero()[:, 0].tolist()
            raise ValueError(f"z rows must sum to 1 (a distribution over nodes); rows {bad[:10]} sum to {zs[bad[:10]].tolist()}")
        B = idle.shape[0]
        cost = self.edge_cost.to(z) if edge_cost is None else edge_cost
        if cost.dim() == 1:
            if check:
                check_tensor("edge_cost", cost, (E,))
            cost = cost.expand(B, E)
        elif check:
            check_tensor("edge_cost", cost, (B, E))
        dtype = z.dtype
        idle_d = idle.detach().to(torch.float64)
        status = torch.zeros(B, dtype=torch.long)
        status[(idle_d < 0).any(1)] = FlowStatus.NEGATIVE_COUNTS
        if mode == "lp":
            nonint = (idle_d - idle_d.round()).abs().amax(1) > 1e-6
            status[nonint & (status == 0)] = FlowStatus.NON_INTEGER_COUNTS
        zn = z / zs[:, None]
        total = idle.sum(1)
        flows = torch.zeros(B, E, dtype=dtype, device=z.device)
        if mode == "lp":
            targets = self.targets(idle_d.round(), z.detach().double())
            ok = status == 0
            x_lp, feas = self._solve_lp(idle_d.round(), targets, cost.detach().double(), ok)
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
            targets = total[:, None] * zn
            ok = status == 0
            if not self.complete and bool(ok.any()):
                # one-hop feasibility on a sparse graph, decided by the (continuous) LP
                _, feas = self._solve_lp(idle_d, targets.detach().double(), cost.detach().double(), ok, integral=False)
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

    # ------------------------------------------------------------------ QP (differentiable)
    def _solve_qp(self, idle: Tensor, targets: Tensor, cost: Tensor) -> Tuple[Tensor, Tensor]:
        """Regularised flows ``(b, E)`` and converged ``(b,)`` for a sub-batch of valid members."""
        b, n = idle.shape
        src, dst = self.edge_index
        C = _dense_costs(cost, src, dst, n)
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

    # ------------------------------------------------------------------ LP (exact, integral)
    def _solve_lp(self, idle: Tensor, targets: Tensor, cost: Tensor, ok: Tensor, integral: bool = True
                  ) -> Tuple[Tensor, Tensor]:
        """Exact LP flows ``(B, E)`` float64 and feasible ``(B,)`` for members with ``ok``."""
        B, E = cost.shape
        flows = torch.zeros(B, E, dtype=torch.float64)
        feas = torch.zeros(B, dtype=torch.bool)
        a_np, t_np, c_np = idle.numpy(), targets.numpy(), cost.numpy()
        for b in ok.nonzero()[:, 0].tolist():
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
            flows[b] = torch.from_numpy(np.maximum(x, 0.0))
            feas[b] = True
        return flows, feas

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


def _dense_costs(cost: Tensor, src: Tensor, dst: Tensor, n: int) -> Tensor:
    """``(b, E)`` edge costs -> ``(b, n, n)`` (zeros elsewhere, stays cost 0), differentiable."""
    b = cost.shape[0]
    flat = torch.zeros(b, n * n, dtype=cost.dtype, device=cost.device)
    flat = flat.index_add(1, src * n + dst, cost)
    return flat.view(b, n, n)
