import hashlib

import numpy as np
import pytest
import torch

from helpers import make_inverter, reacher_like_lqr, synthetic_dataset
from ohio_layers.data import Dataset
from ohio_layers.inverse import (AdamSolver, AnalyticSolver, CEMSolver, InverseProblem, LevenbergMarquardt,
                                 relabel, residual_jacobian)
from ohio_layers.lowlevel import LinearizedDynamics, LowLevelController, rollout


def windows(controller, n, z_scale, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 4, generator=g, dtype=torch.float64)
    z = z_scale * torch.randn(n, 4, generator=g, dtype=torch.float64)
    traj, actions = rollout(controller, LinearizedDynamics(), x0, z)
    return x0, z, traj, actions


def test_unclipped_roundtrip_analytic_1e8_numerical_1e5():
    c = reacher_like_lqr(action_bound=None)
    x0, z, traj, _ = windows(c, 500, 3.0)
    p = InverseProblem(c, LinearizedDynamics())
    b = p.batch(x0, target=traj[:, -1])
    ana = AnalyticSolver().solve(p, b)
    assert (ana.z - z).abs().max() < 1e-8
    assert ana.converged.all() and (ana.iterations == 0).all()
    lm = LevenbergMarquardt().solve(p, b)  # from z0 = 0, no analytic warm start
    assert (lm.z - z).abs().max() < 1e-5 and lm.converged.all()
    adam = AdamSolver(lr=0.2, max_iter=2000, ftol=0).solve(p, b, z0=traj[:, -1])
    assert (adam.z - z).abs().max() < 1e-5
    # CEM is the derivative-free fallback: precise on most windows, not guaranteed on all
    cem = CEMSolver(init_std=4.0, seed=0).solve(p, p.batch(x0[:40], target=traj[:40, -1]))
    assert ((cem.z - z[:40]).abs().amax(-1) < 1e-5).float().mean() >= 0.8


def test_with_clipping_numerical_beats_analytic():
    c = reacher_like_lqr(action_bound=1.0)
    x0, z, traj, actions = windows(c, 400, 8.0, seed=1)
    saturated = (actions.abs() >= 1.0 - 1e-12).any(-1).any(-1)
    assert saturated.float().mean() > 0.3  # the test must exercise the clip
    p = InverseProblem(c, LinearizedDynamics())
    b = p.batch(x0, target=traj[:, -1])
    ana = AnalyticSolver().solve(p, b)
    lm = LevenbergMarquardt(max_iter=50).solve(p, b, z0=ana.z)
    err_ana = (ana.z - z).norm(dim=-1)[saturated]
    err_lm = (lm.z - z).norm(dim=-1)[saturated]
    assert err_lm.median() < 0.1 * err_ana.median()
    assert lm.residual.median() < 1e-10 and ana.residual.median() > 1e-6
    assert (lm.residual <= ana.residual + 1e-12).all()  # LM never ends worse than its start


def test_action_matching_needs_no_dynamics():
    c = reacher_like_lqr(action_bound=None)
    x0, z, traj, actions = windows(c, 100, 2.0, seed=2)
    p = InverseProblem(c, match="actions")
    b = p.batch(x0, states=traj[:, :-1], actions=actions)
    assert (AnalyticSolver().solve(p, b).z - z).abs().max() < 1e-8
    assert (LevenbergMarquardt().solve(p, b).z - z).abs().max() < 1e-6


def test_tikhonov_shrinks_towards_reference_and_jacobian_is_exact():
    c = reacher_like_lqr(action_bound=None)
    x0, z, traj, _ = windows(c, 50, 2.0, seed=3)
    plain = InverseProblem(c, LinearizedDynamics())
    reg = InverseProblem(c, LinearizedDynamics(), regularization=1e-2)
    b = plain.batch(x0, target=traj[:, -1])
    z_plain, z_reg = AnalyticSolver().solve(plain, b).z, AnalyticSolver().solve(reg, b).z
    assert (z_reg.norm(dim=-1) < z_plain.norm(dim=-1)).all()
    torch.testing.assert_close(AnalyticSolver(ridge=1e-2).solve(plain, b).z, z_reg)
    r, J = residual_jacobian(plain, z, b)
    J_auto = torch.autograd.functional.jacobian(lambda zz: plain.residual(zz, b).sum(0), z).permute(1, 0, 2)
    torch.testing.assert_close(J, J_auto)


