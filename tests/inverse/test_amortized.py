"""AmortizedInverse on a controller defined only here: label-free training, bounds, fallback, persistence."""
import numpy as np
import pytest
import torch

from ohio_layers.data import Dataset
from ohio_layers.inverse import (AmortizedInverse, AmortizedResult, InverseProblem, LevenbergMarquardt,
                                 ProblemInverter, relabel, residual_jacobian)
from ohio_layers.lowlevel import ConstantLinearization, LinearizedDynamics, LowLevelController, rollout

K, Z_BOUND, TOL = 3, 3.0, 1e-6


class SquashedForceController(LowLevelController):
    """Not affine in z: ``u = clip(0.9 g(x) tanh(z / 2) - kd * v, +-1)``, gain ``g = 1 + 0.3 tanh(position)``.

    2-D point mass, state ``(p1, p2, v1, v2)``, z a squashed force command in ``[-3, 3]^2``.
    """

    def __init__(self):
        super().__init__(state_dim=4, z_dim=2, action_dim=2, horizon=K, z_low=-Z_BOUND, z_high=Z_BOUND,
                         action_low=-1.0, action_high=1.0)

    def law(self, state, z, context, step):
        gain = 1.0 + 0.3 * torch.tanh(state[:, :2])
        return gain * 0.9 * torch.tanh(z / 2) - 0.4 * state[:, 2:]


def point_mass(dt=0.1):
    A = torch.eye(4, dtype=torch.float64)
    A[0, 2] = A[1, 3] = dt
    B = torch.zeros(4, 2, dtype=torch.float64)
    B[0, 0] = B[1, 1] = 0.5 * dt * dt
    B[2, 0] = B[3, 1] = dt
    return ConstantLinearization(A, B)


def windows(n, seed):
    """Unlabelled windows ``(x0, x_k)`` of the controller driven by hidden z ~ U(+-2.8); also the hidden z."""
    g = torch.Generator().manual_seed(seed)
    c = SquashedForceController()
    lin = point_mass()
    x0 = torch.randn(n, 4, generator=g, dtype=torch.float64) * torch.tensor([1.0, 1.0, 0.3, 0.3], dtype=torch.float64)
    z = (torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 - 1) * 2.8
    ctx = {"A": lin.A.expand(n, -1, -1), "B": lin.B.expand(n, -1, -1)}
    traj, acts = rollout(c, LinearizedDynamics(), x0, z, ctx)
    return c, lin, x0, traj, acts, z


def make_problem(c, lin):
    return InverseProblem(c, LinearizedDynamics(lin))


def make_batch(problem, x0, traj):
    return problem.batch(x0, target=traj[:, -1])


@pytest.fixture(scope="module")
def trained():
    c, lin, x0, traj, acts, z = windows(3000, seed=0)
    problem = make_problem(c, lin)
    inv = AmortizedInverse(problem, hidden=(64, 64), tolerance=TOL, fallback=LevenbergMarquardt(max_iter=40), delta=0.1)
    history = inv.fit(make_batch(problem, x0, traj), epochs=300, batch_size=512, lr=1e-2, patience=30, seed=3,
                      progress=False)
    return problem, inv, history


def test_fallback_reproduces_identifiable_windows(trained):
    problem, inv, history = trained
    assert history["val_loss"][history["best_epoch"][0]] < history["val_loss"][0]
    c, lin, x0, traj, acts, z_true = windows(2000, seed=1)  # held-out windows
    batch = make_batch(problem, x0, traj)
    # identifiable: the residual's Jacobian at the hidden z has full column rank (not saturated away)
    _, J = residual_jacobian(problem, z_true, batch)
    identifiable = torch.linalg.svdvals(J)[:, -1] > 1e-4
    assert identifiable.float().mean() > 0.8

    alone = AmortizedInverse.solve(_without_fallback(inv), problem, batch)
    err = (alone.z - z_true).abs().amax(-1)[identifiable]
    assert float(err.median()) < 0.05 * float(z_true.std())  # the network learned the inverse without labels
    assert torch.equal(alone.flagged, ~(alone.residual <= TOL))

    res = inv.solve(problem, batch)
    assert isinstance(res, AmortizedResult)
    assert torch.equal(res.flagged, alone.flagged)
    assert not bool(res.fallback_used[~res.flagged].any())  # only flagged windows go to the exact solver
    reproduced = (res.residual <= TOL)[identifiable].double().mean()
    assert float(reproduced) >= 0.99
    assert torch.equal(res.converged, res.residual <= TOL)
    assert torch.allclose(res.residual, problem.residual(res.z, batch).norm(dim=-1), rtol=1e-9, atol=1e-15)


def _without_fallback(inv):
    clone = AmortizedInverse(inv.problem, hidden=inv.hidden, tolerance=inv.tolerance, delta=inv.delta)
    clone.load_state_dict(inv.state_dict())
    return clone


