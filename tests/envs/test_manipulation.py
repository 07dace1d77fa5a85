"""robosuite Lift / Door envs, scripted policies, collection, OHIO relabelling and the experiment config."""
import json

import numpy as np
import pytest
import torch

from ohio_layers.envs.manipulation import (ORIGINAL_SCALE, ControllerSetting, axis_rotation, controller_setting,
                                           rotation_exp, rotation_log)
from ohio_layers.experiments.manipulation import FULL, QUICK, ManipulationExperimentConfig, z_bounds


# ------------------------------------------------------------------------------ no simulator needed
def test_controller_settings_are_the_papers():
    orig = controller_setting("lift", "original")
    assert orig.kp == (150.0,) * 6 and orig.damping_ratio == (1.0,) * 6
    np.testing.assert_allclose(orig.output_max, ORIGINAL_SCALE)
    stiff = controller_setting("door", "stiffness")
    assert stiff.kp == (150.0, 150.0, 150.0, 50.0, 50.0, 50.0) and stiff.output_max == (0.5,) * 3 + (1.6,) * 3
    damp = controller_setting("lift", "damping")
    assert damp.damping_ratio == (3.0, 3.0, 3.0, 1.0, 1.0, 1.0)
    np.testing.assert_allclose(damp.kd, [2 * np.sqrt(150) * 3] * 3 + [2 * np.sqrt(150)] * 3)
    assert controller_setting("door", "damping").output_max == (0.4,) * 3 + (1.5,) * 3
    c = damp.make_controller()
    torch.testing.assert_close(c.damping_ratio.detach(), torch.tensor(damp.damping_ratio, dtype=torch.float64))
    with pytest.raises(ValueError, match="setting"):
        controller_setting("lift", "kp")
    with pytest.raises(ValueError, match="task"):
        controller_setting("stack", "original")
    with pytest.raises(ValueError, match="kp"):
        ControllerSetting("bad", (150.0, -1.0, 1, 1, 1, 1), 1.0, 0.05)


def test_rotation_log_inverts_exp():
    rng = np.random.default_rng(0)
    for w in [*rng.normal(size=(20, 3)), np.zeros(3), np.array([1e-8, 0, 0]), np.array([0, 3.1, 0])]:
        w = w if np.linalg.norm(w) < np.pi else w / np.linalg.norm(w) * 3.0
        np.testing.assert_allclose(rotation_log(rotation_exp(w)), w, atol=1e-7)
    R = np.stack([axis_rotation(np.array([0, 0, 1.0]), a) for a in (0.1, 0.2)])
    np.testing.assert_allclose(rotation_log(R)[:, 2], [0.1, 0.2], atol=1e-12)


def test_experiment_config_rejects_unknown_keys_and_has_profiles():
    with pytest.raises(TypeError, match="no_such_key"):
        ManipulationExperimentConfig.from_dict({"task": "lift", "no_such_key": 1})
    with pytest.raises(ValueError, match="task"):
        ManipulationExperimentConfig(task="stack")
    with pytest.raises(ValueError, match="original"):
        ManipulationExperimentConfig(settings=("damping",))
    for profile in (QUICK, FULL):
        cfg = ManipulationExperimentConfig.from_dict({**profile, "task": "door"})
        assert cfg.expectile == 0.9 and cfg.temperature == 0.1  # the paper's Door settings
    assert ManipulationExperimentConfig(task="lift").expectile == 0.7


def test_z_bounds_fit_the_data_within_the_setting_range():
    rng = np.random.default_rng(0)
    z = np.c_[rng.normal(0, 0.01, (1000, 6)), np.sign(rng.normal(size=(1000, 1)))]
    z[0, 0] = 10.0  # an outlier must not stretch the range
    lo, hi = z_bounds(z, [0.05] * 3 + [0.5] * 3)
    assert lo[6] == -1.0 and hi[6] == 1.0
    assert all(0.02 < h < 0.05 for h in hi[:3]) and all(-0.05 < l < -0.02 for l in lo[:3])


# ------------------------------------------------------------------------------ robosuite
@pytest.fixture(scope="module")
def suite():
    return pytest.importorskip("robosuite")


@pytest.mark.parametrize("task", ["lift", "door"])
def test_env_create_reset_step_under_every_setting(suite, task):
    from ohio_layers.envs.manipulation import ManipulationEnv

    for name in ("original", "stiffness", "damping"):
        setting = controller_setting(task, name)
        env = ManipulationEnv(task, name, horizon=3)
        obs, info = env.reset(seed=5)
        assert obs.shape == env.observation_space.shape == ((60,) if task == "lift" else (64,))
        np.testing.assert_allclose(env.action_space.high, np.r_[setting.output_max, 1.0])
        c = env.recorder.controller
        np.testing.assert_allclose(c.kp, setting.kp)
        np.testing.assert_allclose(c.kd, setting.kd)
        truncs = []
        for _ in range(3):
            obs2, r, term, trunc, info = env.step(np.r_[0.01, 0.0, -0.01, 0.0, 0.0, 0.05, -1.0])
            assert np.isfinite(r) and not term and isinstance(info["success"], bool)
            truncs.append(trunc)
        assert truncs == [False, False, True]
        again, _ = env.reset(seed=5)
        np.testing.assert_array_equal(again, obs)  # the seed alone fixes the initial state
        other, _ = env.reset(seed=6)
        assert not np.allclose(other, obs)
        with pytest.raises(ValueError, match="action"):
            env.step(np.zeros(6))
        env.close()


