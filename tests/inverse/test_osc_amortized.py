"""Amortised OSC inverse on synthetic sub-step data: the first sub-step closed form, the network, the fallback."""
import numpy as np
import pytest
import torch

from helpers import substep_states
from ohio_layers.data import Dataset
from ohio_layers.inverse import OSCInverse
from ohio_layers.inverse.osc_amortized import AmortizedOSCRelabeler, OSCFirstStep, osc_amortized_inverse, osc_windows
from ohio_layers.inverse.osc_relabel import OSCRelabeler
from ohio_layers.lowlevel import OperationalSpaceController

LIMIT = 12.0  # low torque limit: a good share of the synthetic transitions clip


class Setting:
    """The controller-factory protocol of ``osc_relabel`` (no env needed)."""

    name = "test"

    def make_controller(self, **kwargs):
        return OperationalSpaceController(150.0, 1.0, torque_limit=LIMIT, **kwargs)

    def to_dict(self):
        return {"name": self.name, "torque_limit": LIMIT}


def recorded(n, seed):
    """A manipulation-shaped dataset recorded through the clipped OSC with hidden z; also the hidden z."""
    c = Setting().make_controller()
    g = torch.Generator().manual_seed(seed)
    S = substep_states(n, seed=seed)
    z = (torch.rand(n, 6, generator=g, dtype=torch.float64) * 2 - 1) * c.z_high * 0.6
    ctx = c.context(S[:, 0])
    with torch.no_grad():
        T = torch.stack([c.act(S[:, j], z, ctx, j) for j in range(5)], 1)
    grip = torch.rand(n, 1, generator=g, dtype=torch.float64) * 2 - 1
    data = Dataset({"substep_states": S.numpy(), "substep_torques": T.numpy(),
                    "actions": torch.cat([z / c.z_high, grip], 1).numpy(), "z_executed": z.numpy(),
                    "success": np.zeros(n, bool), "observations": S[:, 0, :14].numpy(),
                    "next_observations": S[:, -1, :14].numpy(), "rewards": np.zeros(n), "terminals": np.zeros(n, bool),
                    "timeouts": (np.arange(n) % 50) == 49, "episode_ids": np.arange(n) // 50})
    return c, data, z


@pytest.fixture(scope="module")
def trained():
    c, data, _ = recorded(1500, seed=0)
    inv = osc_amortized_inverse(c, hidden=(32, 32), delta=1.0)
    inv.fit(osc_windows(inv.problem, data, np.arange(len(data))), epochs=15, batch_size=500, lr=3e-3, seed=0,
            progress=False)
    return c, inv


def test_first_step_closed_form_is_exact_where_at_most_one_joint_clips():
    c, data, z_true = recorded(400, seed=1)
    b = osc_windows(osc_amortized_inverse(c).problem, data, np.arange(len(data)), with_context=False)
    z, clipped, _ = OSCFirstStep(c).closed_form(b.states[:, 0], b.actions[:, 0])
    _, base, exact = OSCFirstStep(c)(b)
    few = clipped.sum(-1) <= 1
    assert 0.2 < float(few.double().mean()) < 0.95  # both cases present
    assert torch.equal(exact, few) and torch.equal(base, z)
    err = (z[few] - z_true[few]).abs().amax(-1)
    assert float(err.median()) < 1e-10 and float(err.max()) < 1e-6  # max: conditioning of 6 equations in 6 unknowns
    assert float((z[~few] - z_true[~few]).abs().amax(-1).median()) > 1e-4  # a guess where more joints clip
    assert not bool(OSCFirstStep(c, trust_first_step=False)(b)[2].any())


def test_network_keeps_exact_windows_respects_bounds_and_relabels_with_fallback(trained, tmp_path):
    c, inv = trained
    _, data, z_true = recorded(300, seed=2)  # held out
    b = osc_windows(inv.problem, data, np.arange(len(data)))
    with torch.no_grad():
        z = inv(b)
    _, base, exact = inv.custom_features(b)
    assert torch.equal(z[exact], c.clamp_z(base[exact]))  # the network leaves the exact closed form untouched
    assert bool(((z >= c.z_low) & (z <= c.z_high)).all())
    alone = AmortizedOSCRelabeler(inv)(data, np.arange(len(data)))
    assert torch.isnan(alone.residual).all() and not alone.converged.any()
    assert torch.equal(alone.z[:, 6], torch.as_tensor(data["actions"][:, 6]))  # the recorded gripper command
    tol = 1e-6
    full = AmortizedOSCRelabeler(inv, fallback=OSCRelabeler(Setting()), tolerance=tol)(data, np.arange(len(data)))
    exact_labels = OSCInverse().invert(c, b.states, b.actions)
    reproducible = exact_labels.residual <= tol
    assert float(reproducible.double().mean()) > 0.9
    assert bool((full.residual[reproducible] <= tol).all())  # every window the exact solver reproduces
    sent = full.iterations > 0
    assert 0 < float(sent.double().mean()) < 1
    assert torch.equal(full.z[sent, :6], OSCInverse().invert(c, b.states[sent], b.actions[sent]).z)


def test_save_load_roundtrip(trained, tmp_path):
    c, inv = trained
    _, data, _ = recorded(50, seed=3)
    inv.save(tmp_path / "osc.pt")
    back = osc_amortized_inverse(c, path=tmp_path / "osc.pt")
    b = osc_windows(inv.problem, data, np.arange(len(data)), with_context=False)
    with torch.no_grad():
        assert torch.equal(inv(b), back(b))
    with pytest.raises(TypeError, match="impedance_mode='fixed'"):
        OSCFirstStep(OperationalSpaceController(impedance_mode="variable_kp"))
    with pytest.raises(ValueError, match="fallback needs a tolerance"):
        AmortizedOSCRelabeler(inv, fallback=OSCRelabeler(Setting()))


def test_features_returning_a_wrong_base_or_exact_mask_are_named():
    from ohio_layers.inverse import AmortizedInverse
    from ohio_layers.inverse.osc_amortized import osc_problem

    c = Setting().make_controller()
    first = OSCFirstStep(c)
    with pytest.raises(ValueError, match="z_base of shape"):
        AmortizedInverse(osc_problem(c), features=lambda b: (first(b)[0], first(b)[1][:, :3]))
    with pytest.raises(ValueError, match="exact of shape"):
        AmortizedInverse(osc_problem(c), features=lambda b: (first(b)[0], first(b)[1], first(b)[2].double()))
