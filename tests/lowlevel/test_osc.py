"""OperationalSpaceController (robosuite OSC_POSE) and its batched inverse, on synthetic robot states."""
import numpy as np
import pytest
import torch

from ohio_layers.inverse.osc_inverse import OSCInverse
from ohio_layers.inverse.problem import InverseProblem
from ohio_layers.lowlevel.osc import OperationalSpaceController, task_space_inverse
from ohio_layers.lowlevel.rotations import axis_angle_to_matrix, axis_angle_to_quat, orientation_error, quat_to_matrix

from helpers import LAYOUT, robosuite_equations_numpy, robot_quantities, substep_states

F64 = torch.float64


def OSC(*args, **kwargs):
    """The controller without robosuite's default delta box: these tests use larger deltas on purpose."""
    kwargs.setdefault("delta_limit", None)
    return OperationalSpaceController(*args, **kwargs)


# ------------------------------------------------------------------ rotations and layout
def test_exp_map_matches_quaternion_path_and_is_smooth_at_zero():
    w = torch.randn(64, 3, dtype=F64)
    w[0] = 0.0
    w[1] = 1e-9
    torch.testing.assert_close(axis_angle_to_matrix(w), quat_to_matrix(axis_angle_to_quat(w)), atol=1e-14, rtol=0)
    R = axis_angle_to_matrix(w)
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=F64).expand(64, 3, 3), atol=1e-14, rtol=0)
    zero = torch.zeros(1, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (zero,))
    assert torch.autograd.gradgradcheck(axis_angle_to_matrix, (zero,))
    jac = torch.autograd.functional.jacobian(lambda v: axis_angle_to_matrix(v)[0], zero)
    assert float(jac.abs().sum()) > 1.0  # no gradient singularity at zero rotation
    near = torch.tensor([[1e-5, -2e-5, 3e-5]], dtype=F64, requires_grad=True)  # series branch
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (near,))


def test_left_jacobian_is_the_derivative_of_the_exp_map():
    from ohio_layers.lowlevel.rotations import left_jacobian, skew

    for w in (torch.randn(3, dtype=F64), torch.tensor([1e-6, 0, 2e-6], dtype=F64), torch.zeros(3, dtype=F64)):
        jac = torch.autograd.functional.jacobian(axis_angle_to_matrix, w)  # (3, 3, 3)
        R, Jl = axis_angle_to_matrix(w), left_jacobian(w)
        for i in range(3):
            torch.testing.assert_close(jac[..., i], skew(Jl[:, i]) @ R, atol=1e-12, rtol=0)


def test_orientation_error_of_a_small_rotation_is_the_rotation_vector():
    g = torch.Generator().manual_seed(0)  # was the global RNG: the result depended on the tests run before
    R = axis_angle_to_matrix(torch.randn(8, 3, generator=g, dtype=F64))
    e = torch.randn(8, 3, generator=g, dtype=F64) * 1e-4
    err = orientation_error(axis_angle_to_matrix(e) @ R, R)
    torch.testing.assert_close(err, e, atol=1e-11, rtol=0)


def test_layout_round_trip_and_errors():
    q = robot_quantities(3)
    state = LAYOUT.pack(q)
    assert state.shape == (3, LAYOUT.dim) == (3, 137)
    for name, value in LAYOUT.unpack(state).items():
        torch.testing.assert_close(value, q[name], atol=0, rtol=0)
    with pytest.raises(KeyError, match="bias"):
        LAYOUT.pack({k: v for k, v in q.items() if k != "bias"})
    with pytest.raises(ValueError, match="mass"):
        LAYOUT.pack({**q, "mass": q["mass"][:, :6]})
    c = OSC()
    with pytest.raises(ValueError, match="state"):
        c(state[:, :100], torch.zeros(3, 6, dtype=F64))
    with pytest.raises(ValueError, match="z"):
        c(state, torch.zeros(3, 5, dtype=F64))
    with pytest.raises(ValueError, match="z"):
        c(state, torch.full((3, 6), float("nan"), dtype=F64))
    with pytest.raises(ValueError, match="kp"):
        OSC(kp=[1.0, 2.0])


# ------------------------------------------------------------------ the law
def test_torques_equal_robosuite_equations():
    B = 16
    q = robot_quantities(B, seed=1)
    state = LAYOUT.pack(q)
    kp = torch.tensor([150.0, 120, 90, 60, 50, 40], dtype=F64)
    ratio = torch.tensor([1.0, 0.7, 2.0, 1.0, 3.0, 0.5], dtype=F64)
    c = OSC(kp, ratio, saturation="none")
    z = 0.05 * torch.randn(B, 6, dtype=F64)
    tau = c(state, z)
    kd = (2 * kp.sqrt() * ratio).numpy()
    for i in range(B):
        s = {k: v[i].numpy() for k, v in q.items()}
        goal_rot = axis_angle_to_matrix(z[i, 3:]).numpy() @ s["rot"]
        ref = robosuite_equations_numpy(s, s["pos"] + z[i, :3].numpy(), goal_rot, kp.numpy(), kd)
        np.testing.assert_allclose(tau[i].numpy(), ref, atol=1e-9, rtol=1e-10)


