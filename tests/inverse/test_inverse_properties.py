"""Property-based: every inverse solver's members are correct or flagged, and never lie (issue 15).

Random batch sizes 0..4, dtypes, clipping, z boxes and solvers. For every member: z lies in the
box, the reported residual equals an independent replay, ``converged`` agrees with an
independent reverse-mode stationarity check, and where the problem is well posed (no clipping,
z inside the box) the analytic and LM answers reproduce the data. NaN in the data is a caller
error (named). OSC: singular members are flagged, the rest reproduce the recorded torques.
"""
import math

import networkx as nx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import LAYOUT, reacher_like_lqr, substep_states
from ohio_layers.inverse import (AdamSolver, AnalyticSolver, CEMSolver, InverseProblem, LevenbergMarquardt,
                                 OSCInverse, invert_flows)
from ohio_layers.lowlevel import LinearizedDynamics, MinCostFlowController, rollout
from ohio_layers.lowlevel.osc import ROBOSUITE_DELTA_LIMIT, OperationalSpaceController

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOLVERS = {"analytic": lambda: AnalyticSolver(), "lm": lambda: LevenbergMarquardt(max_iter=30),
           "adam": lambda: AdamSolver(max_iter=20), "cem": lambda: CEMSolver(population=16, max_iter=5)}


def independent_stationarity(problem, batch, z):
    """Reverse-mode projected-gradient cosine and residual norm per member."""
    zz = z.detach().clone().requires_grad_(True)
    r = problem.residual(zz, batch)
    (g,) = torch.autograd.grad(0.5 * (r * r).sum(), zz, retain_graph=True)
    c = problem.controller
    pg = z - torch.clamp(z - g, c.z_low.to(z), c.z_high.to(z))
    rows = [torch.autograd.grad(r[:, j].sum(), zz, retain_graph=True)[0] for j in range(r.shape[1])]
    Jn = torch.stack(rows, 1).flatten(1).norm(dim=-1)
    return r.detach().norm(dim=-1), pg.norm(dim=-1), Jn


@SETTINGS
@given(B=st.integers(0, 4), dtype=st.sampled_from([torch.float32, torch.float64]), clip=st.booleans(),
       box=st.sampled_from([None, 0.5, 3.0]), match=st.sampled_from(["next_state", "actions"]),
       solver=st.sampled_from(sorted(SOLVERS)), nan_row=st.one_of(st.none(), st.integers(0, 3)),
       seed=st.integers(0, 2 ** 16))
def test_every_member_is_correct_or_flagged(B, dtype, clip, box, match, solver, nan_row, seed):
    c = reacher_like_lqr(action_bound=1.0 if clip else None)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(B, 4, generator=g, dtype=torch.float64)
    z_true = 2.0 * torch.randn(B, 4, generator=g, dtype=torch.float64)
    traj, actions = rollout(c, LinearizedDynamics(), x0, z_true)
    if box is not None:
        c.z_low.fill_(-box)
        c.z_high.fill_(box)
    p = InverseProblem(c, LinearizedDynamics() if match == "next_state" else None, match=match)
    data = dict(target=traj[:, -1].to(dtype)) if match == "next_state" else dict(states=traj[:, :-1].to(dtype),
                                                                                    actions=actions.to(dtype))
    if nan_row is not None and nan_row < B:  # a caller error: named, not a silent answer
        key = "target" if match == "next_state" else "actions"
        bad = data[key].clone()
        bad[nan_row].view(-1)[0] = math.nan
        with pytest.raises(ValueError, match=f"{key} contains NaN"):
            p.batch(x0.to(dtype), **{**data, key: bad})
    b = p.batch(x0.to(dtype), **data)
    res = SOLVERS[solver]().solve(p, b)
    assert res.z.shape == (B, 4) and res.z.dtype == dtype and res.converged.shape == (B,)
    assert bool((res.z >= c.z_low.to(dtype) - 1e-12).all() and (res.z <= c.z_high.to(dtype) + 1e-12).all())
    if B == 0:
        return
    rn, pgn, Jn = independent_stationarity(p, b, res.z)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(res.residual, rn, rtol=100 * eps ** 0.5, atol=100 * eps)  # the residual never lies
    scale = 1 + (b.target if match == "next_state" else b.actions.flatten(1)).norm(dim=-1)
    slack = 10 * eps ** 0.5
    honest = (rn <= slack * scale) | ((pgn <= slack * Jn * rn) & (Jn > 0))
    assert bool(honest[res.converged].all())  # converged members pass an independent check
    well_posed = (not clip) and (box is None or bool((z_true.abs() < box).all()))
    if well_posed and solver in ("analytic", "lm"):
        assert bool(res.reproduced(1e-6 if dtype == torch.float64 else 1e-2 * float(scale.max())).all())