def test_z_bounds_are_respected():
    c = reacher_like_lqr(action_bound=None)
    c.z_low.fill_(-0.5)
    c.z_high.fill_(0.5)
    x0, z, traj, _ = windows(c, 50, 3.0, seed=4)
    p = InverseProblem(c, LinearizedDynamics())
    b = p.batch(x0, target=traj[:, -1])
    for solver in (AnalyticSolver(), LevenbergMarquardt(), AdamSolver(max_iter=50), CEMSolver(max_iter=5)):
        out = solver.solve(p, b)
        assert out.z.abs().max() <= 0.5 + 1e-12, type(solver).__name__


def test_analytic_refuses_non_affine_controller():
    class Cubic(LowLevelController):
        def __init__(self):
            super().__init__(4, 4, 2)

        def law(self, state, z, context, step):
            return (z ** 3)[:, :2] - state[:, :2]

    p = InverseProblem(Cubic(), match="actions", steps=1)
    b = p.batch(torch.zeros(1, 4, dtype=torch.float64), states=torch.zeros(1, 1, 4, dtype=torch.float64),
                actions=torch.zeros(1, 1, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="affine"):
        AnalyticSolver().solve(p, b)


def test_problem_rejects_bad_arguments():
    c = reacher_like_lqr()
    with pytest.raises(ValueError, match="dynamics is required"):
        InverseProblem(c)
    with pytest.raises(ValueError, match="match must be one of"):
        InverseProblem(c, LinearizedDynamics(), match="reward")
    p = InverseProblem(c, LinearizedDynamics())
    with pytest.raises(ValueError, match="target"):
        p.batch(torch.zeros(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"target must have shape \(3, 4\)"):
        p.batch(torch.zeros(3, 4, dtype=torch.float64), target=torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="target contains NaN"):
        p.batch(torch.zeros(1, 4, dtype=torch.float64), target=torch.full((1, 4), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match=r"z0 must have shape"):
        LevenbergMarquardt().solve(p, p.batch(torch.zeros(2, 4, dtype=torch.float64), target=torch.zeros(2, 4, dtype=torch.float64)),
                                   z0=torch.zeros(3, 4, dtype=torch.float64))


# ---------------------------------------------------------------------------------- relabel
def test_relabel_recovers_known_z_and_reports(tmp_path):
    c = reacher_like_lqr(action_bound=1.0)
    data = synthetic_dataset(c)
    hl, report = relabel(data, make_inverter(c), 5, tmp_path / "hl.npz", chunk_size=7, progress=False,
                         extra_keys=("z_true",), tolerance=1e-8)
    assert len(hl) == 6 * 4  # 23 steps -> 4 full windows per episode
    np.testing.assert_allclose(hl["z"], hl["z_true"], atol=1e-6)
    rows = np.flatnonzero(data["episode_ids"] == 0)[:5]
    assert hl["rewards"][0] == pytest.approx(data["rewards"][rows].sum())
    np.testing.assert_array_equal(hl["next_states"][0], data["next_states"][rows[-1]])
    assert report.windows == 24 and report.reproduced_share == 1.0
    assert not (tmp_path / "hl.npz.parts").exists()
    assert Dataset.load(tmp_path / "hl.npz").metadata["k"] == 5


def test_relabel_killed_halfway_resumes_byte_identical(tmp_path):
    c = reacher_like_lqr(action_bound=1.0)
    data = synthetic_dataset(c, episodes=8)
    relabel(data, make_inverter(c), 5, tmp_path / "full.npz", chunk_size=5, progress=False)

    calls = {"n": 0}
    inner = make_inverter(c)

    def crashing(dataset, starts):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("simulated crash")
        return inner(dataset, starts)

    crashing.describe = inner.describe
    with pytest.raises(KeyboardInterrupt):
        relabel(data, crashing, 5, tmp_path / "resumed.npz", chunk_size=5, progress=False)
    assert len(list((tmp_path / "resumed.npz.parts").glob("chunk_*.npz"))) == 3
    assert not (tmp_path / "resumed.npz").exists()
    calls["n"] = 100  # the resumed run must only solve the missing chunks
    relabel(data, crashing, 5, tmp_path / "resumed.npz", chunk_size=5, progress=False)
    assert calls["n"] == 100 + 7 - 3  # 32 windows / 5 = 7 chunks, 3 already done
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(tmp_path / "resumed.npz") == digest(tmp_path / "full.npz")


def test_relabel_refuses_to_mix_runs(tmp_path):
    c = reacher_like_lqr()
    data = synthetic_dataset(c, episodes=2)
    parts = tmp_path / "x.npz.parts"
    parts.mkdir()
    (parts / "manifest.json").write_text('{"fingerprint": "other"}')
    with pytest.raises(RuntimeError, match="different relabelling run"):
        relabel(data, make_inverter(c), 5, tmp_path / "x.npz", progress=False)
