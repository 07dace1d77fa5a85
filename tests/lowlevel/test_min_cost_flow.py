"""MinCostFlowController: exact integral LP flows, regularised gradients, per-sample status."""
from __future__ import annotations

import copy
import pickle

import networkx as nx
import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from ohio_layers.lowlevel.base import LowLevelController
from ohio_layers.lowlevel.min_cost_flow import (
    FlowStatus, MinCostFlowController, largest_remainder, metric_closure, regularized_transport,
)


def complete_graph(n: int, seed: int, integer: bool = False) -> nx.DiGraph:
    rng = np.random.default_rng(seed)
    pts = rng.random((n, 2))
    g = nx.DiGraph()
    for i in range(n):
        for j in range(n):
            if i != j:
                t = np.linalg.norm(pts[i] - pts[j]) * (1 + 0.3 * rng.random()) + 0.05
                g.add_edge(i, j, time=float(np.ceil(10 * t)) if integer else float(t))
    return g


def problems(n: int, B: int, seed: int, dtype=torch.float64):
    rng = np.random.default_rng(seed)
    idle = torch.tensor(rng.multinomial(5 * n, np.ones(n) / n, size=B), dtype=dtype)
    z = torch.tensor(rng.dirichlet(np.ones(n), size=B), dtype=dtype)
    return idle, z


def reference_lp(ctrl: MinCostFlowController, a: np.ndarray, d: np.ndarray, c: np.ndarray) -> float:
    """Independent HiGHS solve of the edge formulation (conservation + outflow <= idle)."""
    n, E = ctrl.num_nodes, ctrl.num_edges
    src, dst = ctrl.edge_index.numpy()
    inc = np.zeros((n, E))
    inc[src, np.arange(E)] -= 1
    inc[dst, np.arange(E)] += 1
    out = np.zeros((n, E))
    out[src, np.arange(E)] = 1
    res = linprog(c, A_eq=inc, b_eq=d - a, A_ub=out, b_ub=a, bounds=(0, None), method="highs")
    assert res.status == 0
    return float(res.fun)


def reference_network_simplex(ctrl: MinCostFlowController, a: np.ndarray, d: np.ndarray, c: np.ndarray) -> int:
    """networkx network simplex on the bipartite (supply -> demand) graph, integer costs."""
    g = nx.DiGraph()
    n = ctrl.num_nodes
    for i in range(n):
        g.add_node(("s", i), demand=-int(a[i]))
        g.add_node(("d", i), demand=int(d[i]))
        g.add_edge(("s", i), ("d", i), weight=0)
    for e, (i, j) in enumerate(ctrl.edge_index.T.tolist()):
        g.add_edge(("s", i), ("d", j), weight=int(c[e]))
    cost, _ = nx.network_simplex(g)
    return cost


# ----------------------------------------------------------------------------------- rounding
def test_largest_remainder_preserves_total_and_is_within_one():
    torch.manual_seed(0)
    z = torch.distributions.Dirichlet(torch.ones(7, dtype=torch.float64)).sample((50,))
    total = torch.randint(0, 200, (50,)).double()
    d = largest_remainder(z, total)
    assert torch.equal(d.sum(1), total)
    assert bool((d == d.round()).all()) and bool((d >= 0).all())
    assert float((d - z * total[:, None]).abs().max()) < 1.0
    # exact integers are returned unchanged, ties go to the lower index
    assert largest_remainder(torch.tensor([[0.25, 0.5, 0.25]]), torch.tensor([4.0])).tolist() == [[1.0, 2.0, 1.0]]
    assert largest_remainder(torch.tensor([[0.5, 0.5]]), torch.tensor([3.0])).tolist() == [[2.0, 1.0]]
    assert largest_remainder(torch.tensor([[1 / 3, 1 / 3, 1 / 3]]), torch.tensor([2.0])).tolist() == [[1.0, 1.0, 0.0]]