@SETTINGS
@given(B=st.integers(0, 3), dtype=st.sampled_from([torch.float32, torch.float64]),
       singular=st.lists(st.integers(0, 2), max_size=2), seed=st.integers(0, 2 ** 10))
def test_osc_inverse_member_is_correct_or_flagged(B, dtype, singular, seed):
    states = substep_states(B, seed=seed)
    g = torch.Generator().manual_seed(seed)
    box = torch.tensor(ROBOSUITE_DELTA_LIMIT, dtype=torch.float64)
    z = box * (2 * torch.rand(B, 6, generator=g, dtype=torch.float64) - 1)
    c = OperationalSpaceController(saturation="none")
    ctx = c.context(states[:, 0]) if B else None
    torques = torch.stack([c.act(states[:, j], z, ctx, j) for j in range(5)], 1) if B else torch.zeros(0, 5, 7, dtype=torch.float64)
    bad = sorted({i for i in singular if i < B})
    for i in bad:
        states[i, :, LAYOUT.slices["mass"]] = 0.0
    res = OSCInverse().invert(c, states.to(dtype), torques.to(dtype))
    assert res.z.shape == (B, 6) and res.converged.shape == (B,)
    for i in range(B):
        if i in bad:
            assert not bool(res.converged[i]) and bool(torch.isnan(res.z[i]).all())
            continue
        assert bool((res.z[i].abs() <= c.z_high.to(dtype) + 1e-6).all())
        replay = OSCInverse.residual(c, res.z[i:i + 1], states[i:i + 1].to(dtype), torques[i:i + 1].to(dtype)).norm()
        noise = 100 * torch.finfo(dtype).eps * (1 + float(torques[i].norm()))  # two float roundings of ~0
        torch.testing.assert_close(res.residual[i], replay, rtol=1e-3, atol=noise)
        tol = 1e-6 if dtype == torch.float64 else 2e-2
        assert float((res.z[i].double() - z[i]).abs().max()) <= tol


@SETTINGS
@given(B=st.integers(0, 4), n=st.integers(2, 5), seed=st.integers(0, 2 ** 10), random_flows=st.booleans())
def test_flow_inverse_member_is_reproduced_or_flagged(B, n, seed, random_flows):
    g = nx.complete_graph(n, create_using=nx.DiGraph)
    nx.set_edge_attributes(g, 1.0, "time")
    ctrl = MinCostFlowController(g)
    gen = torch.Generator().manual_seed(seed)
    idle = torch.randint(0, 5, (B, n), generator=gen).double()
    if random_flows:  # arbitrary observed flows: some move more vehicles than a region has
        flows = torch.randint(0, 3, (B, ctrl.num_edges), generator=gen).double()
    else:
        z = torch.rand(B, n, generator=gen, dtype=torch.float64) + 1e-3
        flows = ctrl.solve(idle, z / z.sum(1, keepdim=True)).flows
    res, replay = invert_flows(ctrl, idle, flows)
    after = ctrl.node_balance(idle, flows)
    executable = (after >= 0).all(1)
    assert torch.equal(res.converged, executable)  # flagged exactly when the flows were not executable
    assert bool((res.residual[executable] == 0).all())  # replay reproduces the counts
    assert bool((replay.counts_l1[executable] == 0).all())