def test_outputs_respect_bounds(trained):
    problem, inv, _ = trained
    g = torch.Generator().manual_seed(5)
    x0 = 50 * torch.randn(500, 4, generator=g, dtype=torch.float64)
    target = 1e3 * torch.randn(500, 4, generator=g, dtype=torch.float64)  # far outside the training data
    z = inv(problem.batch(x0, target=target, with_context=False))
    assert z.dtype == torch.float64 and z.shape == (500, 2)
    assert bool(((z >= -Z_BOUND) & (z <= Z_BOUND)).all())
    assert float(z.abs().max()) > 0.9 * Z_BOUND  # the extreme inputs do reach the bounds


def test_save_load_roundtrip(trained, tmp_path):
    problem, inv, _ = trained
    c, lin, x0, traj, _, _ = windows(64, seed=2)
    batch = make_batch(problem, x0, traj)
    inv.save(tmp_path / "inv.pt")
    back = AmortizedInverse.load(tmp_path / "inv.pt", problem, tolerance=TOL)
    assert torch.equal(back(batch), inv(batch))
    for key, value in inv.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    other = InverseProblem(c, LinearizedDynamics(lin), steps=2)
    with pytest.raises(ValueError, match="steps"):
        AmortizedInverse.load(tmp_path / "inv.pt", other)
    with pytest.raises(RuntimeError, match="not trained"):
        AmortizedInverse(problem).solve(problem, batch)


def test_seeded_fits_are_identical():
    c, lin, x0, traj, _, _ = windows(400, seed=4)
    problem = make_problem(c, lin)
    batch = make_batch(problem, x0, traj)

    def fit(seed):
        inv = AmortizedInverse(problem, hidden=(16,))
        inv.fit(batch, epochs=5, batch_size=128, seed=seed, progress=False)
        return inv.state_dict()

    a, b, other = fit(7), fit(7), fit(8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], other[k]) for k in a)


def test_relabel_with_amortized_inverse(trained, tmp_path):
    problem, inv, _ = trained
    c, lin, x0, traj, acts, z_true = windows(300, seed=6)
    n = x0.shape[0]
    # one k-step episode per window
    data = Dataset({"states": traj[:, :-1].reshape(n * K, 4).numpy(), "next_states": traj[:, 1:].reshape(n * K, 4).numpy(),
                    "actions": acts.reshape(n * K, 2).numpy(), "rewards": np.zeros(n * K),
                    "terminals": np.tile([False] * (K - 1) + [True], n), "episode_ids": np.repeat(np.arange(n), K)})
    high, report = relabel(data, ProblemInverter(problem, inv), K, tmp_path / "hl.npz", progress=False, tolerance=TOL)
    assert len(high) == n and report.reproduced_share >= 0.95
    fast, fast_report = relabel(data, inv.inverter(compute_residual=False), K, tmp_path / "fast.npz", progress=False)
    assert np.isnan(fast["residual"]).all() and not fast["converged"].any()  # nothing was checked
    with torch.no_grad():
        z_net = inv(problem.batch(x0, target=traj[:, -1], with_context=False)).numpy()
    np.testing.assert_allclose(fast["z"], z_net, rtol=0, atol=1e-12)


def test_bad_arguments():
    c, lin, x0, traj, _, _ = windows(8, seed=0)
    problem = make_problem(c, lin)
    with pytest.raises(ValueError, match="tolerance"):
        AmortizedInverse(problem, tolerance=0.0)
    with pytest.raises(ValueError, match="drop_dims"):
        AmortizedInverse(problem, drop_dims=(4,))
    with pytest.raises(TypeError, match="fallback"):
        AmortizedInverse(problem, fallback=object())
    with pytest.raises(ValueError, match="context"):
        AmortizedInverse(problem).fit(problem.batch(x0, target=traj[:, -1], with_context=False))


def test_description_changes_with_the_weights(trained):
    """relabel's resume fingerprint uses describe(): two networks must never share one."""
    problem, inv, _ = trained
    same, other = _without_fallback(inv), _without_fallback(inv)
    assert ProblemInverter(problem, other).describe() == ProblemInverter(problem, same).describe()
    with torch.no_grad():
        other.net[0].bias[0] += 1e-6
    assert ProblemInverter(problem, other).describe() != ProblemInverter(problem, same).describe()
    assert other.inverter().describe() != same.inverter().describe()


def test_best_start_uses_the_better_start():
    from helpers import reacher_like_lqr
    from ohio_layers.inverse import AnalyticSolver, BestStart

    c = reacher_like_lqr(action_bound=1.0)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(200, 4, generator=g, dtype=torch.float64)
    z = 3 * torch.randn(200, 4, generator=g, dtype=torch.float64)
    traj, _ = rollout(c, LinearizedDynamics(), x0, z)
    problem = InverseProblem(c, LinearizedDynamics())
    batch = problem.batch(x0, target=traj[:, -1])
    lm = LevenbergMarquardt(max_iter=30)
    best = BestStart(AnalyticSolver(), lm)
    from_analytic = lm.solve(problem, batch, AnalyticSolver().solve(problem, batch).z)
    far = best.solve(problem, batch, torch.full_like(z, 20.0))  # a useless start: the analytic one is taken
    torch.testing.assert_close(far.z, from_analytic.z)
    exact = best.solve(problem, batch, z)  # the true z: kept, LM stops at once
    assert float(exact.residual.max()) < 1e-12 and int(exact.iterations.max()) <= 1
