"""Bad inputs tried per public entry point, and what each must get (issue 15).

Each probe runs one bad input. It either raises (then every word in ``names`` must appear in
the message: a *named* error) or returns a short outcome string (``"flagged: ..."`` or
``"correct: ..."``) after asserting that the outcome is what it claims. ``test_reliability_table``
renders the probes to ``docs/reliability.md`` and fails when the file and the behaviour differ.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Sequence

import gymnasium as gym
import networkx as nx
import numpy as np
import torch

from helpers import LAYOUT, make_inverter, reacher_like_lqr, replace_zip_member, substep_states, synthetic_dataset

F64 = torch.float64


@dataclass
class Probe:
    entry: str
    bad_input: str
    fn: Callable[[], str]
    names: Sequence[str] = field(default_factory=tuple)


PROBES: List[Probe] = []


def probe(entry: str, bad_input: str, names: Sequence[str] = ()):
    def register(fn: Callable[[], str]) -> Callable[[], str]:
        PROBES.append(Probe(entry, bad_input, fn, tuple(names)))
        return fn
    return register


_OUTCOMES: dict = {}


def run(p: Probe) -> str:
    """The outcome cell of the table for probe ``p`` (each probe runs once per process)."""
    if id(p) not in _OUTCOMES:
        _OUTCOMES[id(p)] = _run(p)
    return _OUTCOMES[id(p)]


def _run(p: Probe) -> str:
    try:
        out = p.fn()
    except Exception as e:  # noqa: BLE001 - classifying every failure is the point
        missing = [w for w in p.names if w not in str(e)]
        if missing or not p.names:
            return f"UNNAMED {type(e).__name__}: {str(e)[:120]}"
        return f"named error `{type(e).__name__}` (names {', '.join('`' + w + '`' for w in p.names)})"
    return out


# ------------------------------------------------------------------ min-cost flow
def islands():
    from ohio_layers.lowlevel import MinCostFlowController

    g = nx.DiGraph()
    for u, v in ((0, 1), (1, 0), (2, 3), (3, 2)):
        g.add_edge(u, v, time=1.0)
    return MinCostFlowController(g, allow_disconnected=True)


def flow_member(idle_row, z_row, cost=None) -> str:
    from ohio_layers.lowlevel import FlowStatus

    ctrl = islands()
    idle = torch.tensor([[2.0, 2, 2, 2], idle_row], dtype=F64)
    z = torch.tensor([[0.25] * 4, z_row], dtype=F64)
    ctx = ctrl.context(torch.nan_to_num(idle))
    if cost is not None:
        ctx["edge_cost"] = torch.stack([ctx["edge_cost"][0], torch.tensor(cost, dtype=F64)])
    flows = ctrl.act(idle, z, ctx)
    status = ctrl.solve(idle, z, ctx["edge_cost"], check=False).status
    assert torch.isfinite(flows[0]).all() and torch.isnan(flows[1]).all() and int(status[0]) == 0
    return f"flagged: NaN flows for the member, `solve().status` {FlowStatus(int(status[1])).name}"


probe("MinCostFlowController.act", "negative idle count")(lambda: flow_member([2.0, -1, 2, 2], [0.25] * 4))
probe("MinCostFlowController.act", "fractional idle count")(lambda: flow_member([1.5, 2.5, 2, 2], [0.25] * 4))
probe("MinCostFlowController.act", "NaN in z")(lambda: flow_member([2.0] * 4, [0.25, math.nan, 0.25, 0.25]))
probe("MinCostFlowController.act", "z row sums to 0.5")(lambda: flow_member([2.0] * 4, [0.125] * 4))
probe("MinCostFlowController.act", "NaN edge cost")(lambda: flow_member([2.0] * 4, [0.25] * 4, [1.0, math.nan, 1.0, 1.0]))
probe("MinCostFlowController.act", "target unreachable (disconnected graph)")(
    lambda: flow_member([4.0, 0, 0, 0], [0.25] * 4))
probe("MinCostFlowController.forward", "negative idle count", ["state", "negative"])(
    lambda: islands()(torch.tensor([[2.0, -1, 2, 2]], dtype=F64), torch.full((1, 4), 0.25, dtype=F64)))
probe("MinCostFlowController.forward", "NaN in z", ["z", "NaN"])(
    lambda: islands()(torch.full((1, 4), 2.0, dtype=F64), torch.tensor([[0.25, math.nan, 0.25, 0.25]], dtype=F64)))


@probe("HierarchicalAgent.act", "controller cannot serve the member (infeasible flow)", ["HierarchicalAgent.act", "FlowStatus"])
def _agent_infeasible() -> str:
    from ohio_layers.rl.agent import HierarchicalAgent

    agent = HierarchicalAgent(lambda o: torch.full((o.shape[0], 4), 0.25, dtype=o.dtype), islands())
    agent.act(np.zeros(4), np.array([4.0, 0, 0, 0]))
    return "executed"


@probe("HighLevelActionWrapper.step", "controller cannot serve the member (infeasible flow)", ["HighLevelActionWrapper"])
def _wrapper_infeasible() -> str:
    from ohio_layers.rl.agent import HighLevelActionWrapper

    class Env(gym.Env):
        action_space = gym.spaces.Box(0.0, np.inf, (4,), dtype=np.float64)
        observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), dtype=np.float64)

        def step(self, action):
            raise AssertionError("a NaN action reached the env")

    HighLevelActionWrapper(Env(), islands(), get_state=lambda e: np.array([4.0, 0, 0, 0])).step(np.full(4, 0.25))
    return "executed"


@probe("InverseProblem + LevenbergMarquardt", "a member the flow controller flags")
def _inverse_flagged_flow() -> str:
    from ohio_layers.inverse import InverseProblem, LevenbergMarquardt

    ctrl = islands()
    idle = torch.tensor([[2.0, 2, 2, 2], [4.0, 0, 0, 0]], dtype=F64)
    z = torch.full((2, 4), 0.25, dtype=F64)
    p = InverseProblem(ctrl, match="actions")
    b = p.batch(idle, states=idle[:, None], actions=torch.zeros(2, 1, 4, dtype=F64))
    res = LevenbergMarquardt(max_iter=0).solve(p, b, z0=z)
    assert not bool(res.converged[1]) and bool(torch.isnan(res.residual[1]))
    return "flagged: `converged` False, residual NaN"


@probe("AMoDEnv.normalize_distribution", "NaN in the z action", ["action", "NaN"])
def _amod_nan() -> str:
    from ohio_layers.envs.amod.env import AMoDEnv
    from ohio_layers.envs.amod.scenario import synthetic_city

    AMoDEnv(synthetic_city(2, 2, horizon=3)).normalize_distribution([math.nan, 1.0, 0.0, 0.0])
    return "uniform"


# ------------------------------------------------------------------ LQR and OSC
def lqr(**kw):
    from helpers import reacher_like_linearization
    from ohio_layers.lowlevel import LQRGoalController

    return LQRGoalController(reacher_like_linearization(), **kw)


probe("LQRGoalController()", "Q with a NaN entry", ["Q", "NaN"])(lambda: lqr(Q=math.nan))
probe("LQRGoalController()", "indefinite Q", ["Q", "positive semi-definite"])(lambda: lqr(Q=(10.0, -1.0, 1.0, 1.0)))
probe("LQRGoalController()", "R = 0", ["R", "positive definite"])(lambda: lqr(R=0.0))
probe("LQRGoalController.forward", "NaN in the state", ["state", "NaN"])(
    lambda: reacher_like_lqr()(torch.tensor([[0.0, math.nan, 0, 0]], dtype=F64), torch.zeros(1, 4, dtype=F64)))


@probe("LQRGoalController.act", "NaN in one member's step state")
def _lqr_act_nan() -> str:
    c = reacher_like_lqr()
    x = torch.zeros(2, 4, dtype=F64)
    ctx = c.context(x)
    x[1, 2] = math.nan
    u = c.act(x, torch.ones(2, 4, dtype=F64), ctx, 1)
    assert torch.isfinite(u[0]).all() and torch.isnan(u[1]).any()
    return "flagged: NaN action for that member only"


def osc(**kw):
    from ohio_layers.lowlevel.osc import OperationalSpaceController

    return OperationalSpaceController(**kw)


probe("OperationalSpaceController()", "kp = NaN", ["kp", "finite"])(lambda: osc(kp=math.nan))
probe("OperationalSpaceController.forward", "z outside robosuite's delta box (1.1 m)", ["z", "upper bound"])(
    lambda: osc()(substep_states(1)[:, 0], torch.tensor([[1.1, 0, 0, 0, 0, 0]], dtype=F64)))


@probe("OperationalSpaceController.forward", "singular mass matrix in one member")
def _osc_singular() -> str:
    s = substep_states(3)[:, 0].clone()
    s[1, LAYOUT.slices["mass"]] = 0.0
    tau = osc()(s, torch.zeros(3, 6, dtype=F64))
    assert torch.isnan(tau[1]).all() and torch.isfinite(tau[[0, 2]]).all()
    return "flagged: NaN torques for that member only"


@probe("OperationalSpaceController.forward", "empty batch")
def _osc_empty() -> str:
    tau = osc()(torch.zeros(0, LAYOUT.dim, dtype=F64), torch.zeros(0, 6, dtype=F64))
    assert tau.shape == (0, 7)
    return "correct: shape (0, 7)"


# ------------------------------------------------------------------ OSC inverse
def osc_data(N, seed=0, z=None, controller=None):
    states = substep_states(N, seed=seed)
    g = torch.Generator().manual_seed(seed)
    if z is None:
        z = torch.tensor([0.05] * 3 + [0.5] * 3, dtype=F64) * (2 * torch.rand(N, 6, generator=g, dtype=F64) - 1)
    c = controller or osc()
    ctx = c.context(states[:, 0])
    return states, torch.stack([c.act(states[:, j], z, ctx, j) for j in range(5)], 1), z


@probe("OSCInverse.invert", "float32 data")
def _oscinv_f32() -> str:
    from ohio_layers.inverse import OSCInverse

    states, torques, z = osc_data(20, seed=1)
    res = OSCInverse().invert(osc(), states.float(), torques.float())
    assert torch.isfinite(res.z).all() and float((res.z.double() - z).abs().max()) < 1e-3 and bool(res.converged.all())
    return "correct: finite z within 1e-3, converged"


@probe("OSCInverse.invert", "empty batch")
def _oscinv_empty() -> str:
    from ohio_layers.inverse import OSCInverse

    res = OSCInverse().invert(osc(), torch.zeros(0, 5, LAYOUT.dim, dtype=F64), torch.zeros(0, 5, 7, dtype=F64))
    assert res.z.shape == (0, 6)
    return "correct: empty result"


probe("OSCInverse.invert", "window of 3 sub-steps for a horizon-5 controller", ["3 sub-steps", "horizon"])(
    lambda: __import__("ohio_layers.inverse", fromlist=["OSCInverse"]).OSCInverse().invert(
        osc(), substep_states(2, k=3), torch.zeros(2, 3, 7, dtype=F64)))


@probe("OSCInverse.invert", "singular mass matrix in one member")
def _oscinv_singular() -> str:
    from ohio_layers.inverse import OSCInverse

    states, torques, z = osc_data(3, seed=2)
    states[1, :, LAYOUT.slices["mass"]] = 0.0
    res = OSCInverse().invert(osc(), states, torques)
    assert res.converged.tolist() == [True, False, True] and torch.isnan(res.z[1]).all()
    assert float((res.z[[0, 2]] - z[[0, 2]]).abs().max()) < 1e-8
    return "flagged: z NaN, `converged` False; other members exact"


@probe("OSCInverse.invert", "recorded delta beyond robosuite's box (1.1 m)")
def _oscinv_box() -> str:
    from ohio_layers.inverse import OSCInverse

    z = torch.tensor([[1.1, 0, 0, 0, 0, 0]], dtype=F64)
    states, torques, _ = osc_data(1, seed=3, z=z, controller=osc(delta_limit=None))
    res = OSCInverse().invert(osc(), states, torques)
    assert float(res.z.abs().max()) <= 0.5 and not bool(res.reproduced(1e-6).any())
    return "flagged: z stays in the box, `reproduced` False"


probe("OSCInverse()", "max_iter = -1", ["OSCInverse.max_iter"])(
    lambda: __import__("ohio_layers.inverse", fromlist=["OSCInverse"]).OSCInverse(max_iter=-1))


# ------------------------------------------------------------------ solvers and problems
def lqr_problem(n=40, z_scale=8.0, seed=1):
    from ohio_layers.inverse import InverseProblem
    from ohio_layers.lowlevel import LinearizedDynamics, rollout

    c = reacher_like_lqr(action_bound=1.0)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 4, generator=g, dtype=F64)
    traj, _ = rollout(c, LinearizedDynamics(), x0, z_scale * torch.randn(n, 4, generator=g, dtype=F64))
    p = InverseProblem(c, LinearizedDynamics())
    return c, p, p.batch(x0, target=traj[:, -1])


@probe("AnalyticSolver.solve", "clipped actions (the affine model breaks)")
def _analytic_saturated() -> str:
    from ohio_layers.inverse import AnalyticSolver

    _, p, b = lqr_problem()
    res = AnalyticSolver().solve(p, b)
    wrong = res.residual > 1e-6
    assert bool(wrong.any()) and not bool(res.converged[wrong].any())
    return "flagged: `converged` False where the residual is not at noise level"


@probe("LevenbergMarquardt.solve", "started where every action saturates (J = 0)")
def _lm_flat() -> str:
    from ohio_layers.inverse import LevenbergMarquardt

    c, p, b = lqr_problem(10, 0.5, 2)
    res = LevenbergMarquardt().solve(p, b, z0=torch.full((10, 4), float(c.z_high[0]), dtype=F64))
    assert not bool(res.converged.any())
    return "flagged: `converged` False"


probe("AdamSolver()", "patience = 0", ["AdamSolver.patience"])(
    lambda: __import__("ohio_layers.inverse", fromlist=["AdamSolver"]).AdamSolver(patience=0))
probe("CEMSolver()", "elite_frac = 2", ["CEMSolver.elite_frac"])(
    lambda: __import__("ohio_layers.inverse", fromlist=["CEMSolver"]).CEMSolver(elite_frac=2))
probe("CEMSolver()", "init_std = NaN", ["CEMSolver.init_std"])(
    lambda: __import__("ohio_layers.inverse", fromlist=["CEMSolver"]).CEMSolver(init_std=math.nan))


def _problem(**kw):
    from ohio_layers.inverse import InverseProblem
    from ohio_layers.lowlevel import LinearizedDynamics

    return InverseProblem(reacher_like_lqr(), LinearizedDynamics(), **kw)


probe("InverseProblem()", "steps = 6 > horizon 5", ["steps", "horizon"])(lambda: _problem(steps=6))
probe("InverseProblem()", "z_ref of shape (3,) for a 4-D z", ["z_ref", "(4)"])(
    lambda: _problem(regularization=0.1, z_ref=torch.zeros(3)))


@probe("InverseProblem.batch", "LinearizedDynamics() with a controller whose context has no A/B", ["LinearizedDynamics(linearization)"])
def _dynamics_no_ab() -> str:
    from ohio_layers.inverse import InverseProblem
    from ohio_layers.lowlevel import LinearizedDynamics

    c = osc()
    s = torch.zeros(1, c.state_dim, dtype=F64)
    InverseProblem(c, LinearizedDynamics()).batch(s, target=s)
    return "accepted"


# ------------------------------------------------------------------ relabel
def _relabel_twice(change: str) -> str:
    from ohio_layers.inverse import AnalyticSolver, InverseProblem, LevenbergMarquardt, ProblemInverter, relabel
    from ohio_layers.lowlevel import LinearizedDynamics

    c = reacher_like_lqr(action_bound=1.0)
    data = synthetic_dataset(c, episodes=2)
    inv = make_inverter(c)
    calls = {"n": 0}

    def crashing(dataset, starts):
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        return inv(dataset, starts)

    crashing.describe = inv.describe
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "hl.npz"
        try:
            relabel(data, crashing, 5, out, chunk_size=4, progress=False)
        except KeyboardInterrupt:
            pass
        if change == "data":
            data = synthetic_dataset(c, episodes=2, seed=7)  # same shapes, other content
            relabel(data, crashing, 5, out, chunk_size=4, progress=False)
        else:
            other = ProblemInverter(InverseProblem(c, LinearizedDynamics()), LevenbergMarquardt(max_iter=3), init=AnalyticSolver())
            relabel(data, other, 5, out, chunk_size=4, progress=False)
    return "resumed"


probe("relabel (resume)", "other dataset of the same shape", ["different relabelling run", "dataset content"])(
    lambda: _relabel_twice("data"))
probe("relabel (resume)", "other solver settings", ["different relabelling run", "inverter settings"])(
    lambda: _relabel_twice("solver"))


@probe("relabel", "k longer than every episode; then a valid call")
def _relabel_failed_then_ok() -> str:
    from ohio_layers.inverse import relabel

    c = reacher_like_lqr(action_bound=1.0)
    data = synthetic_dataset(c, episodes=2)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "hl.npz"
        try:
            relabel(data, make_inverter(c), 50, out, progress=False)
        except ValueError as e:
            assert "no complete window" in str(e)
        assert not (Path(d) / "hl.npz.parts").exists()
        hl, _ = relabel(data, make_inverter(c), 5, out, progress=False)
    return f"named error `ValueError` (names `no complete window`), nothing left behind; the next call relabels {len(hl)} windows"


probe("relabel", "chunk_size = 0", ["chunk_size"])(lambda: __import__("ohio_layers.inverse", fromlist=["relabel"]).relabel(
    synthetic_dataset(reacher_like_lqr(), episodes=1), make_inverter(reacher_like_lqr()), 5, "/nonexistent/x.npz", chunk_size=0))


# ------------------------------------------------------------------ data, rl, envs
def _tiny():
    from ohio_layers.data import Dataset

    return Dataset({"terminals": np.zeros(4, bool), "episode_ids": np.zeros(4, np.int64), "observations": np.zeros((4, 2)),
                    "actions": np.zeros((4, 1))})


probe("window_starts", "stride = 0", ["stride"])(
    lambda: __import__("ohio_layers.data.dataset", fromlist=["window_starts"]).window_starts(_tiny(), 2, 0))


def _corrupt(kind: str) -> str:
    from ohio_layers.data import Dataset

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "broken.npz"
        if kind == "metadata":
            _tiny().save(path)
            replace_zip_member(path, "__metadata__.json", b"{oops")
        else:
            path.write_bytes(b"not a zip")
        Dataset.load(path)
    return "loaded"


probe("Dataset.load", "corrupt metadata JSON", ["broken.npz", "metadata"])(lambda: _corrupt("metadata"))
probe("Dataset.load", "not a zip file", ["broken.npz"])(lambda: _corrupt("garbage"))
probe("Agent.from_dataset", "empty dataset", ["empty"])(
    lambda: __import__("ohio_layers.rl", fromlist=["BC"]).BC.from_dataset(_tiny().select(np.arange(0))))


@probe("HierarchicalAgent.act", "observation of the wrong size", ["obs", "(B, 10)"])
def _agent_obs() -> str:
    from ohio_layers.rl import BC
    from ohio_layers.rl.agent import HierarchicalAgent

    HierarchicalAgent(BC(10, 4, -1.0, 1.0), reacher_like_lqr()).act(np.zeros(7, np.float32), np.zeros(4))
    return "acted"


probe("synthetic_city", "nlat = 0", ["nlat"])(
    lambda: __import__("ohio_layers.envs.amod.scenario", fromlist=["synthetic_city"]).synthetic_city(nlat=0))


def render() -> str:
    """``docs/reliability.md``: the table of probes and their outcomes."""
    lines = [
        "# Reliability: bad inputs and what they get",
        "",
        "Generated by `python tests/test_reliability_table.py` from `tests/reliability_probes.py`;",
        "`tests/test_reliability_table.py` reruns every probe in CI and fails when this table and the",
        "behaviour differ, so it cannot drift. Outcomes: a **named error** (the message names what is",
        "wrong), a **flagged** member (per-sample status, NaN action, `converged`/`reproduced` False) or",
        "a **correct** answer. No probe may end in a silent wrong answer or an unnamed crash.",
        "",
        "| Entry point | Bad input | Outcome |",
        "|---|---|---|",
    ]
    for p in PROBES:
        lines.append(f"| `{p.entry}` | {p.bad_input} | {run(p)} |")
    return "\n".join(lines) + "\n"