def test_goal_is_set_from_the_first_substep():
    from ohio_layers.lowlevel.osc import osc_torques

    states = substep_states(4)
    z = 0.03 * torch.randn(4, 6, dtype=F64)
    c = OSC(saturation="none")
    ctx = c.context(states[:, 0])
    s0, s3 = LAYOUT.unpack(states[:, 0]), LAYOUT.unpack(states[:, 3])
    # at sub-step 3 the goal is still p_0 + dp, Exp(dw) R_0
    goal_pos, goal_rot = s0["pos"] + z[:, :3], axis_angle_to_matrix(z[:, 3:]) @ s0["rot"]
    kp = c.kp.detach()
    expected = osc_torques(s3, goal_pos, goal_rot, kp, 2 * kp.sqrt() * c.damping_ratio.detach())
    torch.testing.assert_close(c.act(states[:, 3], z, ctx, step=3), expected, atol=1e-12, rtol=0)
    assert not torch.allclose(c.act(states[:, 3], z, c.context(states[:, 3]), step=3), expected)


def test_variable_impedance_modes_equal_fixed_gains():
    state = LAYOUT.pack(robot_quantities(5, seed=2))
    delta = 0.04 * torch.randn(5, 6, dtype=F64)
    kp = torch.tensor([200.0, 150, 100, 80, 60, 40], dtype=F64)
    ratio = torch.tensor([1.5, 1, 0.5, 2, 1, 1], dtype=F64)
    fixed = OSC(kp, ratio)
    variable = OSC(impedance_mode="variable")
    z = torch.cat([ratio.expand(5, -1), kp.expand(5, -1), delta], -1)
    torch.testing.assert_close(variable(state, z), fixed(state, delta), atol=1e-12, rtol=0)
    variable_kp = OSC(impedance_mode="variable_kp")
    torch.testing.assert_close(variable_kp(state, torch.cat([kp.expand(5, -1), delta], -1)),
                               OSC(kp, 1.0)(state, delta), atol=1e-12, rtol=0)
    clipped = variable(state, torch.cat([ratio.expand(5, -1), torch.full((5, 6), 1e4, dtype=F64), delta], -1))
    torch.testing.assert_close(clipped, OSC(300.0, ratio)(state, delta), atol=1e-12, rtol=0)


