"""Items 6, 7 (OSC part) and 9 (OSC part) of issue 15: the OSC inverse never returns a silent wrong answer."""
import pytest
import torch

from helpers import LAYOUT, substep_states
from ohio_layers.inverse.osc_inverse import OSCInverse
from ohio_layers.lowlevel.osc import ROBOSUITE_DELTA_LIMIT, OperationalSpaceController

F64 = torch.float64


def OSC(*args, **kwargs):
    kwargs.setdefault("delta_limit", None)
    return OperationalSpaceController(*args, **kwargs)


def recorded(c, states, z):
    ctx = c.context(states[:, 0])
    return torch.stack([c.act(states[:, j], z, ctx, j) for j in range(states.shape[1])], 1)


def boxed_z(N, seed):
    g = torch.Generator().manual_seed(seed)
    box = torch.tensor(ROBOSUITE_DELTA_LIMIT, dtype=F64)
    return box * (2 * torch.rand(N, 6, generator=g, dtype=F64) - 1)


def test_float32_data_give_finite_exact_answers():
    """The 1e-14 ridge was below float32 resolution and the failed Cholesky was ignored: NaN z."""
    N = 100
    states = substep_states(N, seed=31)
    z = boxed_z(N, 32)
    c = OperationalSpaceController()
    torques = recorded(c, states, z)
    res = OSCInverse().invert(c, states.float(), torques.float())
    assert res.z.dtype == torch.float32 and bool(torch.isfinite(res.z).all())
    err = (res.z.double() - z).abs().amax(-1)
    assert float((err <= 1e-3).float().mean()) >= 0.95
    assert float(res.converged.float().mean()) >= 0.95


def test_empty_batch_and_horizon_mismatch():
    c = OperationalSpaceController()
    empty = OSCInverse().invert(c, torch.zeros(0, 5, LAYOUT.dim, dtype=F64), torch.zeros(0, 5, 7, dtype=F64))
    assert empty.z.shape == (0, 6) and empty.converged.shape == (0,)
    states = substep_states(4, k=3, seed=33)
    with pytest.raises(ValueError, match="3 sub-steps .* horizon is 5"):
        OSCInverse().invert(c, states, torch.zeros(4, 3, 7, dtype=F64))


def test_default_z_box_is_robosuites_and_the_inverse_stays_inside_it():
    N = 40
    states = substep_states(N, seed=34)
    z = boxed_z(N, 35)
    z[:10, :3] = torch.tensor([1.1, -0.4, 0.3], dtype=F64)  # deltas robosuite would have clipped
    c = OperationalSpaceController()
    assert c.z_high.tolist() == list(ROBOSUITE_DELTA_LIMIT)
    torques = recorded(OSC(), states, z)  # recorded by an unbounded controller
    res = OSCInverse().invert(c, states, torques)
    assert bool((res.z.abs() <= c.z_high + 1e-12).all())  # was a 1.1 m delta
    assert not bool(res.reproduced(1e-6).any().item() and res.reproduced(1e-6)[:10].any())
    assert bool(res.reproduced(1e-6)[10:].all())


def test_one_singular_member_is_flagged_not_the_batch():
    N = 6
    states = substep_states(N, seed=36)
    z = boxed_z(N, 37)
    c = OperationalSpaceController()
    torques = recorded(c, states, z)
    states[2, :, LAYOUT.slices["mass"]] = 0.0  # singular mass matrix
    states[4, :, LAYOUT.slices["jac_pos"]] = 0.0  # singular Jacobian
    tau = c(states[:, 0], z)
    assert torch.isnan(tau[[2, 4]]).all() and torch.isfinite(tau[[0, 1, 3, 5]]).all()
    res = OSCInverse().invert(c, states, torques)
    assert res.converged.tolist() == [True, True, False, True, False, True]
    assert torch.isnan(res.z[[2, 4]]).all() and torch.isnan(res.residual[[2, 4]]).all()
    assert float((res.z[[0, 1, 3, 5]] - z[[0, 1, 3, 5]]).abs().max()) < 1e-8


def test_default_iterations_recover_hard_identifiable_transitions():
    """Members found on hard data (deltas up to 0.3 m / 1.5 rad) that 30 LM iterations missed."""
    N = 300
    states = substep_states(N, seed=21)
    g = torch.Generator().manual_seed(5)
    z = torch.cat([0.3 * (2 * torch.rand(N, 3, generator=g, dtype=F64) - 1),
                   1.5 * (2 * torch.rand(N, 3, generator=g, dtype=F64) - 1)], -1)
    c = OSC(150.0)
    rows = [76, 80, 189, 265]
    torques = recorded(c, states, z)[rows]
    short = OSCInverse(max_iter=30).invert(c, states[rows], torques)
    default = OSCInverse().invert(c, states[rows], torques)
    assert not bool(short.converged.any())  # and it says so
    assert bool(default.converged.all()) and float((default.z - z[rows]).abs().max()) < 1e-5


@pytest.mark.parametrize("kp", [float("nan"), [150.0] * 5 + [float("inf")], -1.0])
def test_gains_must_be_finite_and_non_negative(kp):
    with pytest.raises(ValueError, match="kp"):
        OperationalSpaceController(kp)
    with pytest.raises(ValueError, match="damping_ratio"):
        OperationalSpaceController(150.0, kp)
