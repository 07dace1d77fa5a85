"""Item 9 of issue 15 (inverse part): caller errors get named errors, not obscure crashes."""
import pytest
import torch

from helpers import reacher_like_lqr
from ohio_layers.inverse import AdamSolver, CEMSolver, InverseProblem, LevenbergMarquardt, OSCInverse
from ohio_layers.lowlevel import LinearizedDynamics
from ohio_layers.lowlevel.osc import OperationalSpaceController


def test_problem_steps_and_z_ref():
    c = reacher_like_lqr()
    with pytest.raises(ValueError, match=r"steps must be in \[1, controller.horizon = 5\]"):
        InverseProblem(c, LinearizedDynamics(), steps=6)  # was an IndexError deep in the rollout
    with pytest.raises(TypeError, match="steps must be an int"):
        InverseProblem(c, LinearizedDynamics(), steps="3")
    with pytest.raises(ValueError, match=r"z_ref must have shape \(4\)"):
        InverseProblem(c, LinearizedDynamics(), regularization=0.1, z_ref=torch.zeros(3))
    with pytest.raises(ValueError, match="z_ref contains NaN"):
        InverseProblem(c, LinearizedDynamics(), regularization=0.1, z_ref=[0.0, float("nan"), 0.0, 0.0])


def test_linearized_dynamics_without_a_b_in_the_context_says_what_to_do():
    osc = OperationalSpaceController()
    p = InverseProblem(osc, LinearizedDynamics())  # the README pattern with a controller that has no A/B
    with pytest.raises(ValueError, match=r"LinearizedDynamics\(linearization\)"):
        p.batch(torch.zeros(2, osc.state_dim, dtype=torch.float64), target=torch.zeros(2, osc.state_dim, dtype=torch.float64))


@pytest.mark.parametrize("make, match", [
    (lambda: AdamSolver(patience=0), "AdamSolver.patience"),
    (lambda: AdamSolver(lr=float("nan")), "AdamSolver.lr"),
    (lambda: CEMSolver(elite_frac=2), "CEMSolver.elite_frac"),
    (lambda: CEMSolver(init_std=float("nan")), "CEMSolver.init_std"),
    (lambda: CEMSolver(population=2.5), "CEMSolver.population"),
    (lambda: LevenbergMarquardt(max_iter=-1), "LevenbergMarquardt.max_iter"),
    (lambda: OSCInverse(max_iter="30"), "OSCInverse.max_iter"),
])
def test_solver_settings_are_checked_at_construction(make, match):
    with pytest.raises((TypeError, ValueError), match=match):
        make()


def test_cem_population_error_names_population_and_z_dim():
    c = reacher_like_lqr()
    p = InverseProblem(c, LinearizedDynamics())
    b = p.batch(torch.zeros(1, 4, dtype=torch.float64), target=torch.zeros(1, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"CEMSolver.population must be at least z_dim \+ 1 = 5"):
        CEMSolver(population=4).solve(p, b)
