"""Goal-reaching reacher (gymnasium's MuJoCo Reacher-v5 arm, sparse multi-goal reward) with a k-step LQR low level.
settings (config, geometry), env, linearization (finite differences of the RK4 step), policies (behaviour), data (collection).

Importing registers ``ohio_layers/GoalReacher-v0`` and ``ohio_layers/GoalReacherSingle-v0`` when MuJoCo (extra
``mujoco``) is installed; without it the settings still import and the rest raises an error naming the extra.
"""
from __future__ import annotations

from .settings import (ENV_ID, LINK_LENGTHS, OBS_COS, OBS_QVEL, OBS_SIN, OBS_TARGET, OBS_TIP_MINUS_TARGET,
                       SINGLE_GOAL_ENV_ID, TARGET_DISK_RADIUS, GoalReacherConfig, single_goal_config)

try:
    import mujoco  # noqa: F401
except ImportError:  # pragma: no cover - depends on the installed extras
    HAVE_MUJOCO = False
else:
    HAVE_MUJOCO = True

if HAVE_MUJOCO:
    from .data import collect, evaluate, evaluate_actor, evaluate_stats, make_env, normalized_score
    from .env import GoalReacherEnv, fingertip_position, register_reacher_envs
    from .linearization import ReacherFDLinearization
    from .policies import (Z_BOUND, ExpertPolicy, LeadOracle, LQRHierarchicalPolicy, RandomPolicy, ReacherPolicy,
                           heuristic_hierarchical_policy, inverse_kinematics, make_reacher_lqr)

    register_reacher_envs()
else:  # pragma: no cover - depends on the installed extras
    def __getattr__(name: str):
        from ..._extras import require

        require("mujoco")
        raise AttributeError(name)

__all__ = [
    "ENV_ID", "SINGLE_GOAL_ENV_ID", "LINK_LENGTHS", "TARGET_DISK_RADIUS", "OBS_COS", "OBS_SIN", "OBS_TARGET", "OBS_QVEL",
    "OBS_TIP_MINUS_TARGET", "GoalReacherConfig", "single_goal_config", "GoalReacherEnv", "fingertip_position",
    "register_reacher_envs", "ReacherFDLinearization", "Z_BOUND", "ExpertPolicy", "LeadOracle", "LQRHierarchicalPolicy",
    "RandomPolicy", "ReacherPolicy", "heuristic_hierarchical_policy", "inverse_kinematics", "make_reacher_lqr",
    "collect", "evaluate", "evaluate_actor", "evaluate_stats", "make_env", "normalized_score",
]
