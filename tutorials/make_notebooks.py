"""Build the tutorial notebooks from their cell sources (the .ipynb files are then executed).

    python tutorials/make_notebooks.py && python tutorials/run_notebooks.py
"""
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent


def notebook(cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(c[3:]) if c.startswith("md:") else nbformat.v4.new_code_cell(c) for c in cells]
    return nb


REACHER = [
    """md:# 1. Inverting a low-level controller: OHIO on the reacher

A hierarchical agent = a learned high level that picks `z` + a known low-level controller
`pi_lo(state, z) -> action`. Offline data holds states and low-level actions, never `z`.
This tutorial recovers `z` by inverting an LQR goal-reaching controller, relabels a dataset
collected by a *flat* expert, trains a high-level policy on it and deploys it through the
controller. Everything runs on a CPU in about a minute.""",
    """import torch, numpy as np
torch.set_num_threads(1)          # one thread: measured 4-9x faster than two on 2-core machines
torch.manual_seed(0)""",
    """md:## A custom controller is one short class

Subclass `LowLevelController`, give its dimensions and bounds, and write the unsaturated
`law`; `saturate` clips to the action bounds. Inputs are batch-first `(B, ds)`, `(B, dz)`.""",
    """from ohio_layers.lowlevel import LowLevelController

class PD(LowLevelController):
    def __init__(self, kp=2.0, kd=0.5):
        super().__init__(state_dim=2, z_dim=1, action_dim=1, action_low=-1, action_high=1)
        self.kp, self.kd = kp, kd

    def law(self, state, z, context, step):
        return self.kp * (z - state[:, :1]) - self.kd * state[:, 1:]

pd = PD()
print(pd(torch.tensor([[0.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.25], [5.0]])))   # second is clipped""",
    """md:## The reacher's low level: a 5-step LQR towards z

`make_reacher_lqr()` builds `LQRGoalController` on finite differences of the *true* MuJoCo
step (RK4; an Euler copy gets B wrong by 1.49x). z = target joint angles (relative to the
current ones) and velocities. The gains are computed once per decision from the state at its
start (the *context*), then applied for k = 5 steps.""",
    """from ohio_layers.envs import make_env, make_reacher_lqr, ExpertPolicy, collect
env = make_env()
obs, info = env.reset(seed=0)
controller = make_reacher_lqr()
x0 = torch.as_tensor(info["state"])[None]              # (1, 4): q1, q2, qdot1, qdot2
ctx = controller.context(x0)
print("gains K_l:", tuple(ctx["K"].shape))                # (B, k, m, n)
z = torch.tensor([[0.5, -0.3, 0.0, 0.0]], dtype=torch.float64)
print("first action:", controller.act(x0, z, ctx, step=0))""",
    """md:## Roundtrip: z -> controller -> inverse -> z'

An `InverseProblem` rolls controller + dynamics k steps and compares with the observed state
after k steps. Without clipping the closed loop is affine in z, so `AnalyticSolver` is exact;
with clipping, `LevenbergMarquardt` works through the clipped loop.""",
    """from ohio_layers.inverse import InverseProblem, AnalyticSolver, LevenbergMarquardt
from ohio_layers.lowlevel import LinearizedDynamics, rollout

B = 1000
x0 = torch.randn(B, 4, dtype=torch.float64)
z_true = 6 * torch.randn(B, 4, dtype=torch.float64)
ctx = controller.context(x0)                                    # FD linearisation at each x0
traj, actions = rollout(controller, LinearizedDynamics(), x0, z_true, ctx)
clipped = (actions.abs() >= 1).any(-1).any(-1)
problem = InverseProblem(controller, LinearizedDynamics())
batch = problem.batch(x0, target=traj[:, -1], context=ctx)
ana = AnalyticSolver().solve(problem, batch)
lm = LevenbergMarquardt().solve(problem, batch, z0=ana.z)
for name, r in (("analytic", ana), ("LM", lm)):
    err = (r.z - z_true).abs().amax(-1)
    print(f"{name:9s} z error median {err.median():.1e}; on clipped windows {err[clipped].median():.1e}; "
          f"converged {r.converged.float().mean():.0%}")
print(f"{clipped.float().mean():.0%} of windows hit the torque limit")""",
    """md:## Relabel a flat expert's dataset

The expert (IK + PD on torques, noise 0.1) never used z. `relabel` turns every 5-step window
into `(s_t, z*, sum of 5 rewards, s_{t+5})`, in chunks written atomically (an interrupted run
resumes), and reports how many windows the controller reproduces.""",
    """import tempfile, pathlib
from ohio_layers.inverse import ProblemInverter, relabel
low = collect(ExpertPolicy(0.1), episodes=40, seed=1000, progress=False)
out = pathlib.Path(tempfile.mkdtemp()) / "expert_ohio.npz"
high, report = relabel(low, ProblemInverter(problem, LevenbergMarquardt(), init=AnalyticSolver()), 5, out,
                       progress=False)
print(len(low), "low-level steps ->", len(high), "high-level transitions")
print(report)""",
    """md:## Train a high level and deploy it through the controller

`HighLevelActionWrapper` turns the low-level env into one whose action is z: each step runs the
controller for k low-level steps. Here BC on the relabelled z (the experiment `ohio reacher`
compares this with IQL, flat policies and the observed-next-state baseline at full size).""",
    """import math
from ohio_layers.rl import BC, HighLevelActionWrapper
from ohio_layers.experiments.reacher import z_bounds
lo, hi = z_bounds(high["z"], 8 * math.pi)
agent = BC.from_dataset(high, {"steps": 3000, "seed": 0, "obs_norm": True}, action_key="z", action_low=lo, action_high=hi)
agent.fit(high, action_key="z", show_progress=False)
henv = HighLevelActionWrapper(make_env(), controller, get_state=lambda e: e.unwrapped.controller_state())
returns = []
for i in range(5):
    obs, _ = henv.reset(seed=10_000 + i)
    done, total = False, 0.0
    while not done:
        obs, r, term, trunc, _ = henv.step(agent.act(obs))
        total, done = total + r, term or trunc
    returns.append(total)
print("hierarchical agent return:", np.mean(returns), "(expert about 450, random about 2)")""",
]


