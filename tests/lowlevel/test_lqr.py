import numpy as np
import pytest
import scipy.linalg
import torch

from helpers import reacher_like_linearization, reacher_like_lqr
from ohio_layers.lowlevel import ConstantLinearization, LowLevelController, LQRGoalController, riccati_gains


def dense_finite_horizon_gain(A, B, Q, R, N):
    """First gain of the N-step LQR from one dense least-squares problem (no recursion)."""
    n, m = B.shape
    Sx = np.vstack([np.linalg.matrix_power(A, i) for i in range(N + 1)])
    Su = np.zeros(((N + 1) * n, N * m))
    for i in range(1, N + 1):
        for j in range(i):
            Su[i * n:(i + 1) * n, j * m:(j + 1) * m] = np.linalg.matrix_power(A, i - 1 - j) @ B
    Qbar, Rbar = np.kron(np.eye(N + 1), Q), np.kron(np.eye(N), R)
    gain = -np.linalg.solve(Su.T @ Qbar @ Su + Rbar, Su.T @ Qbar @ Sx)
    return gain[:m]


def test_riccati_gains_equal_dense_solution_every_step():
    rng = np.random.default_rng(0)
    A = np.eye(4) + 0.1 * rng.standard_normal((4, 4))
    B = rng.standard_normal((4, 2))
    Q, R, N = np.diag([10.0, 10, 1, 1]), 0.1 * np.eye(2), 5
    K = riccati_gains(torch.tensor(A)[None], torch.tensor(B)[None], torch.tensor(Q), torch.tensor(R), N)[0]
    for l in range(N):  # gain at step l = first gain of the remaining (N - l)-step problem
        np.testing.assert_allclose(K[l].numpy(), dense_finite_horizon_gain(A, B, Q, R, N - l), atol=1e-8, rtol=0)


def test_riccati_long_horizon_matches_scipy_dare():
    rng = np.random.default_rng(1)
    A = np.eye(4) * 0.95 + 0.05 * rng.standard_normal((4, 4))
    B = rng.standard_normal((4, 2))
    Q, R = np.diag([10.0, 10, 1, 1]), 0.1 * np.eye(2)
    P = scipy.linalg.solve_discrete_are(A, B, Q, R)
    K_inf = -np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
    K = riccati_gains(torch.tensor(A)[None], torch.tensor(B)[None], torch.tensor(Q), torch.tensor(R), 400)
    np.testing.assert_allclose(K[0, 0].numpy(), K_inf, atol=1e-8)


def test_gradcheck_lqr_layer_in_z_state_and_linearization():
    A0, B0 = reacher_like_linearization().A.clone(), reacher_like_linearization().B.clone()

    def layer(x, z, A, B):
        c = LQRGoalController(ConstantLinearization(torch.eye(4), torch.zeros(4, 2)), relative_dims=(0, 1), action_bound=None)
        ctx = {"offset": x * c.relative_mask, "K": riccati_gains(A.expand(2, -1, -1), B.expand(2, -1, -1), c.Q, c.R, 5)}
        return torch.cat([c.act(x, z, ctx, l) for l in range(5)], -1)

    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    z = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    A = A0.clone().requires_grad_(True)
    B = B0.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(layer, (x, z, A, B))


def test_gradcheck_clipped_controller_forward():
    c = reacher_like_lqr(action_bound=1.0)
    x = torch.randn(3, 4, dtype=torch.float64)
    z = (0.05 * torch.randn(3, 4, dtype=torch.float64)).requires_grad_(True)  # unsaturated region
    assert torch.autograd.gradcheck(lambda zz: c(x, zz), (z,))
    big = torch.full((1, 4), 20.0, dtype=torch.float64, requires_grad=True)  # saturated: zero gradient
    c(torch.zeros(1, 4, dtype=torch.float64), big).sum().backward()
    assert torch.all(big.grad == 0)