def test_physical_action_is_what_robosuite_applies(suite):
    """A 2 cm delta under the damping setting (range 0.4 m) is applied as 2 cm, not rescaled."""
    from ohio_layers.envs.manipulation import ManipulationEnv
    from ohio_layers.envs.manipulation.robosuite_adapter import RobosuiteOSCRecorder

    env = ManipulationEnv("lift", "damping", horizon=5, record=True)
    env.reset(seed=0)
    action = np.array([0.02, -0.01, 0.0, 0.0, 0.1, 0.0, -1.0])
    _, _, _, _, info = env.step(action)
    log = info["substeps"]
    np.testing.assert_allclose(log["z"], action[:6], atol=1e-12)
    assert log["states"].shape == (5, 137) and log["torques"].shape == (5, 7)
    # the numpy state reader equals the adapter's torch packing
    c = env.recorder.controller
    raw = np.array(c.torques if c.torques is not None else np.zeros(7))
    ours = env.recorder._read(c, raw)
    reference = RobosuiteOSCRecorder._read(env.recorder, c, raw)
    for key in ("states", "torques", "goal_pos", "goal_rot"):
        np.testing.assert_allclose(ours[key], reference[key], rtol=0, atol=1e-12)
    env.close()


@pytest.mark.parametrize("task,episodes", [("lift", 5), ("door", 5)])
def test_scripted_policies_succeed(suite, task, episodes):
    """At least 80 % of seeded episodes succeed under the original controller with noise 0.2."""
    from ohio_layers.envs.manipulation import ManipulationEnv
    from ohio_layers.envs.manipulation.policies import scripted_policy

    env = ManipulationEnv(task, "original", horizon=480)
    policy = scripted_policy(task, noise=0.2)
    wins = 0
    for seed in range(episodes):
        obs, _ = env.reset(seed=100 + seed)
        policy.reset(env, 100 + seed)
        done = False
        while not done:
            obs, r, term, trunc, info = env.step(policy.act(env, obs))
            done = term or trunc or info["success"]
        wins += info["success"]
    env.close()
    assert wins >= 0.8 * episodes, f"{task}: {wins}/{episodes} successes"


def test_door_script_ramps_the_gripper_with_distance(suite):
    """During the approach the gripper label is the documented linear ramp of the handle distance."""
    from ohio_layers.envs.manipulation import ManipulationEnv
    from ohio_layers.envs.manipulation.policies import DoorScript

    env = ManipulationEnv("door", "original", horizon=300)
    policy = DoorScript(noise=0.0)
    obs, _ = env.reset(seed=3)
    policy.reset(env, 3)
    open_d, closed_d = policy.grip_ramp
    seen = []
    while policy.phase != "turn" and env.steps < 300:
        dist = float(np.linalg.norm(policy._handle(env) - env.grip_pose()[0]))
        phase = policy.phase
        action = policy.act(env, obs)
        if policy.phase == "approach" and phase == "approach":
            expected = np.clip(-1.0 + 2.0 * (open_d - dist) / (open_d - closed_d), -1.0, 1.0)
            assert action[6] == pytest.approx(expected, abs=1e-12)
            seen.append(action[6])
        obs, *_ = env.step(action)
    env.close()
    assert policy.phase == "turn", "the script never grasped the handle"
    assert any(-1.0 < g < 1.0 for g in seen), f"the ramp was never exercised: {seen}"
    with pytest.raises(ValueError, match="grip_ramp"):
        DoorScript(grip_ramp=(0.006, 0.02))


@pytest.fixture(scope="module")
def lift_data(suite, tmp_path_factory):
    """Two recorded 40-step Lift episodes (collection with workers=1, resumable)."""
    from ohio_layers.envs.manipulation.data import collect_manipulation

    out = tmp_path_factory.mktemp("lift") / "episodes"
    data = collect_manipulation("lift", 2, out, horizon=40, workers=1, progress=False)
    return data, out


