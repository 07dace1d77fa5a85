"""robosuite Lift and Door (Panda, OSC_POSE, 100 Hz) as gymnasium envs, with explicit controller settings.

The low-level controller is robosuite's own OSC_POSE, running at every physics sub-step (500 Hz
simulation, 5 sub-steps per ``step``). The env's action is the *physical* high-level action::

    action (7,) = (dp (3) in metres, dw (3) axis-angle in radians, gripper in [-1, 1])

so a behaviour policy, a flat offline-RL agent and an OHIO agent all speak the same units, and
changing the controller changes only the gains (and how large a pose delta it accepts), never
the meaning of a recorded action. Internally the delta is divided by the setting's
``output_max`` and handed to robosuite, which clips to [-1, 1] and scales back.

Controller settings are explicit objects (:class:`ControllerSetting`, never parsed from file
names). The three of the OHIO paper (``reference/ohio-reference-robotics.md`` section 3)::

    original   kp 150 x6,                   damping ratio 1 x6,          delta <= 0.05 m / 0.5 rad
    stiffness  kp (150,150,150, 50,50,50),  damping ratio 1 x6,          delta <= 0.4 m / 1.6 rad (Lift), 0.5 / 1.6 (Door)
    damping    kp 150 x6,                   damping ratio (3,3,3, 1,1,1), delta <= 0.4 m / 1.6 rad (Lift), 0.4 / 1.5 (Door)

The changed settings accept larger deltas as in the paper's changed configs: with a damping
ratio of 3 the same +-5 cm delta moves the hand three times slower, and the recorded motions
need pose deltas beyond the original range to be reproduced (``shared/README.md``).

Observations are ``robot0_proprio-state`` (50) followed by ``object-state`` (Lift 10, Door 14).
Episodes never terminate (``ignore_done`` as in the paper); they are truncated after
``horizon`` steps. ``reset(seed=s)`` makes the object placement and the robot's initial joint
noise a function of ``s`` alone (the state of robosuite's generator is overwritten in place).

robosuite is an optional extra, imported lazily: this module imports without it.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import gymnasium as gym
import numpy as np

from .settings import (CONTROL_FREQ, GRIP_SITE, ROBOSUITE_TASK, TASKS, ControllerSetting,
                       _check_task, controller_setting)


def _quiet_robosuite() -> None:
    """robosuite logs configuration warnings at every reset; keep them out of progress bars."""
    import logging

    logging.getLogger("robosuite_logs").setLevel(logging.ERROR)


# ------------------------------------------------------------------------------ rotations (numpy)
def rotation_log(R: np.ndarray) -> np.ndarray:
    """Axis-angle ``(..., 3)`` of rotation matrices ``R (..., 3, 3)`` (angle in [0, pi])."""
    R = np.asarray(R, dtype=np.float64)
    cos = np.clip((np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    theta = np.arccos(cos)
    v = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    sin = np.sin(theta)
    small = sin < 1e-6
    factor = np.where(small, 0.5 + theta ** 2 / 12.0, theta / (2.0 * np.where(small, 1.0, sin)))
    out = v * factor[..., None]
    near_pi = small & (theta > 3.0)
    if np.any(near_pi):  # axis from the symmetric part: R = 2 a a' - I at theta = pi
        for idx in zip(*np.nonzero(np.atleast_1d(near_pi))):
            Ri = R[idx] if R.ndim > 2 else R
            B = (Ri + np.eye(3)) / 2.0
            a = B[np.argmax(np.diag(B))]
            a = a / np.linalg.norm(a)
            if R.ndim > 2:
                out[idx] = np.pi * a
            else:
                out = np.pi * a
    return out


def rotation_exp(w: np.ndarray) -> np.ndarray:
    """Rotation matrix ``(3, 3)`` of an axis-angle vector ``w (3,)`` (Rodrigues)."""
    w = np.asarray(w, dtype=np.float64)
    theta = float(np.linalg.norm(w))
    K = np.array([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]])
    if theta < 1e-9:
        return np.eye(3) + K
    return np.eye(3) + np.sin(theta) / theta * K + (1.0 - np.cos(theta)) / theta ** 2 * K @ K


def axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation by ``angle`` about the unit ``axis (3,)``."""
    a = np.asarray(axis, dtype=np.float64)
    return rotation_exp(a / np.linalg.norm(a) * angle)