LAYERS = [
    """md:# 2. Optimisation layers: a batched exact QP and a min-cost-flow router

Low-level controllers that solve an optimisation problem are layers too: their output is
differentiable in their inputs by implicit differentiation. This tutorial shows the QP layer
used by the operational-space controller's torque limits, and the min-cost-flow controller
that turns a desired vehicle distribution into integer rebalancing flows.""",
    """import torch, networkx as nx
torch.set_num_threads(1)
from ohio_layers.lowlevel import solve_qp, QPStatus""",
    """md:## A batch of QPs, one of them infeasible

`solve_qp(Q, p, lower, upper, G, h, A, b)` solves `min 0.5 x'Qx + p'x` for a whole batch. Every
member carries a status; an infeasible member is flagged and does not stop the others.""",
    """B, n = 4, 3
Q = torch.eye(n, dtype=torch.float64).expand(B, n, n) * 2
p = torch.randn(B, n, dtype=torch.float64, requires_grad=True)
G = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]], dtype=torch.float64).expand(B, 2, n).clone()
h = torch.tensor([1.0, 0.0], dtype=torch.float64).expand(B, 2).clone()
h[3] = torch.tensor([-1.0, -0.5])          # sum(x) <= -1 and sum(x) >= 0.5: infeasible
sol = solve_qp(Q, p, -1.0, 1.0, G, h)
print("status:", [QPStatus(int(s)).name for s in sol.status])
print("x:", sol.x.detach())""",
    """md:Gradients come from the KKT system at the solution (no unrolling); infeasible members get
none. `gradcheck` in the test-suite compares them with finite differences.""",
    """(sol.x[sol.ok] ** 2).sum().backward()
print("d loss / d p:", p.grad)""",
    """md:## Min-cost-flow rebalancing

`MinCostFlowController(graph)` maps idle vehicles per region (the state) and a desired
distribution z (on the simplex) to integral flows: the target counts are rounded so that the
total is preserved, and a transportation LP (HiGHS) picks the cheapest moves.""",
    """from ohio_layers.lowlevel import MinCostFlowController, FlowStatus
g = nx.complete_graph(4, create_using=nx.DiGraph)
for u, v in g.edges:
    g.edges[u, v]["time"] = float(abs(u - v))     # travel time grows with distance
router = MinCostFlowController(g)
idle = torch.tensor([[8.0, 0.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0]], dtype=torch.float64)
z = torch.tensor([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
out = router.solve(idle, z)
print("edges (from, to):", router.edge_index.T.tolist())
print("flows:", out.flows)
print("targets:", out.targets, "status:", [FlowStatus(int(s)).name for s in out.status])""",
    """md:## Recovering z from observed flows

Offline data records flows, never z. For this controller the inverse is exact bookkeeping:
counts after rebalancing = idle + inflow - outflow, normalised. Replaying z* reproduces the
observed flows (up to ties between equally cheap plans).""",
    """from ohio_layers.inverse import invert_flows
res, replay = invert_flows(router, idle, out.flows)
print("z*:", res.z)
print("count residual after replay (vehicles):", res.residual)
print(replay)""",
]