def test_collection_is_resumable_and_refuses_other_settings(lift_data):
    from ohio_layers.envs.manipulation.data import collect_manipulation

    data, out = lift_data
    assert len(data) == 80 and data["substep_states"].shape == (80, 5, 137) and data["actions"].shape == (80, 7)
    assert data["timeouts"].sum() == 2 and not data["terminals"].any()
    np.testing.assert_allclose(data["z_executed"], data["actions"][:, :6] * ORIGINAL_SCALE, atol=1e-12)
    stamp = (out / "episode_00001.npz").stat().st_mtime_ns
    again = collect_manipulation("lift", 2, out, horizon=40, workers=1, progress=False)
    assert (out / "episode_00001.npz").stat().st_mtime_ns == stamp  # nothing recollected
    np.testing.assert_array_equal(again["observations"], data["observations"])
    with pytest.raises(RuntimeError, match="horizon"):
        collect_manipulation("lift", 2, out, horizon=50, workers=1, progress=False)
    assert json.loads((out / "manifest.json").read_text())["horizon"] == 40


def test_relabelling_recovers_the_known_z(lift_data, tmp_path):
    """Original controller: z* equals the executed delta and replays the recorded torques."""
    from ohio_layers.envs.manipulation.data import next_state_labels
    from ohio_layers.inverse.osc_relabel import relabel_manipulation, verify_relabelling

    data, _ = lift_data
    setting = controller_setting("lift", "original")
    high, report = relabel_manipulation(data, setting, tmp_path / "ohio.npz", progress=False)
    assert high["z"].shape == (80, 7)
    np.testing.assert_array_equal(high["z"][:, 6], data["actions"][:, 6])
    err = np.abs(high["z"][:, :6] - data["z_executed"]).max(1)
    assert (err <= 1e-5).mean() >= 0.99, f"z errors {np.sort(err)[-5:]}"
    assert report.reproduced_share >= 0.99
    check = verify_relabelling(data, high["z"], setting)
    assert check["reproduced_share"] >= 0.99 and check["torque_error_median"] < 1e-6

    # a changed controller: z* reproduces the recorded torques far better than the recorded delta does
    damp = controller_setting("lift", "damping")
    high_d, _ = relabel_manipulation(data, damp, tmp_path / "ohio_damp.npz", progress=False)
    replay = verify_relabelling(data, data["z_executed"], damp)
    relabelled = verify_relabelling(data, high_d["z"], damp)
    assert relabelled["torque_error_median"] < 0.3 * replay["torque_error_median"]

    ns = next_state_labels(data)
    assert ns.shape == (80, 7) and np.abs(ns[:, :3]).max() < 0.02  # achieved motion per 10 ms step


def test_desaturated_relabelling_keeps_the_unchanged_channel(lift_data):
    """Torques synthesised through the original controller with a large rotation saturate the wrist.

    Relabelled for the damping setting (position gains changed, orientation gains not), the
    de-saturated labels keep the commanded rotation; the direct inverse of the clipped torques
    cannot tell it apart and drifts on some transitions.
    """
    import torch

    from ohio_layers.inverse.osc_relabel import OSCRelabeler

    data, _ = lift_data
    original, damping = controller_setting("lift", "original"), controller_setting("lift", "damping")
    states = torch.as_tensor(data["substep_states"], dtype=torch.float64)
    rng = np.random.default_rng(0)
    z = torch.as_tensor(np.c_[rng.uniform(-0.04, 0.04, (80, 3)), rng.uniform(-0.5, 0.5, (80, 3))])
    src = original.make_controller()
    ctx = src.context(states[:, 0])
    with torch.no_grad():
        torques = torch.stack([src.act(states[:, j], z, ctx, j) for j in range(5)], 1)
    saturated = (torques.abs() >= src.action_high - 1e-9).any(-1).any(-1).numpy()
    assert saturated.mean() > 0.3  # the test exercises saturation

    relabeler = OSCRelabeler(damping, source=original)
    unclipped, ok = relabeler.unclipped_torques(states, torques)
    assert ok.double().mean() >= 0.8  # a few transitions saturate too much to identify even the source z
    np.testing.assert_allclose(unclipped[ok].clamp(-src.action_high, src.action_high), torques[ok], atol=1e-3)

    arrays = {"substep_states": states.numpy(), "substep_torques": torques.numpy(), "actions": np.zeros((80, 7))}
    from ohio_layers.data import Dataset

    ds = Dataset(arrays)
    rows = np.arange(80)
    desat = relabeler(ds, rows).z[:, 3:6].numpy()
    direct = OSCRelabeler(damping)(ds, rows).z[:, 3:6].numpy()
    err_desat = np.abs(desat - z[:, 3:].numpy()).max(1)
    err_direct = np.abs(direct - z[:, 3:].numpy()).max(1)
    known = saturated & ok.numpy()  # rows whose source z is identified (others keep the direct inverse)
    assert np.quantile(err_desat[known], 0.95) < 0.05, np.sort(err_desat[known])[-5:]
    assert err_direct[known].max() > 3 * max(np.quantile(err_desat[known], 0.95), 1e-3)
    # the recording controller itself: the de-saturated labels reproduce the recorded torques
    same = OSCRelabeler(original, source=original)(ds, rows)
    assert same.residual[ok].max() < 1e-3