# ------------------------------------------------------------------------------ the env
class ManipulationEnv(gym.Env):
    """robosuite Lift / Door with the Panda's OSC_POSE at 100 Hz, physical pose-delta actions.

    Args:
        task: ``"lift"`` or ``"door"``.
        setting: a :class:`ControllerSetting` or the name of one (:func:`controller_setting`).
        horizon: steps per episode (truncation; the task never terminates).
        seed: default seed of the first ``reset`` (later resets without a seed continue the
            generator).
        record: put the sub-step log of every step into ``info["substeps"]``: ``states (5, 137)``
            (:class:`~ohio_layers.lowlevel.osc.OSCStateLayout`), ``torques (5, 7)`` (applied,
            clipped), ``raw_torques``, ``goal_pos``, ``goal_rot``, ``z (6,)`` (the delta robosuite
            used), ``kp``, ``kd``.
        hard_reset: robosuite's ``hard_reset`` (True rebuilds the model at every reset, ~0.13 s).

    ``observation (do,)`` float64; ``action (7,)`` = pose delta (m, rad) and gripper command.
    ``info``: ``success`` (the task's success test after the step), ``substeps`` when recording.
    """

    metadata = {"render_modes": []}

    def __init__(self, task: str = "lift", setting: Union[str, ControllerSetting] = "original", horizon: int = 500,
                 seed: Optional[int] = None, record: bool = False, hard_reset: bool = True) -> None:
        from ..._extras import require

        os.environ.setdefault("MUJOCO_GL", "egl")
        require("robosuite")
        _quiet_robosuite()
        from .robosuite_adapter import make_env

        self.task = _check_task(task)
        self.setting = setting if isinstance(setting, ControllerSetting) else controller_setting(self.task, setting)
        if not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon must be a positive int, got {horizon!r}")
        self.horizon, self.record = int(horizon), bool(record)
        s = self.setting
        self.suite_env = make_env(ROBOSUITE_TASK[self.task], control_freq=CONTROL_FREQ, horizon=self.horizon + 10,
                                  seed=seed, kp=list(s.kp), damping_ratio=list(s.damping_ratio), ignore_done=True,
                                  hard_reset=hard_reset)
        self._set_output_range(self.suite_env)
        self.recorder = _fast_recorder_class()(self.suite_env)
        self._output_max = np.asarray(s.output_max)
        obs = self._flatten(self.suite_env.reset())
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, obs.shape, dtype=np.float64)
        high = np.r_[self._output_max, 1.0]
        self.action_space = gym.spaces.Box(-high, high, dtype=np.float64)
        self._seed_next = seed
        self._t = 0

    # ------------------------------------------------------------------ construction helpers
    def _set_output_range(self, env: Any) -> None:
        cfg = env.robots[0].composite_controller_config if hasattr(env.robots[0], "composite_controller_config") else None
        arm = None
        if cfg is not None:
            arm = cfg.get("body_parts", {}).get("right")
        if arm is None:
            arm = env.robots[0].part_controller_config["right"]
        arm["output_max"] = list(self.setting.output_max)
        arm["output_min"] = [-v for v in self.setting.output_max]
        self._arm_config = arm

    def _check_controller(self) -> None:
        c = self.recorder.controller
        s = self.setting
        if not (np.allclose(c.kp, s.kp) and np.allclose(c.kd, s.kd) and np.allclose(c.output_max, s.output_max)):
            raise RuntimeError(f"robosuite controller has kp {c.kp}, kd {c.kd}, output_max {c.output_max}; "
                               f"setting {s.name!r} wants {s.kp}, {s.kd.tolist()}, {s.output_max}")

    @staticmethod
    def _flatten(obs: Dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([np.asarray(obs["robot0_proprio-state"], dtype=np.float64).ravel(),
                               np.asarray(obs["object-state"], dtype=np.float64).ravel()])

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> Tuple[np.ndarray, Dict[str, Any]]:
        super().reset(seed=seed)
        if seed is None and self._seed_next is not None:
            seed, self._seed_next = self._seed_next, None
        env = self.suite_env
        if seed is not None:
            state = np.random.default_rng(int(seed)).bit_generator.state
            env.rng.bit_generator.state = state
            sampler = getattr(env, "placement_initializer", None)
            if sampler is not None and getattr(sampler, "rng", env.rng) is not env.rng:
                sampler.rng.bit_generator.state = state
        obs = self.recorder.reset() if self.record else self.suite_env.reset()
        self._check_controller()
        self._t = 0
        return self._flatten(obs), {"success": False}

    def step(self, action: Sequence[float]) -> Tuple[np.ndarray, float, bool, bool, Dict[str, Any]]:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (7,):
            raise ValueError(f"action must have shape (7,) = (dp (3) m, dw (3) rad, gripper), got {np.shape(action)}")
        if not np.isfinite(a).all():
            raise ValueError("action contains NaN or inf")
        normalised = np.r_[np.clip(a[:6] / self._output_max, -1.0, 1.0), np.clip(a[6], -1.0, 1.0)]
        if self.record:
            obs, reward, _, _, log = self.recorder.step(normalised)
        else:
            obs, reward, _, _ = self.suite_env.step(normalised)
        self._t += 1
        info: Dict[str, Any] = {"success": bool(self.suite_env._check_success())}
        if self.record:
            info["substeps"] = log
        return self._flatten(obs), float(reward), False, self._t >= self.horizon, info

    def close(self) -> None:
        self.suite_env.close()

    # ------------------------------------------------------------------ privileged state (scripts, tests)
    @property
    def sim(self) -> Any:
        """robosuite's ``MjSim`` (a new object after every hard reset)."""
        return self.suite_env.sim

    def grip_pose(self) -> Tuple[np.ndarray, np.ndarray]:
        """World position ``(3,)`` and rotation ``(3, 3)`` of the grip site (the frame OSC tracks)."""
        sid = self.sim.model.site_name2id(GRIP_SITE)
        return np.array(self.sim.data.site_xpos[sid]), np.array(self.sim.data.site_xmat[sid]).reshape(3, 3)

    @property
    def steps(self) -> int:
        return self._t


_FAST_RECORDER: Any = None


def _fast_recorder_class() -> type:
    """:class:`~ohio_layers.envs.robosuite_adapter.RobosuiteOSCRecorder` reading the state with numpy only.

    Same values and layout (checked in the tests); about 4x cheaper per sub-step than packing
    through torch, which matters at 5 sub-steps per 100 Hz step.
    """
    global _FAST_RECORDER
    if _FAST_RECORDER is not None:
        return _FAST_RECORDER
    from .robosuite_adapter import RobosuiteOSCRecorder

    class FastOSCRecorder(RobosuiteOSCRecorder):
        def _read(self, c: Any, raw: np.ndarray) -> Dict[str, np.ndarray]:
            data = c.sim.data
            center = f"{c.naming_prefix}{c.part_name}_center"
            flat = lambda x: np.asarray(x, dtype=np.float64).ravel()  # noqa: E731
            state = np.concatenate([
                flat(c.joint_pos), flat(c.joint_vel), flat(c.initial_joint), flat(c.ref_pos), flat(c.ref_ori_mat),
                flat(c.ref_pos_vel) - flat(data.get_site_xvelp(center)), flat(c.ref_ori_vel) - flat(data.get_site_xvelr(center)),
                flat(c.mass_matrix), flat(c.J_pos), flat(c.J_ori), flat(c.torque_compensation)])
            if state.shape != (self.layout.dim,):
                raise RuntimeError(f"recorded OSC state has {state.shape[0]} entries, layout expects {self.layout.dim}")
            if not hasattr(self, "_limits"):
                idx = self.robot._ref_actuators_indexes_dict[self.part]
                self._limits = (np.array(c.sim.model.actuator_ctrlrange[idx, 0]), np.array(c.sim.model.actuator_ctrlrange[idx, 1]))
            low, high = self._limits
            origin_ori = np.asarray(c.origin_ori, dtype=np.float64)
            return dict(
                states=state, raw_torques=raw, torques=np.clip(raw, low, high),
                goal_pos=np.asarray(c.origin_pos, dtype=np.float64) + origin_ori @ np.asarray(c.goal_pos, dtype=np.float64),
                goal_rot=origin_ori @ np.asarray(c.goal_ori, dtype=np.float64),
            )

    _FAST_RECORDER = FastOSCRecorder
    return FastOSCRecorder


def make_manipulation_env(task: str = "lift", setting: Union[str, ControllerSetting] = "original", **kwargs: Any) -> ManipulationEnv:
    """:class:`ManipulationEnv` (the fast path: no gymnasium wrappers)."""
    return ManipulationEnv(task, setting, **kwargs)


def register_manipulation_envs() -> None:
    """Register ``ohio_layers/RobosuiteLift-v0`` and ``ohio_layers/RobosuiteDoor-v0`` with gymnasium."""
    for task in TASKS:
        env_id = f"ohio_layers/Robosuite{ROBOSUITE_TASK[task]}-v0"
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="ohio_layers.envs.manipulation:ManipulationEnv", kwargs={"task": task})