def test_batch_of_one_dtype_and_statelessness():
    c = reacher_like_lqr()
    x = torch.randn(5, 4, dtype=torch.float64)
    z = torch.randn(5, 4, dtype=torch.float64)
    full = c(x, z)
    ones = torch.cat([c(x[i:i + 1], z[i:i + 1]) for i in range(5)])
    assert full.shape == (5, 2) and c(x[:1], z[:1]).shape == (1, 2)
    torch.testing.assert_close(full, ones, rtol=0, atol=1e-14)
    torch.testing.assert_close(c(x, z), full, rtol=0, atol=0)  # no state carried between calls
    assert c(x.float(), z.float()).dtype == torch.float32


def test_relative_dims_make_z_translation_invariant():
    c = reacher_like_lqr(action_bound=None)
    x = torch.randn(4, 4, dtype=torch.float64)
    z = torch.randn(4, 4, dtype=torch.float64)
    shift = torch.tensor([2 * np.pi, -2 * np.pi, 0, 0], dtype=torch.float64)
    torch.testing.assert_close(c(x, z), c(x + shift, z))


def test_affine_form_equals_law():
    c = reacher_like_lqr(action_bound=None)
    x, z = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    ctx = c.context(x)
    for l in range(c.horizon):
        G, h = c.affine(x, ctx, l)
        torch.testing.assert_close((G @ z[..., None]).squeeze(-1) + h, c.act(x, z, ctx, l))


def test_custom_controller_in_one_short_class():
    class PD(LowLevelController):
        def __init__(self, kp=2.0, kd=0.5):
            super().__init__(state_dim=2, z_dim=1, action_dim=1, action_low=-1, action_high=1)
            self.kp, self.kd = kp, kd

        def law(self, state, z, context, step):
            return self.kp * (z - state[:, :1]) - self.kd * state[:, 1:]

    pd = PD()
    a = pd(torch.tensor([[0.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.25], [5.0]]))
    torch.testing.assert_close(a, torch.tensor([[0.5], [1.0]]))  # second one clipped
    assert not pd.is_affine


@pytest.mark.parametrize("state,z,match", [
    (torch.zeros(3, 5), torch.zeros(3, 4), r"state must have shape \(B, 4\)"),
    (torch.zeros(3, 4), torch.zeros(2, 4), "batch sizes differ"),
    (torch.full((1, 4), float("nan")), torch.zeros(1, 4), "state contains NaN"),
    (torch.zeros(1, 4), torch.full((1, 4), 100.0), "z is above its upper bound"),
    (torch.zeros(4), torch.zeros(4), r"state must have shape \(B, 4\)"),
])
def test_bad_inputs_name_the_argument(state, z, match):
    with pytest.raises((ValueError, TypeError), match=match):
        reacher_like_lqr()(state.double(), z.double())


def test_bad_construction_arguments():
    with pytest.raises(ValueError, match="Q must have 4 diagonal entries"):
        LQRGoalController(reacher_like_linearization(), Q=(1.0, 2.0))
    with pytest.raises(ValueError, match="relative_dims"):
        LQRGoalController(reacher_like_linearization(), relative_dims=(7,))


def test_learned_linearization_fits_a_linear_system_and_drives_the_lqr():
    from ohio_layers.lowlevel import LearnedLinearization

    true = reacher_like_linearization()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 4, generator=g, dtype=torch.float64)
    u = torch.rand(4000, 2, generator=g, dtype=torch.float64) * 2 - 1
    A, B = true(x)
    x1 = (A @ x[..., None] + B @ u[..., None]).squeeze(-1)
    model = LearnedLinearization(4, 2, hidden=64)
    torch.manual_seed(0)
    hist = model.fit(x, u, x1, epochs=30, lr=3e-3, seed=0)
    assert hist["val_loss"][-1] < 1e-2 * hist["val_loss"][0]
    with torch.no_grad():
        A_hat, B_hat = model(x[:200])
        pred = (A_hat @ x[:200, :, None] + B_hat @ u[:200, :, None]).squeeze(-1)
    # a generic MLP from zero: ~1% of the state scale (|x'| ~ 1-4) on held-in samples
    assert (pred - x1[:200]).abs().median() < 0.02
    lqr = LQRGoalController(model, relative_dims=(0, 1))
    with torch.no_grad():
        assert lqr(x[:3], torch.zeros(3, 4, dtype=torch.float64)).shape == (3, 2)
