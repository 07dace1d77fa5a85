"""Identification of a controller's own parameters jointly with z (inverse.identify, inverse.mixed)."""
import numpy as np
import pytest
import torch
from torch import nn

from helpers import reacher_like_linearization, reacher_like_lqr
from ohio_layers.data.dataset import Dataset
from ohio_layers.inverse import AnalyticSolver, InverseProblem, ProblemInverter
from ohio_layers.inverse.identify import Identifier, Unknown, diagonal_unknown, identify, identify_action_limits, osc_unknowns
from ohio_layers.inverse.mixed import cluster_identifications, identify_and_relabel
from ohio_layers.lowlevel import LowLevelController, LQRGoalController
from ohio_layers.lowlevel.osc import OperationalSpaceController, OSCStateLayout
from ohio_layers.lowlevel.rotations import axis_angle_to_matrix

F64 = torch.float64
LAYOUT = OSCStateLayout(7)


def osc_windows(N, k=5, seed=0, velocity=True):
    """``(N, k, 137)`` random, well-conditioned arm states drifting over k sub-steps (velocity 0 if not ``velocity``)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    v = 1.0 if velocity else 0.0
    A = r(N, 7, 7)
    base = dict(q=r(N, 7), qdot=0.3 * r(N, 7), q0=r(N, 7), pos=r(N, 3), rot=axis_angle_to_matrix(2 * r(N, 3)),
                lin_vel=0.1 * v * r(N, 3), ang_vel=0.3 * v * r(N, 3),
                mass=0.05 * A @ A.transpose(1, 2) + 0.3 * torch.eye(7, dtype=F64),
                jac_pos=0.5 * r(N, 3, 7), jac_ori=r(N, 3, 7), bias=5 * r(N, 7))
    steps = []
    for j in range(k):
        s = {key: t + j * scale * r(*t.shape) for key, t, scale in (
            ("q", base["q"], 0.002), ("qdot", base["qdot"], 0.05), ("pos", base["pos"], 0.001),
            ("lin_vel", base["lin_vel"], 0.01 * v), ("ang_vel", base["ang_vel"], 0.02 * v),
            ("jac_pos", base["jac_pos"], 0.002), ("jac_ori", base["jac_ori"], 0.002), ("bias", base["bias"], 0.05))}
        s.update(q0=base["q0"], mass=base["mass"], rot=axis_angle_to_matrix(0.003 * j * r(N, 3)) @ base["rot"])
        steps.append(LAYOUT.pack(s))
    return torch.stack(steps, 1)


def record(controller, states, z):
    """Applied (saturated) actions ``(N, k, da)`` of ``controller`` on ``states (N, k, ds)``."""
    ctx = controller.context(states[:, 0])
    with torch.no_grad():
        return torch.stack([controller.act(states[:, j], z, ctx, j) for j in range(states.shape[1])], 1)


def osc_z(N, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([0.04 * torch.randn(N, 3, generator=g, dtype=F64), 0.4 * torch.randn(N, 3, generator=g, dtype=F64)], -1)


# ------------------------------------------------------------------------------ OSC
def test_osc_kp_and_damping_ratio_of_every_axis_within_1_percent_with_noise():
    N = 120
    states = osc_windows(N, seed=3)
    kp, ratio = [120.0, 150, 180, 40, 60, 80], [2.5, 3.0, 3.5, 0.8, 1.0, 1.2]
    true = OperationalSpaceController(kp, ratio)
    tau = record(true, states, osc_z(N))
    saturated = tau.abs() >= true.action_high - 1e-9
    assert float(saturated.float().mean()) > 0.01, "the data should contain clipped torques"
    g = torch.Generator().manual_seed(4)
    tau = torch.where(saturated, tau, tau + 1e-3 * torch.randn(tau.shape, generator=g, dtype=F64))  # sensor noise
    res = Identifier().identify(OperationalSpaceController(150.0, 1.0), states, tau, osc_unknowns(per="axis"))
    rel = np.abs(res.estimate / np.r_[kp, ratio] - 1)
    assert res.converged and res.all_identifiable, res.reasons
    assert rel.max() < 0.01
    assert (np.abs(res.estimate - np.r_[kp, ratio]) <= 5 * res.std_error).all()  # the standard errors are honest
    assert res.relative_residual < 1e-3 and res.equations == int((~saturated).sum())


@pytest.mark.parametrize("kp, ratio", [((150.0,) * 6, (1.0,) * 6), ((150.0,) * 3 + (50.0,) * 3, (1.0,) * 6),
                                       ((150.0,) * 6, (3.0,) * 3 + (1.0,) * 3)])
def test_osc_axis_groups_of_the_paper_settings_exact_from_one_start(kp, ratio):
    N = 60
    states = osc_windows(N, seed=5)
    tau = record(OperationalSpaceController(list(kp), list(ratio)), states, osc_z(N, seed=6))
    res = Identifier().identify(OperationalSpaceController(100.0, 2.0), states, tau, osc_unknowns())
    assert res.labels == ["kp.pos", "kp.ori", "damping_ratio.pos", "damping_ratio.ori"]
    np.testing.assert_allclose(res.estimate, [kp[0], kp[3], ratio[0], ratio[3]], rtol=1e-6)
    c = res.apply(OperationalSpaceController(100.0, 2.0))
    np.testing.assert_allclose(c.kp.detach().numpy(), kp, rtol=1e-6)
    np.testing.assert_allclose(c.damping_ratio.detach().numpy(), ratio, rtol=1e-6)


def test_damping_on_windows_without_velocity_is_flagged_not_returned_silently():
    N = 60
    states = osc_windows(N, seed=7, velocity=False)
    start = OperationalSpaceController(150.0, 1.0)
    tau = record(OperationalSpaceController([150.0] * 3 + [50.0] * 3, [3.0] * 3 + [1.0] * 3), states, osc_z(N))
    res = Identifier().identify(start, states, tau, osc_unknowns())
    ok = dict(zip(res.labels, res.identifiable))
    assert ok == {"kp.pos": True, "kp.ori": True, "damping_ratio.pos": False, "damping_ratio.ori": False}
    np.testing.assert_allclose(res.estimate[:2], [150.0, 50.0], rtol=1e-6)
    assert "do not depend" in res.reasons[2] and np.isinf(res.std_error[2:]).all()
    with pytest.raises(ValueError, match="damping_ratio.pos"):
        res.apply(start)
    assert float(res.apply(start, strict=False).kp[3]) == pytest.approx(50.0, rel=1e-6)


def test_unknown_torque_limits_from_the_pile_up_then_gains():
    N = 150
    states = osc_windows(N, seed=8)
    limit = torch.tensor([40.0, 40, 40, 40, 40, 12, 12], dtype=F64)
    true = OperationalSpaceController(150.0, [3.0] * 3 + [1.0] * 3, torque_limit=limit)
    tau = record(true, states, osc_z(N))
    found = identify_action_limits(tau)
    hit = found["identified"]
    assert bool(hit.any())
    assert torch.allclose(found["limit"][hit], limit[hit]) and bool((found["limit"][~hit] < limit[~hit]).all())
    ids = np.zeros(N, np.int64)
    data = Dataset({"s": states.numpy(), "a": tau.numpy(), "episode_ids": ids})
    res = identify(OperationalSpaceController(150.0, 1.0), data, osc_unknowns(), states_key="s", actions_key="a",
                   action_limits="dataset", per="dataset")[0]
    np.testing.assert_allclose(res.estimate, [150.0, 150.0, 3.0, 1.0], rtol=1e-6)
    assert res.limits["identified"] == hit.tolist()


# ------------------------------------------------------------------------------ any controller
class SpringDamper(LowLevelController):
    """A controller defined only here: ``a = stiffness * (z - x) - viscosity * v``, clipped to +-1."""

    def __init__(self, stiffness=(1.0, 1.0), viscosity=1.0):
        super().__init__(4, 2, 2, horizon=3, action_low=-1.0, action_high=1.0)
        self.stiffness = nn.Parameter(torch.tensor(stiffness, dtype=F64))
        self.viscosity = nn.Parameter(torch.tensor(viscosity, dtype=F64))

    def law(self, state, z, context, step):
        return self.stiffness * (z - state[:, :2]) - self.viscosity * state[:, 2:]


def test_custom_controller_parameters_identified_with_no_code_for_them():
    g = torch.Generator().manual_seed(9)
    states = torch.randn(80, 3, 4, generator=g, dtype=F64)
    a = record(SpringDamper((2.0, 5.0), 0.7), states, 0.5 * torch.randn(80, 2, generator=g, dtype=F64))
    assert float((a.abs() >= 1.0).float().mean()) > 0.05
    res = Identifier().identify(SpringDamper(), states, a, ["stiffness", Unknown("viscosity", bounds=(1e-3, 10.0))])
    assert res.labels == ["stiffness[0]", "stiffness[1]", "viscosity[0]"] and res.all_identifiable
    np.testing.assert_allclose(res.estimate, [2.0, 5.0, 0.7], rtol=1e-8)
    with pytest.raises(ValueError, match="'stiffness', 'viscosity'"):
        Identifier().identify(SpringDamper(), states, a, ["gain"])


# ------------------------------------------------------------------------------ LQR
def lqr_windows(N, k=5, seed=10):
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(N, k, 4, generator=g, dtype=F64) * torch.tensor([1.0, 1.0, 0.5, 0.5], dtype=F64)
    return states, 0.3 * torch.randn(N, 4, generator=g, dtype=F64)


def test_lqr_state_weights_from_reacher_like_data_and_the_scale_gauge_is_flagged():
    states, z = lqr_windows(100)
    true = LQRGoalController(reacher_like_linearization(), relative_dims=(0, 1), Q=(30.0, 5.0, 0.5, 2.0), R=0.1)
    a = record(true, states, z)
    res = Identifier().identify(reacher_like_lqr(), states, a, [diagonal_unknown("Q", 4)])
    assert res.all_identifiable and res.labels == ["Q.0", "Q.1", "Q.2", "Q.3"]
    np.testing.assert_allclose(res.estimate, [30.0, 5.0, 0.5, 2.0], rtol=1e-6)
    assert torch.allclose(res.z, z, atol=1e-8)  # the windows' z come out too
    # Q and R together: the gains only fix their ratio -> every weight is flagged as confounded
    both = Identifier().identify(reacher_like_lqr(), states, a, [diagonal_unknown("Q", 4), Unknown("R", {"all": (0, 3)})])
    assert not both.identifiable.any() and all("confounded" in r for r in both.reasons)
    # a prior on R pins the scale: Q comes out in proportion, R at the prior with the prior's standard error
    pinned = Identifier(noise_std=1e-3).identify(
        reacher_like_lqr(), states, a, [diagonal_unknown("Q", 4), Unknown("R", {"all": (0, 3)}, prior=(0.2, 0.01))])
    assert pinned.all_identifiable
    np.testing.assert_allclose(pinned.estimate, [60.0, 10.0, 1.0, 4.0, 0.2], rtol=1e-6)
    assert pinned.std_error[-1] == pytest.approx(0.2 * 0.01, rel=0.05)


def test_bad_unknowns_are_named():
    with pytest.raises(ValueError, match="bounds"):
        Unknown("kp", bounds=(0.0, 1.0))
    states, z = lqr_windows(4)
    with pytest.raises(ValueError, match="positive"):
        Identifier().identify(SpringDamper((0.0, 1.0)), states[:, :3], torch.zeros(4, 3, 2, dtype=F64), ["stiffness"])
    with pytest.raises(ValueError, match="actions"):
        Identifier().identify(reacher_like_lqr(), states, torch.zeros(4, 5, 3, dtype=F64), ["Q"])


# ------------------------------------------------------------------------------ mixed datasets
def test_mixed_dataset_clusters_episodes_and_relabels_each_with_its_own_controller(tmp_path):
    """Six LQR episodes from two withheld Q settings, interleaved: identified per episode, clustered, relabelled."""
    settings = [(30.0, 5.0, 0.5, 2.0), (3.0, 20.0, 1.0, 0.3)]
    k, T = 5, 40
    cols = {key: [] for key in ("states", "actions", "z_true", "episode_ids")}
    for e in range(6):
        c = LQRGoalController(reacher_like_linearization(), relative_dims=(0, 1), Q=settings[e % 2], R=0.1)
        states, z = lqr_windows(T // k, k, seed=20 + e)
        cols["states"].append(states.reshape(T, 4).numpy())
        cols["actions"].append(record(c, states, z).reshape(T, 2).numpy())
        cols["z_true"].append(z.repeat_interleave(k, 0).numpy())
        cols["episode_ids"].append(np.full(T, e))
    arrays = {key: np.concatenate(v) for key, v in cols.items()}
    N = len(arrays["episode_ids"])
    arrays.update(rewards=np.zeros(N), terminals=np.zeros(N, bool), timeouts=np.zeros(N, bool), next_states=arrays["states"])
    data = Dataset(arrays)
    make = lambda c: ProblemInverter(InverseProblem(c, match="actions"), AnalyticSolver())  # noqa: E731
    out = identify_and_relabel(data, reacher_like_lqr(), [diagonal_unknown("Q", 4)], make, k, tmp_path / "high.npz",
                               identify_kwargs={"k": k, "progress": False}, extra_keys=("z_true",), progress=False)
    assert out["labels"].tolist() == [0, 1, 0, 1, 0, 1]
    for c, cl in enumerate(out["clusters"]):
        np.testing.assert_allclose([cl.estimate[f"Q.{i}"] for i in range(4)], settings[c], rtol=1e-6)
    high = out["dataset"]
    unsaturated = np.abs(data["actions"]).reshape(-1, k, 2).max((1, 2)) < 1.0 - 1e-9
    np.testing.assert_allclose(high["z"][unsaturated], high["z_true"][unsaturated], atol=1e-7)
    labels, _ = cluster_identifications(out["identifications"][:2] * 2, rtol=0.01)
    assert labels.tolist() == [0, 1, 0, 1]
