"""Gymnasium environments, one subpackage per domain, each of the same shape where it applies:
``settings`` / ``scenario`` (configs), ``env``, ``policies`` (behaviour policies), ``data`` (collection).

* :mod:`.reacher` -- goal-reaching MuJoCo reacher (extra ``mujoco``).
* :mod:`.manipulation` -- robosuite Lift / Door under changed OSC gains (extra ``robosuite``, imported lazily).
* :mod:`.amod` -- vehicle rebalancing on a city graph (core dependencies; ``highs`` for its default LP backend).

The reacher's and manipulation's main names are re-exported here for convenience.
"""
from __future__ import annotations

from . import amod  # vehicle rebalancing; registers ohio_layers/AMoD-v0
from . import manipulation, reacher
from .manipulation import ControllerSetting, ManipulationEnv, controller_setting, register_manipulation_envs
from .reacher import ENV_ID, SINGLE_GOAL_ENV_ID, GoalReacherConfig, single_goal_config

if reacher.HAVE_MUJOCO:
    from .reacher import (ExpertPolicy, GoalReacherEnv, LeadOracle, LQRHierarchicalPolicy, RandomPolicy,
                          ReacherFDLinearization, ReacherPolicy, collect, evaluate, evaluate_actor, evaluate_stats,
                          fingertip_position, heuristic_hierarchical_policy, inverse_kinematics, make_env,
                          make_reacher_lqr, normalized_score, register_reacher_envs)
else:  # pragma: no cover - depends on the installed extras
    def __getattr__(name: str):
        from .._extras import require

        require("mujoco")
        raise AttributeError(name)