def test_gradcheck_in_z_including_zero_rotation_and_in_kp():
    state = LAYOUT.pack(robot_quantities(3, seed=3))
    c = OSC(saturation="none")
    z = 0.02 * torch.randn(3, 6, dtype=F64)
    z[0, 3:] = 0.0  # zero rotation
    z = z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda zz: c(state, zz), (z,))
    jac = torch.autograd.functional.jacobian(lambda zz: c(state, zz)[0], z)[:, 0, 3:]
    assert float(jac.abs().max()) > 1.0  # the orientation gradient is alive at zero rotation

    def with_kp(kp, ratio, zz):
        return torch.func.functional_call(c, {"kp": kp, "damping_ratio": ratio}, (state, zz))

    kp = torch.tensor([150.0, 120, 90, 60, 50, 40], dtype=F64, requires_grad=True)
    ratio = torch.tensor([1.0, 0.7, 2.0, 1.0, 3.0, 0.5], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(with_kp, (kp, ratio, z))


def test_trainable_gains_receive_gradients():
    state = LAYOUT.pack(robot_quantities(4, seed=4))
    c = OSC(trainable_gains=True)
    c(state, 0.02 * torch.randn(4, 6, dtype=F64)).pow(2).sum().backward()
    assert c.kp.grad is not None and float(c.kp.grad.abs().sum()) > 0
    assert float(OSC().kp.requires_grad) == 0


def test_clip_saturation_matches_torque_limits():
    state = LAYOUT.pack(robot_quantities(32, seed=5))
    z = 0.1 * torch.randn(32, 6, dtype=F64)
    raw = OSC(saturation="none")(state, z)
    clipped = OSC()(state, z)
    limit = torch.tensor([80.0] * 5 + [12.0] * 2, dtype=F64)
    assert bool((raw.abs() > limit).any()), "the test should saturate some torques"
    torch.testing.assert_close(clipped, raw.clamp(-limit, limit), atol=0, rtol=0)


def test_qp_saturation_is_the_weighted_projection():
    cp = pytest.importorskip("cvxpy")
    q = robot_quantities(12, seed=6)
    state = LAYOUT.pack(q)
    z = 0.1 * torch.randn(12, 6, dtype=F64)
    raw = OSC(saturation="none")(state, z)
    qp = OSC(saturation="qp")(state, z)
    identity = OSC(saturation="qp", qp_weight="identity")(state, z)
    torch.testing.assert_close(identity, OSC()(state, z), atol=0, rtol=0)
    limit = np.array([80.0] * 5 + [12.0] * 2)
    assert bool((raw.abs().numpy() > limit).any())
    for i in range(12):
        W = np.linalg.inv(q["mass"][i].numpy())
        x = cp.Variable(7)
        d = x - raw[i].numpy()
        cp.Problem(cp.Minimize(cp.quad_form(d, cp.psd_wrap(W))), [cp.abs(x) <= limit]).solve(
            solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
        np.testing.assert_allclose(qp[i].numpy(), x.value, atol=1e-6)


def test_gradcheck_through_the_qp_saturation():
    state = LAYOUT.pack(robot_quantities(2, seed=7))
    c = OSC(saturation="qp", torque_limit=[20.0] * 5 + [4.0] * 2)
    z = (0.05 * torch.randn(2, 6, dtype=F64)).requires_grad_(True)
    raw = OSC(saturation="none", torque_limit=None)(state, z)
    assert bool((raw.abs() > torch.tensor([20.0] * 5 + [4.0] * 2, dtype=F64)).any())
    assert torch.autograd.gradcheck(lambda zz: c(state, zz), (z,))


def test_task_space_damping():
    q = robot_quantities(4, seed=8)
    J = torch.cat([q["jac_pos"], q["jac_ori"]], 1)
    A = J @ torch.linalg.solve(q["mass"], J.transpose(1, 2))
    torch.testing.assert_close(task_space_inverse(A, 0.0), torch.linalg.pinv(A, hermitian=True), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(task_space_inverse(A, 1e-7), torch.linalg.pinv(A, hermitian=True), atol=1e-6, rtol=1e-6)
    # singular pose: two identical Jacobian rows; the damped inverse stays finite and differentiable
    q["jac_ori"][:, 2] = q["jac_ori"][:, 1]
    state = LAYOUT.pack(q)
    c = OSC(saturation="none", task_damping=1e-3)
    z = (0.02 * torch.randn(4, 6, dtype=F64)).requires_grad_(True)
    assert bool(torch.isfinite(c(state, z)).all())
    assert torch.autograd.gradcheck(lambda zz: c(state, zz), (z,))


# ------------------------------------------------------------------ the inverse
@pytest.mark.parametrize("kp, ratio", [(150.0, 1.0), ([150.0, 150, 150, 50, 50, 50], 1.0), (150.0, [3.0, 3, 3, 1, 1, 1])])
def test_inverse_recovers_z_with_clipping(kp, ratio):
    N = 400
    states = substep_states(N, seed=11)
    g = torch.Generator().manual_seed(12)
    z_true = torch.cat([0.05 * (2 * torch.rand(N, 3, generator=g, dtype=F64) - 1),
                        0.5 * (2 * torch.rand(N, 3, generator=g, dtype=F64) - 1)], -1)
    z_true[:10, 3:] = 0.0  # zero rotations must be recoverable too
    c = OSC(kp, ratio)
    ctx = c.context(states[:, 0])
    torques = torch.stack([c.act(states[:, j], z_true, ctx, j) for j in range(5)], 1)
    saturated = (torques.abs() >= c.action_high - 1e-12).any(-1).any(-1)
    assert float(saturated.float().mean()) > 0.05, "the data should contain clipped torques"
    result = OSCInverse().invert(c, states, torques)
    err = (result.z - z_true).abs().amax(-1)
    assert float((err <= 1e-5).float().mean()) >= 0.99
    assert result.residual.shape == (N,) and float(result.residual.median()) < 1e-8
    assert float(result.converged.float().mean()) >= 0.99
    assert int(result.iterations.max()) <= 30


def test_inverse_relabels_for_a_changed_controller_and_via_the_problem_interface():
    N = 64
    states = substep_states(N, seed=13)
    z_true = 0.03 * torch.randn(N, 6, dtype=F64)
    behaviour = OSC(150.0, 1.0, saturation="none")
    ctx = behaviour.context(states[:, 0])
    torques = torch.stack([behaviour.act(states[:, j], z_true, ctx, j) for j in range(5)], 1)
    changed = OSC([150.0, 150, 150, 50, 50, 50], 1.0, saturation="none")
    problem = InverseProblem(changed, match="actions")
    result = OSCInverse().solve(problem, problem.batch(states[:, 0], states=states, actions=torques))
    # z for the stiffer/softer controller differs but reproduces the torques as well as it can
    assert float((result.z - z_true).abs().max()) > 1e-3
    at_true = OSCInverse.residual(changed, z_true, states, torques).norm(dim=-1)
    assert bool((result.residual <= at_true + 1e-9).all())  # the least-squares z of the new controller


def test_inverse_with_qp_saturation_data():
    N = 200
    states = substep_states(N, seed=14)
    z_true = torch.cat([0.02 * torch.randn(N, 3, dtype=F64), 0.2 * torch.randn(N, 3, dtype=F64)], -1)
    c = OSC(saturation="qp")
    ctx = c.context(states[:, 0])
    torques = torch.stack([c.act(states[:, j], z_true, ctx, j) for j in range(5)], 1)
    result = OSCInverse().invert(c, states, torques)
    usable = ((torques.abs() < c.action_high - 1e-9).all(-1).sum(-1) >= 1)  # at least one clean sub-step
    err = (result.z - z_true).abs().amax(-1)
    assert float((err[usable] <= 1e-5).float().mean()) >= 0.99
