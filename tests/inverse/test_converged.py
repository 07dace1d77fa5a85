"""Item 5 of issue 15: one meaning of ``converged`` for every solver, separate from ``reproduced``."""
import pytest
import torch

from helpers import reacher_like_lqr
from ohio_layers.inverse import AdamSolver, AnalyticSolver, CEMSolver, InverseProblem, LevenbergMarquardt
from ohio_layers.inverse.convergence import assess
from ohio_layers.lowlevel import LinearizedDynamics, rollout

F64 = torch.float64


def clipped_windows(n=60, z_scale=8.0, seed=1, dtype=F64):
    c = reacher_like_lqr(action_bound=1.0)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 4, generator=g, dtype=F64)
    z = z_scale * torch.randn(n, 4, generator=g, dtype=F64)
    traj, actions = rollout(c, LinearizedDynamics(), x0, z)
    p = InverseProblem(c, LinearizedDynamics())
    return c, p, p.batch(x0.to(dtype), target=traj[:, -1].to(dtype)), z, actions


SOLVERS = [AnalyticSolver(), LevenbergMarquardt(max_iter=40), AdamSolver(max_iter=60), CEMSolver(population=64, max_iter=15)]


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: type(s).__name__)
def test_every_solver_reports_the_common_test_at_its_z(solver):
    _, p, b, _, _ = clipped_windows(30)
    res = solver.solve(p, b)
    residual, converged = assess(p, b, res.z)
    assert torch.equal(res.converged, converged)
    torch.testing.assert_close(res.residual, residual)


def test_analytic_is_not_converged_where_saturation_breaks_the_affine_model():
    c, p, b, _, actions = clipped_windows(200)
    saturated = (actions.abs() >= 1.0 - 1e-12).any(-1).any(-1)
    res = AnalyticSolver().solve(p, b)
    wrong = res.residual > 1e-6
    assert bool(wrong.any()) and bool(saturated[wrong].all())
    assert not bool(res.converged[wrong].any())  # was True everywhere
    assert bool(res.converged[~saturated].all())  # exact where the affine model holds


def test_a_flat_region_is_neither_converged_nor_reproduced():
    """Started where every action saturates, J = 0: the old LM stopped with converged=True at a large residual."""
    c, p, b, _, _ = clipped_windows(20, z_scale=0.5, seed=2)
    far = torch.full((20, 4), float(c.z_high[0]), dtype=F64)  # every action at its clip for all k steps
    _, J = __import__("ohio_layers.inverse", fromlist=["residual_jacobian"]).residual_jacobian(p, far, b)
    assert float(J.abs().max()) == 0.0  # the case: no information
    res = LevenbergMarquardt().solve(p, b, z0=far)
    assert not bool(res.converged.any())
    assert not bool(res.reproduced(1e-3).any())


def test_converged_but_not_reproduced_and_reproduced_but_not_converged():
    c, p, b, z_true, _ = clipped_windows(40, z_scale=3.0, seed=3)
    # z boxed far inside the truth: LM ends on a KKT point of the bound, which does not explain the data
    c.z_low.fill_(-0.1)
    c.z_high.fill_(0.1)
    lm = LevenbergMarquardt(max_iter=60).solve(p, b)
    assert float(lm.converged.float().mean()) >= 0.9
    assert not bool(lm.reproduced(1e-3).any())
    c.z_low.fill_(-8 * torch.pi)
    c.z_high.fill_(8 * torch.pi)
    # a few Adam steps from close to the truth: within a loose data tolerance, but not stationary
    adam = AdamSolver(lr=1e-3, max_iter=3).solve(p, b, z0=z_true + 1e-4)
    assert bool(adam.reproduced(1e-2).all()) and not bool(adam.converged.any())


def test_exact_answers_are_converged_in_float32_too():
    c = reacher_like_lqr(action_bound=None)
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(50, 4, generator=g, dtype=F64)
    z = torch.randn(50, 4, generator=g, dtype=F64)
    traj, _ = rollout(c, LinearizedDynamics(), x0, z)
    p = InverseProblem(c, LinearizedDynamics())
    for dtype in (F64, torch.float32):
        b = p.batch(x0.to(dtype), target=traj[:, -1].to(dtype))
        for solver in (AnalyticSolver(), LevenbergMarquardt()):
            res = solver.solve(p, b)
            assert res.z.dtype == dtype
            assert bool(res.converged.all()), (dtype, type(solver).__name__)
