"""LearnedDynamics: learned from data alone, multi-step accurate, seeded, and usable inside an inverse problem."""
import numpy as np
import pytest
import torch

from ohio_layers.inverse import AnalyticSolver, InverseProblem, LevenbergMarquardt
from ohio_layers.lowlevel import LearnedDynamics, LQRGoalController, sequence_windows

DT, H = 0.05, 4


def true_step(x, u):
    """Point mass with a position-dependent input gain (like a mass-matrix coupling); not linear."""
    gain = 1.0 + 0.4 * torch.cos(x[:, 1:2])
    v = x[:, 2:] * 0.97 + DT * gain * u
    return torch.cat([x[:, :2] + DT * v, v], 1)


def episodes(n_eps, T, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_eps, 4, generator=g, dtype=torch.float64)
    xs, us = [], []
    for _ in range(T):
        u = torch.rand(n_eps, 2, generator=g, dtype=torch.float64) * 2 - 1
        xs.append(x)
        us.append(u)
        x = true_step(x, u)
    xs.append(x)
    X, U = torch.stack(xs, 1), torch.stack(us, 1)  # (E, T+1, 4), (E, T, 2)
    states = X[:, :-1].reshape(-1, 4).numpy()
    nxt = X[:, 1:].reshape(-1, 4).numpy()
    return states, nxt, U.reshape(-1, 2).numpy(), np.repeat(np.arange(n_eps), T)


@pytest.fixture(scope="module")
def data():
    tr = sequence_windows(*episodes(400, 8, seed=0), horizon=H)
    te = sequence_windows(*episodes(100, 8, seed=1), horizon=H, stride=H)
    return tr, te


def test_windows_stay_inside_episodes():
    states, nxt, acts, ep = episodes(3, 10, seed=0)
    x, u = sequence_windows(states, nxt, acts, ep, horizon=4)
    assert x.shape == (3 * 7, 5, 4) and u.shape == (3 * 7, 4, 2)
    torch.testing.assert_close(true_step(x[:, 0], u[:, 0]), x[:, 1])  # consecutive, same episode


def test_multistep_error_beats_the_linear_fit(data):
    (x, u), (xt, ut) = data
    linear = LearnedDynamics(4, 2, hidden=())
    linear.fit(x, u, progress=False)
    model = LearnedDynamics(4, 2, hidden=(32, 32))
    hist = model.fit(x, u, epochs=40, batch_size=256, lr=3e-3, seed=0, progress=False)
    assert min(hist["val_loss"]) < hist["linear_val_loss"][0]
    with torch.no_grad():
        e_lin = linear.rollout_error(xt, ut)[:, -1].norm(dim=-1).mean()
        e = model.rollout_error(xt, ut)[:, -1].norm(dim=-1).mean()
    assert float(e) < 0.3 * float(e_lin), (float(e), float(e_lin))


def test_seeded_and_linearization_matches_finite_differences(data):
    (x, u), _ = data

    def fit(seed):
        m = LearnedDynamics(4, 2, hidden=(16,), drop_dims=(0,))
        m.fit(x[:300], u[:300], epochs=3, batch_size=64, seed=seed, progress=False)
        return m

    a, b = fit(5), fit(5)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    s = torch.randn(6, 4, dtype=torch.float64)
    A, B = a.linearization(s)
    eps = 1e-6
    zero = torch.zeros(6, 2, dtype=torch.float64)
    for i in range(4):
        d = torch.zeros(4, dtype=torch.float64)
        d[i] = eps
        fd = (a(s + d, zero) - a(s - d, zero)) / (2 * eps)
        torch.testing.assert_close(A[:, :, i], fd, rtol=1e-6, atol=1e-8)
    for j in range(2):
        d = torch.zeros(2, dtype=torch.float64)
        d[j] = eps
        fd = (a(s, zero + d) - a(s, zero - d)) / (2 * eps)
        torch.testing.assert_close(B[:, :, j], fd, rtol=1e-6, atol=1e-8)


def test_inverse_through_the_learned_model(data):
    """An LQR built on the model's linearisation, inverted through the model, recovers the z that drove it."""
    (x, u), _ = data
    model = LearnedDynamics(4, 2, hidden=(16,))
    model.fit(x[:500], u[:500], epochs=2, batch_size=128, progress=False)
    c = LQRGoalController(model.linearization, horizon=3, action_bound=None)
    problem = InverseProblem(c, model, steps=3)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(50, 4, generator=g, dtype=torch.float64)
    z = torch.randn(50, 4, generator=g, dtype=torch.float64)
    ctx = c.context(x0)
    s = x0
    with torch.no_grad():
        for l in range(3):
            s = model(s, c.act(s, z, ctx, l))
    batch = problem.batch(x0, target=s)
    res = LevenbergMarquardt().solve(problem, batch, AnalyticSolver().solve(problem, batch).z)
    assert float(res.residual.max()) < 1e-6
    torch.testing.assert_close(res.z, z, rtol=0, atol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="drop_dims"):
        LearnedDynamics(4, 2, drop_dims=(7,))
    m = LearnedDynamics(4, 2)
    with pytest.raises(ValueError, match="u must have shape"):
        m.fit(torch.zeros(5, 4, 4, dtype=torch.float64), torch.zeros(5, 2, 2, dtype=torch.float64))