# ----------------------------------------------------------------------------------- LP forward
@pytest.mark.parametrize("integer", [False, True])
def test_lp_flows_are_integral_and_optimal(integer):
    g = complete_graph(8, seed=1, integer=integer)
    ctrl = MinCostFlowController(g)
    idle, z = problems(8, 6, seed=2)
    sol = ctrl.solve(idle, z)
    assert bool(sol.ok.all())
    x = sol.flows
    assert torch.equal(x, x.round()) and bool((x >= 0).all())
    assert torch.equal(ctrl.node_balance(idle, x), sol.targets)
    assert torch.equal(sol.targets.sum(1), idle.sum(1))
    src = ctrl.edge_index[0]
    assert bool((torch.zeros_like(idle).index_add(1, src, x) <= idle).all())
    c = ctrl.edge_cost.numpy()
    for b in range(len(idle)):
        a, d = idle[b].numpy(), sol.targets[b].numpy()
        assert abs(float(sol.objective[b]) - reference_lp(ctrl, a, d, c)) <= 1e-9 * max(1.0, abs(float(sol.objective[b])))
        if integer:
            assert float(sol.objective[b]) == reference_network_simplex(ctrl, a, d, c)


def test_networkx_backend_matches_highs_objective():
    g = complete_graph(6, seed=3, integer=True)
    idle, z = problems(6, 4, seed=4)
    s1 = MinCostFlowController(g, backend="highs").solve(idle, z)
    s2 = MinCostFlowController(g, backend="networkx").solve(idle, z)
    assert torch.equal(s1.objective, s2.objective)
    assert torch.equal(s2.flows, s2.flows.round())
    ctrl = MinCostFlowController(g)
    assert torch.equal(ctrl.node_balance(idle, s2.flows), s1.targets)


def test_forward_contract_and_context_costs():
    g = complete_graph(5, seed=5)
    ctrl = MinCostFlowController(g)
    assert isinstance(ctrl, LowLevelController)
    assert (ctrl.state_dim, ctrl.z_dim, ctrl.action_dim) == (5, 5, 20)
    idle, z = problems(5, 3, seed=6)
    x = ctrl(idle, z)
    assert torch.equal(x, ctrl.solve(idle, z).flows)
    # a per-sample cost in the context changes the answer: make edge 0 free for member 0
    ctx = ctrl.context(idle)
    assert ctx["edge_cost"].shape == (3, 20)
    cost = ctx["edge_cost"].clone()
    cost[0] = 100.0
    cost[0, :4] = 0.0  # node 0 may send for free
    ctx["edge_cost"] = cost
    x2 = ctrl(idle, z, context=ctx)
    assert torch.equal(x2[1:], x[1:])
    assert float((x2[0] * cost[0]).sum()) <= float((x[0] * cost[0]).sum())


@pytest.mark.parametrize("mode", ["lp", "qp"])
def test_float32_inputs(mode):
    g = complete_graph(5, seed=21)
    idle, z = problems(5, 3, seed=22, dtype=torch.float32)
    ctrl = MinCostFlowController(g, mode=mode)
    z = z.requires_grad_(True)
    sol = ctrl.solve(idle, z)
    assert sol.flows.dtype == torch.float32 and bool(sol.ok.all())
    torch.testing.assert_close(ctrl.node_balance(idle, sol.flows.detach()), sol.targets.detach(), atol=1e-3, rtol=0)
    sol.flows.sum().backward()
    assert z.grad.dtype == torch.float32 and bool(torch.isfinite(z.grad).all())
    with pytest.raises(ValueError, match="z"):
        ctrl(idle, z.detach() * 2)  # above the upper bound 1


def test_seeded_and_batch_independent():
    g = complete_graph(6, seed=7)
    # symmetric costs create ties; the answer must still not depend on earlier calls or the batch
    for u, v in list(g.edges):
        g.edges[u, v]["time"] = 1.0
    ctrl = MinCostFlowController(g)
    idle, z = problems(6, 5, seed=8)
    full = ctrl.solve(idle, z).flows
    alone = torch.cat([ctrl.solve(idle[i : i + 1], z[i : i + 1]).flows for i in reversed(range(5))][::-1])
    assert torch.equal(full, alone)
    assert torch.equal(full, MinCostFlowController(g).solve(idle, z).flows)


