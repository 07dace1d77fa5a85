"""Scripted behaviour policies for robosuite Lift and Door at 100 Hz (no downloads, no learning).

Both are closed-loop waypoint scripts over the grip-site pose, reading privileged simulator state
(cube pose; door, latch and hinge frames). They compute a *normalised* OSC_POSE action
``u (7,)`` in [-1, 1] (1 = 5 cm / 0.5 rad under the original config), add Gaussian noise
``noise * N(0, I)`` to all seven entries, clip, and return the physical action
``(u[:6] * ORIGINAL_SCALE, u[6])`` that :class:`~ohio_layers.envs.manipulation.ManipulationEnv`
takes. Position feedback ``u_pos = clip(gain * (target - p))`` (metres); orientation feedback
``u_ori = clip(ori_gain * log(R_target R'))`` (radians, axis-angle, world frame). With the
"achieved" goal mode of robosuite 1.5 a normalised action acts like a velocity command
(about 0.2-0.3 m/s at |u| = 1 with kp 150, damping ratio 1).

Lift: above the cube (8 cm) -> descend to 5 mm below its centre -> close (15 steps) -> lift 15 cm
and hold. The start orientation is held; the cube yaw is ignored (the open gripper spans the
4 cm cube at any yaw).

Door (``use_latch=True``): rotate the hand 90 degrees about the horizontal door-plane axis so the
fingers close vertically on the handle bar (a side pinch), move to 14 cm then 7 cm in front of
the handle, approach until the grip site is on the handle site, close (15 steps), turn the
handle's free end up (the grasp pose is carried along with the latch frame rotated 0.5 rad ahead
about the handle axis) until |handle angle| > 1.2 rad, then pull (the latch frame rotated up to
0.2 rad ahead about the hinge axis, door angle target <= 0.38 rad) and hold. During the approach
the gripper command ramps linearly from -1 (open) at ``grip_ramp[0]`` metres from the handle to
+1 (close) at ``grip_ramp[1]``: robosuite's Panda gripper acts on the command's sign only, so the
fingers still start closing about 1.3 cm out, but the label is a smooth function of the distance.
A step at the hand-over (the earlier script) leaves one "close" label per episode among many
"open" ones at the same state, and a regressed policy parks at the handle with the gripper open.

Every policy has ``reset(env, seed)`` and ``act(env, obs) -> action (7,)``; ``phase`` names the
current phase.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from .env import ManipulationEnv, axis_rotation, rotation_log
from .settings import ORIGINAL_SCALE


class ScriptedPolicy:
    """Base: feedback towards a target pose, noise, conversion to physical units.

    Args:
        noise: std of the Gaussian noise on the normalised action (all 7 entries).
        gain: position feedback gain (normalised action per metre of error).
        ori_gain: orientation feedback gain (normalised action per radian of error).
    """

    def __init__(self, noise: float = 0.0, gain: float = 20.0, ori_gain: float = 4.0) -> None:
        if noise < 0 or gain <= 0 or ori_gain <= 0:
            raise ValueError(f"noise must be >= 0 and gain, ori_gain > 0; got noise={noise}, gain={gain}, ori_gain={ori_gain}")
        self.noise, self.gain, self.ori_gain = float(noise), float(gain), float(ori_gain)
        self.rng = np.random.default_rng(0)
        self.phase = "start"
        self.t = 0

    def reset(self, env: ManipulationEnv, seed: Optional[int] = None) -> None:
        """Start an episode (call after ``env.reset``); ``seed`` seeds the noise."""
        self.rng = np.random.default_rng(seed)
        self.t = 0
        self._reset(env)

    def _reset(self, env: ManipulationEnv) -> None:
        raise NotImplementedError

    def _normalised(self, env: ManipulationEnv) -> np.ndarray:
        raise NotImplementedError

    def act(self, env: ManipulationEnv, obs: Optional[np.ndarray] = None) -> np.ndarray:
        """Physical action ``(7,)`` = (dp m, dw rad, gripper) for the env's current state."""
        u = self._normalised(env)
        if self.noise > 0:
            u = u + self.noise * self.rng.standard_normal(7)
        u = np.clip(u, -1.0, 1.0)
        self.t += 1
        return np.r_[u[:6] * ORIGINAL_SCALE, u[6]]

    def feedback(self, env: ManipulationEnv, target_pos: np.ndarray, target_rot: np.ndarray, grip: float) -> np.ndarray:
        """Normalised action towards ``target_pos (3,)``, ``target_rot (3, 3)`` with gripper ``grip``."""
        pos, rot = env.grip_pose()
        u = np.empty(7)
        u[:3] = np.clip(self.gain * (target_pos - pos), -1.0, 1.0)
        u[3:6] = np.clip(self.ori_gain * rotation_log(target_rot @ rot.T), -1.0, 1.0)
        u[6] = grip
        return u

    def __repr__(self) -> str:
        return f"{type(self).__name__}(noise={self.noise}, gain={self.gain}, ori_gain={self.ori_gain})"