AMOD = [
    """md:# 3. OHIO on vehicle rebalancing (AMoD)

A fleet of autonomous taxis serves a grid city. Every 3 minutes passengers are matched to idle
vehicles, then the high level picks `z`, a desired distribution of the idle vehicles over the
regions, and a min-cost-flow LP (the low level) turns it into integer rebalancing flows.
Offline data from a heuristic records the *flows*, never `z`; OHIO recovers `z` by inverting the
LP, trains a graph-network policy on it, and deploys it through the LP, so every executed plan is
feasible. About a minute on a CPU; `ohio amod` runs the full comparison.""",
    """import numpy as np, torch
torch.set_num_threads(1)
from ohio_layers.envs.amod import AMoDEnv, collect
env = AMoDEnv(action_mode="distribution")           # the built-in synthetic 3x3 city, 20 decisions
obs, info = env.reset(seed=0)
print("regions:", env.n_regions, " observation:", obs.shape, " action space:", env.action_space)
obs, reward, terminated, truncated, info = env.step(np.full(env.n_regions, 1 / env.n_regions))
print("reward:", round(reward, 1), " served:", info["served"], " flows on", len(info["flows"]), "edges")""",
    """md:## Offline data from a heuristic

`collect` rolls out a behaviour policy in `action_mode="flows"` and records the executed flows.
The dispatch heuristic solves the same LP with a different objective.""",
    """low = collect("dispatch", episodes=60, seed=1, env=AMoDEnv(action_mode="flows"), progress=False)
print(len(low), "decisions; columns:", sorted(low.keys()))
print("mean return per episode:", low["rewards"].sum() / 60)""",
    """md:## Relabelling: invert the LP

After rebalancing, the counts are idle + inflow - outflow; normalised they are a `z*` that the
LP maps back to the observed counts. `relabel` writes the high-level dataset atomically (it
resumes if interrupted); replaying every `z*` checks the inversion.""",
    """import tempfile, pathlib
from ohio_layers.inverse import FlowInverter, relabel
from ohio_layers.inverse.flow_inverse import replay_flows
tmp = pathlib.Path(tempfile.mkdtemp())
inverter = FlowInverter(env.controller, eps=1e-4)         # eps: keeps every z* > 0 (Dirichlet density)
high, report = relabel(low, inverter, 1, tmp / "dispatch_ohio.npz", progress=False)
check = replay_flows(env.controller, torch.as_tensor(high["states"]), torch.as_tensor(low["actions"]),
                     torch.as_tensor(high["z"]))
print("z*:", high["z"].shape, " counts reproduced:", float(check.counts_reproduced.double().mean()),
      " flows reproduced:", float(check.flows_reproduced.double().mean()))""",
    """md:Counts are always reproduced; flows can differ where two plans cost the same (ties).

## A graph-network high level, trained offline

`GraphIQL` is IQL with a GCN encoder over the region graph and a Dirichlet policy over regions
(`graph_fields` puts the graph into the config, so the agent saves and loads with it).""",
    """from ohio_layers.rl.gnn import GraphIQL, graph_fields
from ohio_layers.data import Dataset
train = Dataset({**high.arrays, "rewards": high["rewards"] * 0.01}, dict(high.metadata))  # reward scale
config = {**graph_fields(env.n_regions, env.topology), "seed": 0, "hidden": (64, 64), "batch_size": 64,
          "discount": 0.97, "steps": 1500, "expectile": 0.8, "temperature": 3.0,
          "actor_lr": 1e-3, "critic_lr": 1e-3, "value_lr": 1e-3}
agent = GraphIQL(train["observations"].shape[1], env.n_regions, 0.0, 1.0, config)
agent.fit(train, action_key="z", show_progress=False)
print("trained", agent.step, "steps; last losses:", {k: round(v, 3) for k, v in agent.history[-1].items()})""",
    """md:## Deploy through the LP and compare

The deterministic policy (the Dirichlet mean) goes through the min-cost-flow controller inside
the env. We count constraint violations of the flows handed to the vehicles: zero by
construction.""",
    """from ohio_layers.envs.amod import evaluate, heuristic_decider
seeds = [10_000 + i for i in range(5)]
ohio = evaluate(env, lambda o, e: agent.act(np.asarray(o, np.float32)), seeds)
flows_env = AMoDEnv(action_mode="flows")
heur = evaluate(flows_env, heuristic_decider("dispatch", 0), seeds)
for name, r in (("dispatch heuristic", heur), ("OHIO IQL", ohio)):
    print(f"{name:20s} return {r['mean_return']:7.1f}  served {r['mean_served']:6.1f}  "
          f"violations {r['mean_violations']:.0f}")""",
    """md:Five episodes and one seed are a small sample. `ohio amod` runs the real comparison (250
episodes per heuristic, two seeds, IQL and Cal-QL, online fine-tuning, and end-to-end
baselines that output flows directly and violate the flow constraints) and reports return as a
share of an oracle LP that knows the demand in advance.""",
]