# ----------------------------------------------------------------------------------- status
def test_infeasible_members_are_flagged_without_failing_the_batch():
    g = nx.DiGraph()
    g.add_edge(0, 1, time=1.0)
    g.add_edge(1, 0, time=1.0)
    g.add_edge(2, 3, time=1.0)  # 3 can only be reached from 2; {0,1} and {2,3} are disconnected
    g.add_edge(3, 2, time=1.0)
    with pytest.raises(ValueError, match="graph"):
        MinCostFlowController(g)
    ctrl = MinCostFlowController(g, allow_disconnected=True)
    idle = torch.tensor([[2.0, 2.0, 2.0, 2.0],   # ok: balance inside each component
                         [4.0, 0.0, 0.0, 0.0],   # infeasible: targets in the other component
                         [2.0, -1.0, 2.0, 2.0],  # negative count
                         [1.5, 2.5, 2.0, 2.0],   # non-integer count
                         [3.0, 1.0, 0.0, 4.0]], dtype=torch.float64)
    z = torch.tensor([[0.375, 0.125, 0.125, 0.375],
                      [0.25, 0.25, 0.25, 0.25],
                      [0.25, 0.25, 0.25, 0.25],
                      [0.25, 0.25, 0.25, 0.25],
                      [0.0, 0.5, 0.25, 0.25]], dtype=torch.float64)
    sol = ctrl.solve(idle, z)
    assert sol.status.tolist() == [FlowStatus.OK, FlowStatus.INFEASIBLE, FlowStatus.NEGATIVE_COUNTS,
                                   FlowStatus.NON_INTEGER_COUNTS, FlowStatus.OK]
    assert bool((sol.flows[1:4] == 0).all())
    assert torch.equal(ctrl.node_balance(idle[[0, 4]], sol.flows[[0, 4]]), sol.targets[[0, 4]])
    assert torch.equal(sol.flows[4], ctrl.solve(idle[4:], z[4:]).flows[0])
    # the regularised mode flags the same members
    q = MinCostFlowController(g, allow_disconnected=True, mode="qp").solve(idle, z)
    assert q.status.tolist()[:3] == [FlowStatus.OK, FlowStatus.INFEASIBLE, FlowStatus.NEGATIVE_COUNTS]


def test_errors_name_the_argument():
    g = complete_graph(4, seed=9)
    ctrl = MinCostFlowController(g)
    idle, z = problems(4, 2, seed=10)
    with pytest.raises(ValueError, match="state"):
        ctrl(idle[:, :3], z)
    with pytest.raises(ValueError, match="z"):
        ctrl(idle, torch.full_like(z, float("nan")))
    with pytest.raises(ValueError, match="z rows must sum to 1"):
        ctrl(idle, z * 0.5)
    with pytest.raises(ValueError, match="edge_cost"):
        ctrl.solve(idle, z, edge_cost=torch.ones(3, dtype=torch.float64))
    bad = nx.DiGraph()
    bad.add_edge(0, 1)
    bad.add_edge(1, 0, time=1.0)
    with pytest.raises(ValueError, match="cost attribute 'time'"):
        MinCostFlowController(bad)
    with pytest.raises(TypeError, match="graph"):
        MinCostFlowController(np.ones((3, 3)))


def test_metric_closure_enables_multi_hop_routing():
    ring = nx.DiGraph()
    for i in range(5):
        ring.add_edge(i, (i + 1) % 5, time=1.0)
    one_hop = MinCostFlowController(ring)
    idle = torch.tensor([[5.0, 0, 0, 0, 0]], dtype=torch.float64)
    z = torch.tensor([[0.0, 0, 1.0, 0, 0]], dtype=torch.float64)
    assert one_hop.solve(idle, z).status.item() == FlowStatus.INFEASIBLE
    closed = MinCostFlowController(metric_closure(ring))
    sol = closed.solve(idle, z)
    assert sol.status.item() == FlowStatus.OK and float(sol.objective) == 10.0


def test_pickle_and_deepcopy_after_solving():
    ctrl = MinCostFlowController(complete_graph(4, seed=11))
    idle, z = problems(4, 2, seed=12)
    x = ctrl(idle, z)
    for clone in (copy.deepcopy(ctrl), pickle.loads(pickle.dumps(ctrl))):
        assert torch.equal(clone(idle, z), x)


