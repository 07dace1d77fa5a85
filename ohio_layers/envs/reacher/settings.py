"""Settings of the goal-reaching reacher: env ids, the arm's geometry, the observation layout and
:class:`GoalReacherConfig` (task settings). Needs no MuJoCo, so configs can be built and checked anywhere."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

ENV_ID = "ohio_layers/GoalReacher-v0"
SINGLE_GOAL_ENV_ID = "ohio_layers/GoalReacherSingle-v0"

#: Link lengths of Reacher-v5 (body1 position, fingertip position in body1), metres.
LINK_LENGTHS: Tuple[float, float] = (0.1, 0.11)
#: Radius of the disk the targets are drawn from (Reacher-v5's reset distribution).
TARGET_DISK_RADIUS = 0.2
#: Observation layout (index slices into the 10-dim observation).
OBS_COS = slice(0, 2)
OBS_SIN = slice(2, 4)
OBS_TARGET = slice(4, 6)
OBS_QVEL = slice(6, 8)
OBS_TIP_MINUS_TARGET = slice(8, 10)



@dataclass(frozen=True)
class GoalReacherConfig:
    """Task settings of :class:`GoalReacherEnv`.

    Attributes:
        episode_steps: T, env steps per episode (truncation).
        goal_period: G, steps between target switches (a multiple of ``k``); ``None`` = one
            target per episode.
        radius: success radius of the sparse reward (m).
        k: high-level period the goal period must be a multiple of.
    """

    episode_steps: int = 500
    goal_period: Optional[int] = 100
    radius: float = 0.015
    k: int = 5

    def __post_init__(self) -> None:
        if not isinstance(self.episode_steps, (int, np.integer)) or self.episode_steps < 1:
            raise ValueError(f"episode_steps must be a positive int, got {self.episode_steps!r}")
        if not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise ValueError(f"k must be a positive int, got {self.k!r}")
        if self.goal_period is not None:
            if not isinstance(self.goal_period, (int, np.integer)) or self.goal_period < 1:
                raise ValueError(f"goal_period must be a positive int or None, got {self.goal_period!r}")
            if self.goal_period % self.k:
                raise ValueError(f"goal_period must be a multiple of k={self.k}, got {self.goal_period}")
        if not (isinstance(self.radius, (int, float)) and self.radius > 0):
            raise ValueError(f"radius must be a positive float, got {self.radius!r}")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def goals_per_episode(self) -> int:
        if self.goal_period is None:
            return 1
        return -(-self.episode_steps // self.goal_period)


def single_goal_config(**overrides: Any) -> GoalReacherConfig:
    """The paper-comparison setting: one target, T = 1000, radius 0.015."""
    kw: Dict[str, Any] = dict(episode_steps=1000, goal_period=None)
    kw.update(overrides)
    return GoalReacherConfig(**kw)