class LiftScript(ScriptedPolicy):
    """Grasp the cube and lift it (see the module docstring)."""

    def __init__(self, noise: float = 0.0, gain: float = 20.0, ori_gain: float = 4.0, hover: float = 0.08,
                 lift_height: float = 0.15, close_steps: int = 15, descend_timeout: int = 150) -> None:
        super().__init__(noise, gain, ori_gain)
        self.hover, self.lift_height = float(hover), float(lift_height)
        self.close_steps, self.descend_timeout = int(close_steps), int(descend_timeout)

    def _reset(self, env: ManipulationEnv) -> None:
        if env.task != "lift":
            raise ValueError(f"LiftScript needs a lift env, got task {env.task!r}")
        self.phase, self.t0, self.lift_z = "above", 0, 0.0
        self.rot0 = env.grip_pose()[1]

    def _cube(self, env: ManipulationEnv) -> np.ndarray:
        e = env.suite_env
        return np.array(e.sim.data.body_xpos[e.cube_body_id])

    def _normalised(self, env: ManipulationEnv) -> np.ndarray:
        pos, _ = env.grip_pose()
        cube = self._cube(env)
        t = self.t
        if self.phase == "above":
            target = cube + np.array([0.0, 0.0, self.hover])
            if np.linalg.norm((target - pos)[:2]) < 0.012:
                self.phase, self.t0 = "descend", t
        if self.phase == "descend":
            target = cube - np.array([0.0, 0.0, 0.005])
            if np.linalg.norm(target - pos) < 0.008 or t - self.t0 > self.descend_timeout:
                self.phase, self.t0, self.hold = "close", t, pos.copy()
        if self.phase == "close":
            if t - self.t0 >= self.close_steps:
                self.phase, self.t0, self.lift_z = "lift", t, pos[2] + self.lift_height
                self.hold = np.array([pos[0], pos[1], self.lift_z])
            else:
                return self.feedback(env, self.hold, self.rot0, 1.0)
        if self.phase == "lift":
            return self.feedback(env, self.hold, self.rot0, 1.0)
        return self.feedback(env, target, self.rot0, -1.0)