# ----------------------------------------------------------------------------------- gradients
def test_regularised_solution_matches_cvxpy():
    cp = pytest.importorskip("cvxpy")
    g = complete_graph(5, seed=13)
    ctrl = MinCostFlowController(g, mode="qp", reg=0.2)
    idle, z = problems(5, 2, seed=14)
    sol = ctrl.solve(idle, z)
    assert bool(sol.ok.all())
    n = 5
    C = np.zeros((n, n))
    src, dst = ctrl.edge_index.numpy()
    C[src, dst] = ctrl.edge_cost.numpy()
    for b in range(2):
        X = cp.Variable((n, n), nonneg=True)
        prob = cp.Problem(cp.Minimize(cp.sum(cp.multiply(C, X)) + 0.1 * cp.sum_squares(X)),
                          [cp.sum(X, 1) == idle[b].numpy(), cp.sum(X, 0) == sol.targets[b].numpy()])
        prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11)
        assert np.abs(X.value[src, dst] - sol.flows[b].numpy()).max() < 1e-5


def test_gradcheck_regularised_problem():
    g = complete_graph(4, seed=15)
    ctrl = MinCostFlowController(g, mode="qp", reg=0.05)
    idle, z = problems(4, 2, seed=16)
    idle = (idle + 1.0).requires_grad_(True)  # strictly positive: no status change under perturbation
    z = z.requires_grad_(True)
    cost = ctrl.edge_cost.expand(2, -1).clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, zz, c: ctrl.solve(a, zz, c).flows, (idle, z, cost), atol=1e-6, rtol=1e-4)


def test_regularized_transport_gradcheck_sparse_support():
    torch.manual_seed(0)
    n = 4
    mask = torch.eye(n, dtype=torch.bool) | (torch.rand(n, n) < 0.7)
    a = torch.tensor([[3.0, 1.0, 2.0, 4.0]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[2.5, 2.5, 2.0, 3.0]], dtype=torch.float64, requires_grad=True)
    C = (torch.rand(1, n, n, dtype=torch.float64) + 0.1).requires_grad_(True)
    x, conv = regularized_transport(a, t, C, mask, reg=0.3)
    assert bool(conv.all()) and bool((x[0][~mask] == 0).all())
    torch.testing.assert_close(x.sum(2), a.detach())
    torch.testing.assert_close(x.sum(1), t.detach())
    with pytest.raises(ValueError, match="equal sums"):
        regularized_transport(a, t + 1, C, mask)

    def balanced(a, t, C):  # keep sum(demand) == sum(supply) under gradcheck's perturbations
        return regularized_transport(a, t * a.sum(1, keepdim=True) / t.sum(1, keepdim=True), C, mask, reg=0.3)[0]

    assert torch.autograd.gradcheck(balanced, (a, t, C))


def test_lp_mode_gradient_is_the_regularised_one_and_informative():
    g = complete_graph(6, seed=17)
    idle, z = problems(6, 3, seed=18)
    w = torch.randn(3, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grads = []
    for mode in ("lp", "qp"):
        ctrl = MinCostFlowController(g, mode=mode, reg=0.1)
        zz = z.clone().requires_grad_(True)
        cost = ctrl.edge_cost.expand(3, -1).clone().requires_grad_(True)
        x = ctrl.solve(idle, zz, cost).flows
        if mode == "lp":
            assert torch.equal(x.detach(), ctrl.solve(idle, z).flows)  # value = exact LP
        (x * w).sum().backward()
        grads.append((zz.grad, cost.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
    assert float(grads[0][1].norm()) > 1e-3  # cost gradients are not zero (as a pure LP's would be)


def test_cvxpylayers_backend_is_optional():
    g = complete_graph(4, seed=19)
    idle, z = problems(4, 2, seed=20)
    try:
        import cvxpylayers  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="cvxpylayers"):
            MinCostFlowController(g, mode="qp", qp_backend="cvxpylayers").solve(idle, z)
        pytest.skip("cvxpylayers is not installed")
    a = MinCostFlowController(g, mode="qp", qp_backend="cvxpylayers").solve(idle, z).flows
    b = MinCostFlowController(g, mode="qp").solve(idle, z).flows
    assert float((a - b).abs().max()) < 1e-4
