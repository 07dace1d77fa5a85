"""Sparse, multi-goal reaching on gymnasium's MuJoCo ``Reacher-v5`` (the OHIO goal-directed domain).

The arm, its physics (RK4, timestep 0.01, ``frame_skip`` 2, so one env step is 0.02 s) and the
reset distribution are Reacher-v5's own; this module changes only the task:

* **Reward** ``1{|fingertip - target| < radius}`` (xy of the body positions, recomputed after the
  physics step), ``radius = 0.015`` by default ("hard").
* **Multi-goal episodes**: ``episode_steps`` T (default 500) steps, a new target every
  ``goal_period`` G (default 100) steps, drawn like Reacher's reset target (uniform in the disk
  ``|g| < 0.2``) from the env's ``np_random``. G must be a multiple of the high-level period
  ``k`` (default 5) so that target switches fall on high-level decision boundaries.
  ``goal_period=None`` gives one target per episode (``single_goal_config()``: T = 1000, the
  paper's setting).
* The episode ends by truncation after T steps (the env truncates by itself; it never terminates).

Observation (10,), as Reacher-v5 (angles only through cos/sin, so it never winds)::

    [cos q1, cos q2, sin q1, sin q2, target_x, target_y, qdot1, qdot2, tip_x - target_x, tip_y - target_y]

A target switch after step t is visible in the observation returned by that step (the reward of
step t is computed with the old target).

Controller state ``x = (q1, q2, qdot1, qdot2)`` (``info["state"]`` and :meth:`GoalReacherEnv.controller_state`):
``q1`` is MuJoCo's own hinge coordinate of the unlimited joint0, i.e. **unwrapped** (continuous
across full rotations; never rebuilt from cos/sin).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import mujoco
import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.reacher_v5 import ReacherEnv

from .settings import ENV_ID, LINK_LENGTHS, SINGLE_GOAL_ENV_ID, TARGET_DISK_RADIUS, GoalReacherConfig, single_goal_config

_RENDER_MODES = ("rgb_array", "depth_array", "rgbd_tuple")


def fingertip_position(q: np.ndarray) -> np.ndarray:
    """Forward kinematics ``q (..., 2) -> fingertip xy (..., 2)`` (base at the origin)."""
    q = np.asarray(q, dtype=np.float64)
    l1, l2 = LINK_LENGTHS
    a, b = q[..., 0], q[..., 0] + q[..., 1]
    return np.stack([l1 * np.cos(a) + l2 * np.cos(b), l1 * np.sin(a) + l2 * np.sin(b)], -1)


class GoalReacherEnv(ReacherEnv):
    """Reacher-v5 with a sparse success reward and periodic target switches (see module doc).

    Args:
        episode_steps, goal_period, radius, k: see :class:`GoalReacherConfig`.
        **kwargs: passed to gymnasium's ``ReacherEnv`` (e.g. ``render_mode``, ``frame_skip``).

    ``info`` of ``reset``/``step`` holds ``state`` (4,) (unwrapped controller state after the
    step), ``target`` (2,) (the target in force for the *next* step), ``distance`` (fingertip-
    target distance used by the reward), ``is_success`` (bool, = reward), ``goal_index`` (int)
    and ``t`` (steps taken).
    """

    def __init__(
        self,
        episode_steps: int = 500,
        goal_period: Optional[int] = 100,
        radius: float = 0.015,
        k: int = 5,
        **kwargs: Any,
    ) -> None:
        self.config = GoalReacherConfig(episode_steps=episode_steps, goal_period=goal_period, radius=radius, k=k)
        super().__init__(**kwargs)
        utils.EzPickle.__init__(self, episode_steps, goal_period, radius, k, **kwargs)
        # Offscreen modes only: "human" needs a display (it aborts in GLFW on headless machines,
        # e.g. inside gymnasium's check_env, which renders every listed mode).
        self.metadata = {**self.metadata, "render_modes": list(_RENDER_MODES)}
        self._tip_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, "fingertip")
        self._target_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, "target")
        self._t = 0
        self._goal_index = 0

    # ------------------------------------------------------------------ helpers
    def controller_state(self) -> np.ndarray:
        """``x = (q1, q2, qdot1, qdot2)`` (4,), q1 unwrapped (MuJoCo's hinge coordinate)."""
        return np.concatenate([self.data.qpos[:2], self.data.qvel[:2]]).astype(np.float64)

    @property
    def target(self) -> np.ndarray:
        """Current target xy (2,)."""
        return self.data.qpos[2:4].copy()

    def fingertip(self) -> np.ndarray:
        """Fingertip xy (2,) at the current state (kinematics are refreshed after every step)."""
        return self.data.xpos[self._tip_id, :2].copy()

    def _sample_target(self) -> np.ndarray:
        while True:
            g = self.np_random.uniform(low=-TARGET_DISK_RADIUS, high=TARGET_DISK_RADIUS, size=2)
            if np.linalg.norm(g) < TARGET_DISK_RADIUS:
                return g

    def _set_target(self, goal: np.ndarray) -> None:
        qpos, qvel = self.data.qpos.copy(), self.data.qvel.copy()
        qpos[2:4] = goal
        qvel[2:4] = 0.0
        self.set_state(qpos, qvel)  # mj_forward: kinematics and observation consistent

    def _distance(self) -> float:
        return float(np.linalg.norm(self.data.xpos[self._tip_id, :2] - self.data.xpos[self._target_id, :2]))

    def _get_obs(self) -> np.ndarray:
        q = self.data.qpos[:2]
        tip = self.data.xpos[self._tip_id, :2]
        target = self.data.xpos[self._target_id, :2]
        return np.concatenate([np.cos(q), np.sin(q), self.data.qpos[2:4], self.data.qvel[:2], tip - target]).astype(np.float64)

    def _info(self, distance: float) -> Dict[str, Any]:
        return {
            "state": self.controller_state(),
            "target": self.target,
            "distance": distance,
            "is_success": bool(distance < self.config.radius),
            "goal_index": self._goal_index,
            "t": self._t,
        }

    # ------------------------------------------------------------------ gymnasium API
    def reset_model(self) -> np.ndarray:
        obs = super().reset_model()  # arm ~ U(+-0.1), qdot ~ U(+-0.005), target in the disk
        self._t = 0
        self._goal_index = 0
        return obs

    def reset(self, *, seed: Optional[int] = None, options: Optional[Dict[str, Any]] = None):
        obs, _ = super().reset(seed=seed, options=options)
        return obs, self._info(self._distance())

    def step(self, action: np.ndarray):
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (2,):
            raise ValueError(f"action must have shape (2,), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError("action contains NaN or inf")
        self.do_simulation(np.clip(a, -1.0, 1.0), self.frame_skip)
        # mj_step leaves xpos at the last sub-step's *start*; refresh kinematics to the new qpos.
        mujoco.mj_kinematics(self.model, self.data)
        self._t += 1
        distance = self._distance()
        reward = float(distance < self.config.radius)
        info = self._info(distance)
        truncated = self._t >= self.config.episode_steps
        G = self.config.goal_period
        if not truncated and G is not None and self._t % G == 0:
            self._set_target(self._sample_target())
            self._goal_index += 1
            info["state"] = self.controller_state()
            info["target"] = self.target
            info["goal_index"] = self._goal_index
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), reward, False, truncated, info


def register_reacher_envs() -> None:
    """Register ``ohio_layers/GoalReacher-v0`` (multi-goal, T 500, G 100) and
    ``ohio_layers/GoalReacherSingle-v0`` (single goal, T 1000) with gymnasium. Idempotent.

    The env truncates by itself after ``episode_steps``, so no ``max_episode_steps`` is set.
    """
    import gymnasium

    entry = f"{__name__}:GoalReacherEnv"
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(id=ENV_ID, entry_point=entry, kwargs=GoalReacherConfig().to_dict())
    if SINGLE_GOAL_ENV_ID not in gymnasium.registry:
        gymnasium.register(id=SINGLE_GOAL_ENV_ID, entry_point=entry, kwargs=single_goal_config().to_dict())