AMORTIZED = [
    """md:# 4. An amortised inverse: a network trained through the controller, with an exact fallback

Per-window solvers (analytic, Levenberg-Marquardt) solve one small problem per window. An
`AmortizedInverse` learns the whole inverse map `g(observed window) -> z` once, by minimising the
residual of the inverse problem *through the differentiable controller and dynamics*: no z label
is used. It then relabels without any per-window work, and where its answer is not exact enough
it flags the window and hands exactly those to an exact solver (`fallback=`).""",
    """import time, torch
torch.set_num_threads(1)
from ohio_layers.lowlevel import LowLevelController, ConstantLinearization, LinearizedDynamics, rollout
from ohio_layers.inverse import AmortizedInverse, InverseProblem, LevenbergMarquardt""",
    """md:## A custom controller that no closed form inverts

A 2-D point mass pushed by a squashed force command: `u = clip(g(x) * 0.9 tanh(z / 2) - 0.4 v, +-1)`
with a position-dependent gain. It is not affine in z, so the analytic inverse does not apply;
with a linear dynamics model the inverse problem matches the state after k = 3 steps.""",
    """class SquashedForce(LowLevelController):
    def __init__(self):
        super().__init__(state_dim=4, z_dim=2, action_dim=2, horizon=3, z_low=-3, z_high=3,
                         action_low=-1, action_high=1)

    def law(self, state, z, context, step):
        gain = 1 + 0.3 * torch.tanh(state[:, :2])
        return gain * 0.9 * torch.tanh(z / 2) - 0.4 * state[:, 2:]

dt = 0.1
A = torch.eye(4, dtype=torch.float64); A[0, 2] = A[1, 3] = dt
B = torch.zeros(4, 2, dtype=torch.float64); B[0, 0] = B[1, 1] = dt * dt / 2; B[2, 0] = B[3, 1] = dt
model = ConstantLinearization(A, B)
controller = SquashedForce()
problem = InverseProblem(controller, LinearizedDynamics(model))   # next-state matching

def windows(n, seed):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 4, generator=g, dtype=torch.float64) * torch.tensor([1, 1, .3, .3], dtype=torch.float64)
    z = (2 * torch.rand(n, 2, generator=g, dtype=torch.float64) - 1) * 2.8     # hidden: never shown to the network
    traj, _ = rollout(controller, LinearizedDynamics(model), x0, z, {"A": A.expand(n, 4, 4), "B": B.expand(n, 4, 2)})
    return problem.batch(x0, target=traj[:, -1]), z

train, _ = windows(3000, seed=0)
test, z_hidden = windows(2000, seed=1)""",
    """md:## Train without labels

`fit` holds out 10 % of the windows, keeps the best held-out epoch and stops early. The loss is
the residual mapped into z units (through the mean pseudo-inverse of the residual Jacobian) under a
robust `log1p`, and the output scale comes from a label-free reference solution, so the same
settings work for controllers of very different scales. Outputs are always inside the z bounds.""",
    """inv = AmortizedInverse(problem, hidden=(64, 64), delta=0.1)
t = time.perf_counter()
history = inv.fit(train, epochs=300, batch_size=512, lr=1e-2, patience=30, seed=0, progress=False)
print(f"trained in {time.perf_counter() - t:.1f} s, {len(history['val_loss'])} epochs")
with torch.no_grad():
    z_net = inv(test)                                   # needs no controller context
err = (z_net - z_hidden).abs().amax(-1)
print(f"network alone: |z - z_hidden| median {err.median():.3g}, p90 {err.quantile(.9):.3g} (z spans +-2.8)")""",
    """md:## Flag what is not exact, re-solve exactly those windows

With `tolerance` set, `solve` reports per window whether the network's residual is above it
(`flagged`); with `fallback=` an exact solver re-solves exactly those windows, starting from the
network's z, and the better answer is kept. `polish=n` would first run n LM iterations on every
window instead.""",
    """inv.tolerance, inv.fallback = 1e-6, LevenbergMarquardt(max_iter=40)
t = time.perf_counter(); res = inv.solve(problem, test); t_amortized = time.perf_counter() - t
t = time.perf_counter(); exact = LevenbergMarquardt(max_iter=40).solve(problem, test); t_lm = time.perf_counter() - t
print(f"flagged (residual > 1e-6): {res.flagged.double().mean():.1%}, re-solved by the fallback: {res.fallback_used.double().mean():.1%}")
print(f"within 1e-6 -- amortised + fallback: {(res.residual <= 1e-6).double().mean():.2%}, LM alone from 0: "
      f"{(exact.residual <= 1e-6).double().mean():.2%}")
print(f"time: amortised + fallback {t_amortized:.2f} s, LM alone {t_lm:.2f} s")""",
    """md:Here the network's answer is never within 1e-6 on its own (it is an approximation, ~1e-2 in
z), so every window goes to the fallback, which then converges in a few iterations from a good
start. With a loose tolerance (say 1e-2 in residual units) most windows are accepted as they are.

## Relabel a dataset, save and reload

`ProblemInverter(problem, inv)` plugs the amortised inverse into `relabel` like any solver;
`inv.inverter(compute_residual=False)` is the network alone (no context, the residual column is
NaN: nothing was checked). `save`/`load` store weights and normalisation (`torch.load(weights_only=True)`).""",
    """import tempfile, pathlib
with tempfile.TemporaryDirectory() as d:
    inv.save(pathlib.Path(d) / "inverse.pt")
    back = AmortizedInverse.load(pathlib.Path(d) / "inverse.pt", problem, tolerance=1e-6)
print("reloaded network gives identical z:", torch.equal(back(test), inv(test)))""",
    """md:## Which inverse when?

| situation | inverse |
|---|---|
| controller affine in z, nothing saturates, linear(ised) dynamics | `AnalyticSolver` (exact, closed form) |
| saturation, non-affine controller, need exact labels | analytic (if affine) or zero start + `LevenbergMarquardt` |
| OSC torques (action matching) | `OSCInverse` (structured, exact) |
| millions of windows, labels within ~1e-2 are good enough | `AmortizedInverse`, network alone (no per-window context) |
| millions of windows, exact labels needed | `AmortizedInverse(tolerance=..., fallback=LevenbergMarquardt())` |
| no derivatives | `CEMSolver` |

The network is trained on one behaviour policy's windows: on another policy's data it is less
accurate, which the residual check (`tolerance`) detects and the fallback repairs. On the reacher
(`benchmarks/bench_amortized.py`) the network alone relabels far faster than the context-bound
LM path; see the benchmark for the measured ratios and errors.""",
]


def main() -> None:
    nbformat.write(notebook(REACHER), HERE / "01_reacher_inverse_lqr.ipynb")
    nbformat.write(notebook(LAYERS), HERE / "02_optimisation_layers.ipynb")
    nbformat.write(notebook(AMOD), HERE / "03_amod_rebalancing.ipynb")
    nbformat.write(notebook(AMORTIZED), HERE / "04_amortized_inverse.ipynb")


if __name__ == "__main__":
    main()
