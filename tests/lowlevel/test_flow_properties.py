"""Property-based: every MinCostFlowController member is the exact optimum or flagged (issue 15).

Random graphs (possibly disconnected), batch sizes 0..4, float32/float64, NaN / negative /
fractional counts, invalid distributions and NaN costs at random positions. Reference: an
independent networkx network-simplex solve of the same transportation problem.
"""
import math

import networkx as nx
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ohio_layers.lowlevel import FlowStatus, MinCostFlowController

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def flow_cases(draw):
    n = draw(st.integers(2, 5))
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    edges = draw(st.lists(st.sampled_from(pairs), min_size=1, max_size=len(pairs), unique=True))
    costs = draw(st.lists(st.integers(1, 9), min_size=len(edges), max_size=len(edges)))
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    for (u, v), c in zip(edges, costs):
        g.add_edge(u, v, time=float(c))
    B = draw(st.integers(0, 4))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    idle = np.array(draw(st.lists(st.lists(st.integers(0, 6), min_size=n, max_size=n), min_size=B, max_size=B)),
                    dtype=np.float64).reshape(B, n)
    z = np.array(draw(st.lists(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n), min_size=B, max_size=B)),
                 dtype=np.float64).reshape(B, n)
    z = np.where(z.sum(1, keepdims=True) > 0, z / np.maximum(z.sum(1, keepdims=True), 1e-300), 1.0 / n)
    cost = np.tile(np.array(costs, dtype=np.float64), (B, 1))
    defects = draw(st.lists(st.tuples(st.integers(0, max(B - 1, 0)), st.sampled_from(
        ["negative", "fractional", "nan_idle", "nan_z", "neg_z", "sum_z", "nan_cost"])), max_size=3)) if B else []
    for b, kind in defects:
        i = draw(st.integers(0, n - 1))
        if kind == "negative":
            idle[b, i] = -1.0
        elif kind == "fractional":
            idle[b, i] += 0.5
        elif kind == "nan_idle":
            idle[b, i] = math.nan
        elif kind == "nan_z":
            z[b, i] = math.nan
        elif kind == "neg_z":
            z[b, i] = -0.2
        elif kind == "sum_z":
            z[b] *= 0.5
        else:
            cost[b, draw(st.integers(0, len(edges) - 1))] = math.nan
    as_t = lambda a: torch.tensor(a, dtype=dtype)  # noqa: E731
    return g, as_t(idle), as_t(z), as_t(cost)


def reference_cost(ctrl, a, t, c):
    """networkx optimum of the transportation problem (None if infeasible)."""
    G = nx.DiGraph()
    src, dst = ctrl.edge_index.numpy()
    for i in range(ctrl.num_nodes):
        G.add_node(("s", i), demand=-int(a[i]))
        G.add_node(("d", i), demand=int(t[i]))
        G.add_edge(("s", i), ("d", i), weight=0)
    for e in range(ctrl.num_edges):
        G.add_edge(("s", int(src[e])), ("d", int(dst[e])), weight=int(c[e]))
    try:
        return nx.min_cost_flow_cost(G)
    except nx.NetworkXUnfeasible:
        return None


def expected_input_status(idle, z, cost):
    """Independent statement of which members are caller-side invalid."""
    out = []
    for a, zz, c in zip(idle.double().numpy(), z.double().numpy(), cost.double().numpy()):
        if not (np.isfinite(a).all() and np.isfinite(zz).all() and np.isfinite(c).all()):
            out.append(FlowStatus.NON_FINITE)
        elif (a < 0).any():
            out.append(FlowStatus.NEGATIVE_COUNTS)
        elif (np.abs(a - np.round(a)) > 1e-6).any():
            out.append(FlowStatus.NON_INTEGER_COUNTS)
        elif (zz < -1e-9).any() or abs(zz.sum() - 1) > 1e-3:
            out.append(FlowStatus.INVALID_Z)
        else:
            out.append(None)
    return out


@SETTINGS
@given(flow_cases())
def test_each_member_is_the_exact_optimum_or_flagged(case):
    g, idle, z, cost = case
    ctrl = MinCostFlowController(g, allow_disconnected=True)
    sol = ctrl.solve(idle, z, cost, check=False)
    B = idle.shape[0]
    assert sol.flows.shape == (B, ctrl.num_edges) and sol.status.shape == (B,)
    for b, pre in enumerate(expected_input_status(idle, z, cost)):
        status = int(sol.status[b])
        if pre is not None:
            assert status == pre and bool((sol.flows[b] == 0).all())
            continue
        t = sol.targets[b].double().numpy()
        N = float(idle[b].double().sum())
        assert t.sum() == N and np.all(np.abs(t - N * z[b].double().numpy()) < 1 + 1e-6)  # Hamilton rounding
        ref = reference_cost(ctrl, idle[b].double().numpy(), t, cost[b].double().numpy())
        if ref is None:
            assert status == FlowStatus.INFEASIBLE
            continue
        assert status == FlowStatus.OK
        x = sol.flows[b].double()
        assert bool((x >= 0).all()) and torch.equal(x, x.round())
        assert torch.equal(ctrl.node_balance(idle[b:b + 1].double(), x[None])[0], sol.targets[b].double())
        assert float((x * cost[b].double()).sum()) == pytest.approx(ref, abs=1e-6)
    # the contract path carries the flag: NaN exactly for the flagged members
    ctx = {"state0": idle, "edge_cost": cost}
    flows = ctrl.act(idle, z, ctx)
    assert torch.equal(torch.isnan(flows).all(-1), ~sol.ok)
    assert torch.equal(flows[sol.ok], sol.flows[sol.ok])


@SETTINGS
@given(flow_cases())
def test_forward_raises_only_for_caller_errors(case):
    g, idle, z, _ = case
    ctrl = MinCostFlowController(g, allow_disconnected=True)
    caller_error = any(s is not None for s in expected_input_status(idle, z, ctrl.edge_cost.to(z).expand(len(idle), -1)))
    if caller_error:
        with pytest.raises(ValueError, match="state|z"):
            ctrl(idle, z)
        return
    out = ctrl(idle, z)
    sol = ctrl.solve(idle, z)
    assert torch.equal(torch.isnan(out).all(-1), sol.status == FlowStatus.INFEASIBLE)
