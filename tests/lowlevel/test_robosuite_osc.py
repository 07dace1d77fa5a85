"""OperationalSpaceController against robosuite 1.5's own OSC_POSE on live Lift and Door envs."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from ohio_layers.inverse.osc_inverse import OSCInverse
from ohio_layers.lowlevel.osc import OperationalSpaceController, osc_terms, osc_torques

STEPS = 30
SETTINGS = {
    "Lift": dict(kp=150.0, damping_ratio=1.0),
    "Door": dict(kp=[150.0, 150, 150, 50, 50, 50], damping_ratio=[1.0, 1, 1, 2, 2, 2]),
}


@pytest.fixture(scope="module", params=sorted(SETTINGS))
def recording(request):
    """``STEPS`` random env steps at 100 Hz (5 sub-steps each), logged by the recorder.

    Actions are uniform in [-0.5, 0.5] (deltas up to 2.5 cm / 0.25 rad per 10 ms): most sub-steps
    still clip a torque (mostly the 12 N m wrist joints), but enough equations stay unsaturated
    for z to be identifiable. At [-1, 1] about 15 % of the transitions keep fewer than 10 of
    their 35 torques unclipped and z is then not always recoverable.
    """
    pytest.importorskip("robosuite")
    from ohio_layers.envs.manipulation.robosuite_adapter import RobosuiteOSCRecorder, make_env

    env = make_env(request.param, control_freq=100, horizon=STEPS + 10, seed=0, **SETTINGS[request.param])
    rec = RobosuiteOSCRecorder(env)
    rec.reset()
    rng = np.random.default_rng(0)
    logs = [rec.step(rng.uniform(-0.5, 0.5, env.action_dim))[-1] for _ in range(STEPS)]
    env.close()
    out = {k: torch.as_tensor(np.stack([log[k] for log in logs])) for k in logs[0]}
    out["kp"], out["kd"] = out["kp"][0], out["kd"][0]
    out["task"] = request.param
    return out


def controller(rec, **kwargs):
    kp, kd = rec["kp"], rec["kd"]
    return OperationalSpaceController(kp, kd / (2 * kp.sqrt()), **kwargs)


def test_recording_has_the_expected_shapes(recording):
    assert recording["states"].shape == (STEPS, 5, 137)
    assert recording["torques"].shape == recording["raw_torques"].shape == (STEPS, 5, 7)
    assert recording["z"].shape == (STEPS, 6)
    limit = torch.tensor([80.0] * 5 + [12.0] * 2, dtype=torch.float64)
    assert bool((recording["raw_torques"].abs() > limit).any()), "random actions should saturate some torques"


def test_torques_equal_robosuite_given_its_goal(recording):
    """Same state, same goal as robosuite: pre-clip torques to ~1e-12, clipped ones likewise."""
    c = controller(recording, saturation="none")
    S = recording["states"].reshape(STEPS * 5, -1)
    s = c.layout.unpack(S)
    kp, kd = recording["kp"], recording["kd"]
    ours = osc_torques(s, recording["goal_pos"].reshape(-1, 3), recording["goal_rot"].reshape(-1, 3, 3), kp, kd)
    torch.testing.assert_close(ours, recording["raw_torques"].reshape(-1, 7), atol=1e-8, rtol=0)
    clipped = controller(recording).saturate(ours, S, {})
    torch.testing.assert_close(clipped, recording["torques"].reshape(-1, 7), atol=1e-8, rtol=0)


def test_torques_from_z_equal_robosuite_within_its_float32_goal_rounding(recording):
    """Goal computed by the module from z and the sub-step-0 state.

    robosuite rounds the goal quaternion to float32 (rotation error up to ~1e-7 rad), so the
    tolerance per torque is ``sum_i |ori_gain_ji| * 2e-7 + 1e-9``: the state's own sensitivity of
    that torque to an orientation-error perturbation of 2e-7.
    """
    c = controller(recording)
    S = recording["states"]
    ctx = c.context(S[:, 0])
    ours = torch.stack([c.act(S[:, j], recording["z"], ctx, j) for j in range(5)], 1)
    terms = osc_terms(c.layout.unpack(S.reshape(STEPS * 5, -1)), recording["kp"], recording["kd"])
    tol = terms.ori_gain.abs().sum(-1).reshape(STEPS, 5, 7) * 2e-7 + 1e-9
    err = (ours - recording["torques"]).abs()
    assert bool((err <= tol).all()), f"max error {float(err.max()):.2e}, ratio to tolerance {float((err / tol).max()):.2f}"
    assert float(err.max()) < 1e-3


def test_inverse_recovers_the_env_actions(recording):
    c = controller(recording)
    result = OSCInverse().invert(c, recording["states"], recording["torques"])
    err = (result.z - recording["z"]).abs().amax(-1)
    assert float((err <= 1e-5).float().mean()) >= 0.99, f"errors {err}"
    assert float(result.residual.max()) < 1e-5
    assert bool(result.converged.all())


def test_adapter_imports_without_robosuite():
    code = (
        "import sys; sys.modules['robosuite'] = None\n"
        "import ohio_layers.envs.manipulation.robosuite_adapter as a\n"
        "try:\n    a.make_env('Lift')\nexcept ImportError as e:\n    print('ImportError', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ImportError" in out.stdout and "ohio_layers[robosuite]" in out.stdout
