"""Property-based: LQR and OSC controllers give the reference action or flag the member (issue 15).

Random batch sizes 0..5, dtypes, bounds and NaN / singular members. References: an independent
numpy Riccati recursion (LQR) and robosuite's own equations (OSC, ``robosuite_equations_numpy``).
Caller errors (NaN state or z in the checked ``forward``) must raise a named error; a NaN in the
unchecked ``act`` path, or a singular mass matrix / Jacobian, must stay in its own member.
"""
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import LAYOUT, reacher_like_linearization, robosuite_equations_numpy, robot_quantities
from ohio_layers.lowlevel import LQRGoalController
from ohio_layers.lowlevel.osc import OperationalSpaceController
from ohio_layers.lowlevel.rotations import axis_angle_to_matrix

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def numpy_lqr_gains(A, B, Q, R, k):
    P, gains = Q.copy(), []
    for _ in range(k):
        K = -np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
        P = Q + A.T @ P @ (A + B @ K)
        gains.append(K)
    return gains[::-1]


@SETTINGS
@given(B=st.integers(0, 5), dtype=st.sampled_from([torch.float32, torch.float64]), bound=st.sampled_from([None, 0.5, 2.0]),
       q=st.lists(st.floats(0.0, 20.0), min_size=4, max_size=4), r=st.floats(0.01, 5.0), step=st.integers(0, 4),
       nan_rows=st.lists(st.integers(0, 4), max_size=2), seed=st.integers(0, 2 ** 16))
def test_lqr_member_is_the_reference_or_nan(B, dtype, bound, q, r, step, nan_rows, seed):
    lin = reacher_like_linearization()
    c = LQRGoalController(lin, Q=q, R=r, relative_dims=(0, 1), action_bound=bound)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 4, generator=g, dtype=torch.float64)
    z = torch.randn(B, 4, generator=g, dtype=torch.float64)
    x, z = x.to(dtype), z.to(dtype)
    ctx = c.context(x)
    A, Bm = lin.A.numpy(), lin.B.numpy()
    K = numpy_lqr_gains(A, Bm, np.diag(q), r * np.eye(2), 5)[step]
    bad = sorted({i for i in nan_rows if i < B})
    xs = x.clone()
    xs[bad, 2] = math.nan  # the step state of these members is NaN (unchecked act path)
    u = c.act(xs, z, ctx, step)
    assert u.shape == (B, 2) and u.dtype == dtype
    tol = 1e-9 if dtype == torch.float64 else 2e-3
    for b in range(B):
        if b in bad:
            assert bool(torch.isnan(u[b]).any())
            continue
        xb, zb = x[b].double().numpy(), z[b].double().numpy()
        ref = K @ (xb - zb - np.r_[xb[:2], 0.0, 0.0])
        if bound is not None:
            ref = np.clip(ref, -bound, bound)
        np.testing.assert_allclose(u[b].double().numpy(), ref, rtol=tol, atol=tol * (1 + np.abs(ref).max()))
    if bad:
        with pytest.raises(ValueError, match="state contains NaN"):
            c(xs, z)


@SETTINGS
@given(B=st.integers(0, 4), dtype=st.sampled_from([torch.float32, torch.float64]),
       singular=st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["mass", "jac_pos", "jac_ori"])), max_size=2),
       saturation=st.sampled_from(["none", "clip"]), seed=st.integers(0, 2 ** 16))
def test_osc_member_is_robosuites_torque_or_nan(B, dtype, singular, saturation, seed):
    q = robot_quantities(B, seed=seed)
    bad = sorted({i for i, _ in singular if i < B})
    for i, field in singular:
        if i < B:
            q[field][i] = 0.0
    state = LAYOUT.pack(q).to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    box = torch.tensor([0.05] * 3 + [0.5] * 3, dtype=torch.float64)
    z = (box * (2 * torch.rand(B, 6, generator=g, dtype=torch.float64) - 1)).to(dtype)
    c = OperationalSpaceController(saturation=saturation)
    tau = c(state, z)
    assert tau.shape == (B, 7) and tau.dtype == dtype
    kp = c.kp.detach().numpy()
    kd = 2 * np.sqrt(kp) * c.damping_ratio.detach().numpy()
    for b in range(B):
        if b in bad:
            assert bool(torch.isnan(tau[b]).all())
            continue
        s = {k: v[b].numpy() for k, v in LAYOUT.unpack(state.double()).items()}
        zb = z[b].double()
        goal_rot = (axis_angle_to_matrix(zb[None, 3:])[0].numpy()) @ s["rot"]
        ref = robosuite_equations_numpy(s, s["pos"] + zb[:3].numpy(), goal_rot, kp, kd)
        if saturation == "clip":
            ref = np.clip(ref, -c.action_high.numpy(), c.action_high.numpy())
        tol = 1e-7 if dtype == torch.float64 else 5e-2
        np.testing.assert_allclose(tau[b].double().numpy(), ref, rtol=tol, atol=tol * (1 + np.abs(ref).max()))
    with pytest.raises(ValueError, match="z"):
        c(state, torch.full_like(z, 1.0) if B else torch.full((1, 6), 1.0, dtype=dtype))