class DoorScript(ScriptedPolicy):
    """Side-pinch the handle, turn it up, pull the door open (see the module docstring)."""

    def __init__(self, noise: float = 0.0, gain: float = 20.0, ori_gain: float = 4.0, far: float = 0.14, pre: float = 0.07,
                 close_steps: int = 15, handle_lead: float = 0.5, hinge_lead: float = 0.2, unlock_angle: float = 1.2,
                 hinge_target: float = 0.38, grip_ramp: Tuple[float, float] = (0.02, 0.006)) -> None:
        super().__init__(noise, gain, ori_gain)
        if not grip_ramp[0] > grip_ramp[1] >= 0:
            raise ValueError(f"grip_ramp must be (open distance, closed distance) with open > closed >= 0, got {grip_ramp}")
        self.grip_ramp = (float(grip_ramp[0]), float(grip_ramp[1]))
        self.far, self.pre, self.close_steps = float(far), float(pre), int(close_steps)
        self.handle_lead, self.hinge_lead = float(handle_lead), float(hinge_lead)
        self.unlock_angle, self.hinge_target = float(unlock_angle), float(hinge_target)

    # ------------------------------------------------------------------ door geometry (privileged)
    def _joint(self, env: ManipulationEnv, name: str) -> Tuple[np.ndarray, np.ndarray, float]:
        """World anchor ``(3,)``, unit axis ``(3,)`` and position of joint ``name``."""
        m, d = env.sim.model, env.sim.data
        jid = m.joint_name2id(name)
        qpos = float(d.qpos[m.jnt_qposadr[jid]])
        return np.array(d._data.xanchor[jid]), np.array(d._data.xaxis[jid]), qpos

    def _latch(self, env: ManipulationEnv) -> Tuple[np.ndarray, np.ndarray]:
        m, d = env.sim.model, env.sim.data
        bid = m.body_name2id("Door_latch")
        return np.array(d.body_xpos[bid]), np.array(d.body_xmat[bid]).reshape(3, 3)

    def _handle(self, env: ManipulationEnv) -> np.ndarray:
        m, d = env.sim.model, env.sim.data
        return np.array(d.site_xpos[m.site_name2id("Door_handle")])

    def _reset(self, env: ManipulationEnv) -> None:
        if env.task != "door":
            raise ValueError(f"DoorScript needs a door env, got task {env.task!r}")
        _, axis, _ = self._joint(env, "Door_latch_joint")
        axis = axis * np.array([1.0, 1.0, 0.0])
        self.normal_out = -axis / np.linalg.norm(axis)  # horizontal, from the door towards the robot
        yaw = np.arctan2(axis[0], -axis[1])
        rot0 = env.grip_pose()[1]
        self.grasp_rot = axis_rotation(np.array([0.0, 0.0, 1.0]), yaw) @ axis_rotation(np.array([1.0, 0.0, 0.0]), -np.pi / 2) @ rot0
        self.phase, self.t0 = "far", 0
        self.rel_pos = np.zeros(3)
        self.rel_rot = np.eye(3)

    def _carried_target(self, env: ManipulationEnv) -> Tuple[np.ndarray, np.ndarray]:
        """Grasp pose carried by the latch frame rotated ahead about the handle and hinge axes."""
        lp, lr = self._latch(env)
        c_h, a_h, q_h = self._joint(env, "Door_latch_joint")
        if self.phase == "turn":
            Q = axis_rotation(a_h, -self.handle_lead)
            lp, lr = c_h + Q @ (lp - c_h), Q @ lr
        else:  # pull / hold: keep the handle turned while rotating the door open
            extra = max(0.0, 1.35 - abs(q_h))
            if extra > 0:
                Q = axis_rotation(a_h, -min(extra, self.hinge_lead))
                lp, lr = c_h + Q @ (lp - c_h), Q @ lr
            c_d, a_d, q_d = self._joint(env, "Door_hinge")
            delta = float(np.clip(self.hinge_target - q_d, 0.0, self.hinge_lead))
            Q = axis_rotation(a_d, delta)
            lp, lr = c_d + Q @ (lp - c_d), Q @ lr
        return lp + lr @ self.rel_pos, lr @ self.rel_rot

    def _normalised(self, env: ManipulationEnv) -> np.ndarray:
        pos, rot = env.grip_pose()
        handle = self._handle(env)
        t = self.t
        ori_err = float(np.linalg.norm(rotation_log(self.grasp_rot @ rot.T)))
        if self.phase == "far":
            target = handle + self.far * self.normal_out
            if np.linalg.norm(target - pos) < 0.015:
                self.phase, self.t0 = "pre", t
        if self.phase == "pre":
            target = handle + self.pre * self.normal_out
            if np.linalg.norm(target - pos) < 0.008 and ori_err < 0.1:
                self.phase, self.t0 = "approach", t
        if self.phase == "approach":
            target = handle
            dist = float(np.linalg.norm(target - pos))
            if dist < 0.006 or t - self.t0 > 60:
                self.phase, self.t0, self.hold = "close", t, handle.copy()
            else:
                open_d, closed_d = self.grip_ramp
                grip = float(np.clip(-1.0 + 2.0 * (open_d - dist) / (open_d - closed_d), -1.0, 1.0))
                return self.feedback(env, target, self.grasp_rot, grip)
        if self.phase == "close":
            if t - self.t0 < self.close_steps:
                return self.feedback(env, self.hold, self.grasp_rot, 1.0)
            lp, lr = self._latch(env)
            self.rel_pos, self.rel_rot = lr.T @ (pos - lp), lr.T @ rot
            self.phase, self.t0 = "turn", t
        if self.phase == "turn":
            if abs(self._joint(env, "Door_latch_joint")[2]) > self.unlock_angle:
                self.phase, self.t0 = "pull", t
            else:
                return self.feedback(env, *self._carried_target(env), 1.0)
        if self.phase == "pull":
            return self.feedback(env, *self._carried_target(env), 1.0)
        return self.feedback(env, target, self.grasp_rot, -1.0)


def scripted_policy(task: str, noise: float = 0.0, **kwargs: Any) -> ScriptedPolicy:
    """The scripted behaviour policy of ``task`` (``"lift"`` or ``"door"``)."""
    if task == "lift":
        return LiftScript(noise, **kwargs)
    if task == "door":
        return DoorScript(noise, **kwargs)
    raise ValueError(f"task must be 'lift' or 'door', got {task!r}")


def run_episode(env: ManipulationEnv, policy: ScriptedPolicy, seed: int) -> dict:
    """One seeded episode; returns ``{"return", "success", "first_success", "phases"}``."""
    obs, _ = env.reset(seed=seed)
    policy.reset(env, seed)
    total, first, phases = 0.0, None, {}
    done = False
    while not done:
        obs, r, term, trunc, info = env.step(policy.act(env, obs))
        phases.setdefault(policy.phase, env.steps - 1)
        total += r
        if info["success"] and first is None:
            first = env.steps
        done = term or trunc
    return {"return": total, "success": first is not None, "first_success": first, "phases": phases}
