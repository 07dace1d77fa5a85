"""Gymnasium environments and behaviour policies.

The vehicle-rebalancing env (``amod``) needs only the core dependencies (plus the ``highs``
extra for its default LP backend). The MuJoCo reacher needs the ``mujoco`` extra; importing this package without it still works,
and using the reacher then raises an error naming the extra.
"""
from __future__ import annotations

from . import amod  # vehicle rebalancing; registers ohio_layers/AMoD-v0
from .manipulation import ControllerSetting, ManipulationEnv, controller_setting, register_manipulation_envs

register_manipulation_envs()  # robosuite itself is imported only when such an env is built

try:
    import mujoco  # noqa: F401
except ImportError:  # pragma: no cover - depends on the installed extras
    _HAVE_MUJOCO = False
else:
    _HAVE_MUJOCO = True

if _HAVE_MUJOCO:
    from .reacher import (ENV_ID, SINGLE_GOAL_ENV_ID, GoalReacherConfig, GoalReacherEnv, fingertip_position,
                          register_reacher_envs, single_goal_config)
    from .reacher_data import collect, evaluate, evaluate_actor, evaluate_stats, make_env, normalized_score
    from .reacher_linearization import ReacherFDLinearization
    from .reacher_policies import (ExpertPolicy, LeadOracle, LQRHierarchicalPolicy, RandomPolicy, ReacherPolicy,
                                   heuristic_hierarchical_policy, inverse_kinematics, make_reacher_lqr)

    register_reacher_envs()
else:
    def __getattr__(name: str):
        from .._extras import require

        require("mujoco")
        raise AttributeError(name)
