"""Record what the OSC inverse needs from a live robosuite (1.5) Panda env, at every physics sub-step.

robosuite runs its arm controller once per physics sub-step (500 Hz simulation; at 100 Hz
control that is 5 sub-steps per ``env.step``). :class:`RobosuiteOSCRecorder` wraps the arm's
``OSC_POSE`` part controller so that each time it computes torques, the inputs it used are
copied into the flat :class:`~ohio_layers.lowlevel.osc.OSCStateLayout` state, together with
the torques it produced, the torques actually applied (clipped to the actuator ``ctrlrange``,
as robosuite's robot does) and its goal in world coordinates.

robosuite is an optional extra, imported lazily: this module imports without it.

Example::

    env = make_env("Lift", control_freq=100)
    rec = RobosuiteOSCRecorder(env)
    rec.reset()
    obs, reward, done, info, log = rec.step(action)   # log["states"] (5, 137), log["torques"] (5, 7)
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..._extras import require
from ...lowlevel.osc import OSCStateLayout

LOG_KEYS = ("states", "torques", "raw_torques", "goal_pos", "goal_rot")


def make_env(task: str = "Lift", control_freq: int = 100, horizon: int = 500, seed: Optional[int] = None,
             kp: Any = 150.0, damping_ratio: Any = 1.0, **kwargs: Any) -> Any:
    """A headless robosuite Panda env with the BASIC composite (OSC_POSE arm) controller.

    ``kp`` / ``damping_ratio`` (scalar or 6 values) are written into the controller config, so
    they persist across resets. Extra keyword arguments go to ``robosuite.make``.
    """
    suite = require("robosuite")
    from robosuite.controllers import load_composite_controller_config

    cfg = load_composite_controller_config(controller="BASIC", robot="Panda")
    arm = cfg["body_parts"]["right"]
    arm["kp"] = list(np.broadcast_to(np.asarray(kp, dtype=float), (6,)))
    arm["damping_ratio"] = list(np.broadcast_to(np.asarray(damping_ratio, dtype=float), (6,)))
    options = dict(robots="Panda", controller_configs=cfg, has_renderer=False, has_offscreen_renderer=False,
                   use_camera_obs=False, reward_shaping=True, control_freq=control_freq, horizon=horizon, seed=seed)
    options.update(kwargs)
    return suite.make(task, **options)


class RobosuiteOSCRecorder:
    """Log OSC inputs and torques of every physics sub-step of a robosuite env.

    Args:
        env: a robosuite env whose first robot's ``part`` controller is an OSC_POSE controller.
        part: the arm's part name (``"right"`` for Panda).

    Attributes:
        layout: the :class:`OSCStateLayout` of the logged states.
    """

    def __init__(self, env: Any, part: str = "right") -> None:
        self.env, self.part = env, part
        self._records: List[Dict[str, np.ndarray]] = []
        self._wrapped: Any = None
        self.layout = OSCStateLayout(len(self.controller.qvel_index))

    # ------------------------------------------------------------------ handles
    @property
    def robot(self) -> Any:
        return self.env.robots[0]

    @property
    def controller(self) -> Any:
        """The live arm controller (rebuilt by robosuite at every reset)."""
        return self.robot.part_controllers[self.part]

    def _install(self) -> None:
        c = self.controller
        if self._wrapped is c:
            return
        original = type(c).run_controller.__get__(c)

        def run_and_record() -> np.ndarray:
            torques = original()
            self._records.append(self._read(c, np.array(torques, dtype=np.float64)))
            return torques

        c.run_controller = run_and_record  # instance attribute shadows the method
        self._wrapped = c

    # ------------------------------------------------------------------ use
    def reset(self) -> Any:
        """``env.reset()``, then hook the (new) controller. Returns the observation."""
        obs = self.env.reset()
        self._install()
        self._records.clear()
        return obs

    def step(self, action: Sequence[float]) -> Tuple[Any, float, bool, dict, Dict[str, np.ndarray]]:
        """``env.step(action)`` plus the log of its sub-steps.

        Returns ``(obs, reward, done, info, log)`` with ``log`` holding ``states (k, ds)``,
        ``torques (k, n)`` (applied, clipped), ``raw_torques (k, n)`` (controller output),
        ``goal_pos (k, 3)``, ``goal_rot (k, 3, 3)`` (world frame), ``z (6,)`` (the pose delta in
        metres / radians, i.e. the scaled arm action), ``kp (6,)``, ``kd (6,)``.
        """
        self._install()
        self._records.clear()
        action = np.asarray(action, dtype=np.float64)
        z = self.scaled_delta(action)
        obs, reward, done, info = self.env.step(action)
        if not self._records:
            raise RuntimeError("the arm controller did not run during env.step; is it an OSC_POSE controller?")
        log = {k: np.stack([r[k] for r in self._records]) for k in LOG_KEYS}
        c = self.controller
        log.update(z=z, kp=np.array(c.kp, dtype=np.float64), kd=np.array(c.kd, dtype=np.float64))
        return obs, reward, done, info, log

    def scaled_delta(self, action: np.ndarray) -> np.ndarray:
        """The pose delta ``(6,)`` robosuite derives from the env ``action`` (clip + scale)."""
        start, end = self.robot.composite_controller._action_split_indexes[self.part]
        arm = action[start:end]
        return np.array(self.controller.scale_action(arm[-6:]), dtype=np.float64)

    # ------------------------------------------------------------------ reading
    def _read(self, c: Any, raw: np.ndarray) -> Dict[str, np.ndarray]:
        data = c.sim.data
        center = f"{c.naming_prefix}{c.part_name}_center"
        base_v, base_w = np.array(data.get_site_xvelp(center)), np.array(data.get_site_xvelr(center))
        fields = dict(
            q=c.joint_pos, qdot=c.joint_vel, q0=c.initial_joint, pos=c.ref_pos, rot=c.ref_ori_mat,
            lin_vel=np.asarray(c.ref_pos_vel) - base_v, ang_vel=np.asarray(c.ref_ori_vel) - base_w,
            mass=c.mass_matrix, jac_pos=c.J_pos, jac_ori=c.J_ori, bias=c.torque_compensation,
        )
        state = self.layout.pack({k: torch.as_tensor(np.array(v, dtype=np.float64)).reshape(self.layout.fields[k])
                                  for k, v in fields.items()}).numpy()
        idx = self.robot._ref_actuators_indexes_dict[self.part]
        low, high = c.sim.model.actuator_ctrlrange[idx, 0], c.sim.model.actuator_ctrlrange[idx, 1]
        origin_ori = np.asarray(c.origin_ori, dtype=np.float64)
        return dict(
            states=state, raw_torques=raw, torques=np.clip(raw, low, high),
            goal_pos=np.asarray(c.origin_pos, dtype=np.float64) + origin_ori @ np.asarray(c.goal_pos, dtype=np.float64),
            goal_rot=origin_ori @ np.asarray(c.goal_ori, dtype=np.float64),
        )
