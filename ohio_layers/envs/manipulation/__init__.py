"""Robot manipulation: robosuite Lift and Door (Panda, OSC_POSE at 100 Hz) under the paper's controller settings.
settings (gains as ControllerSetting objects), env, robosuite_adapter (OSC sub-step logging), policies (scripts), data.

robosuite (extra ``robosuite``) is imported only when an env is built; this package imports without it.
"""
from __future__ import annotations

from .data import DEFAULT_NOISE, SUBSTEP_KEYS, collect_manipulation, load_episodes, next_state_labels, record_episode
from .env import (ManipulationEnv, axis_rotation, make_manipulation_env, register_manipulation_envs, rotation_exp,
                  rotation_log)
from .policies import DoorScript, LiftScript, ScriptedPolicy, run_episode, scripted_policy
from .settings import (CONTROL_FREQ, ORIGINAL_SCALE, PHYSICS_SUBSTEPS, SETTING_NAMES, TASKS, ControllerSetting,
                       controller_setting)

register_manipulation_envs()

__all__ = [
    "TASKS", "SETTING_NAMES", "ORIGINAL_SCALE", "PHYSICS_SUBSTEPS", "CONTROL_FREQ", "ControllerSetting",
    "controller_setting", "ManipulationEnv", "make_manipulation_env", "register_manipulation_envs", "rotation_log",
    "rotation_exp", "axis_rotation", "ScriptedPolicy", "LiftScript", "DoorScript", "scripted_policy", "run_episode",
    "DEFAULT_NOISE", "SUBSTEP_KEYS", "collect_manipulation", "load_episodes", "next_state_labels", "record_episode",
]
