"""Controller settings of the robosuite manipulation domain: tasks, the paper's three OSC_POSE gain
settings as explicit :class:`ControllerSetting` objects (never parsed from file names) and constants.

    original   kp 150 x6,                   damping ratio 1 x6,          delta <= 0.05 m / 0.5 rad
    stiffness  kp (150,150,150, 50,50,50),  damping ratio 1 x6,          delta <= 0.4 m / 1.6 rad (Lift), 0.5 / 1.6 (Door)
    damping    kp 150 x6,                   damping ratio (3,3,3, 1,1,1), delta <= 0.4 m / 1.6 rad (Lift), 0.4 / 1.5 (Door)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple

import numpy as np

TASKS = ("lift", "door")
SETTING_NAMES = ("original", "stiffness", "damping")
ROBOSUITE_TASK = {"lift": "Lift", "door": "Door"}
ORIGINAL_SCALE = np.array([0.05, 0.05, 0.05, 0.5, 0.5, 0.5])
"""Pose delta (m, m, m, rad, rad, rad) of a normalised action of 1 under the original config."""
GRIP_SITE = "gripper0_right_grip_site"
PHYSICS_SUBSTEPS = 5
CONTROL_FREQ = 100

# widened delta ranges of the paper's changed configs (osc_pose_{task}_{kp,kd}.json)
_WIDE = {("lift", "stiffness"): (0.4, 1.6), ("lift", "damping"): (0.4, 1.6),
         ("door", "stiffness"): (0.5, 1.6), ("door", "damping"): (0.4, 1.5)}


@dataclasses.dataclass(frozen=True)
class ControllerSetting:
    """Gains and action range of the OSC_POSE low level.

    Attributes:
        name: label used in results.
        kp: stiffness ``(6,)`` (position xyz, orientation xyz).
        damping_ratio: ``(6,)``; robosuite's ``kd = 2 sqrt(kp) damping_ratio``.
        output_max: ``(6,)`` largest accepted pose delta (m, rad); larger deltas are clipped.
    """

    name: str
    kp: Tuple[float, ...]
    damping_ratio: Tuple[float, ...]
    output_max: Tuple[float, ...]

    def __post_init__(self) -> None:
        for field in ("kp", "damping_ratio", "output_max"):
            value = tuple(float(v) for v in np.broadcast_to(np.asarray(getattr(self, field), dtype=float), (6,)))
            if any(v <= 0 or not np.isfinite(v) for v in value):
                raise ValueError(f"{field} must hold 6 positive finite values, got {value}")
            object.__setattr__(self, field, value)

    @property
    def kd(self) -> np.ndarray:
        """Damping gains ``(6,)``."""
        return 2.0 * np.sqrt(np.asarray(self.kp)) * np.asarray(self.damping_ratio)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def make_controller(self, **kwargs: Any):  # noqa: ANN201 - torch is imported lazily
        """Our differentiable :class:`~ohio_layers.lowlevel.osc.OperationalSpaceController` with these gains.

        ``delta_limit`` is the setting's ``output_max`` (robosuite clips larger deltas).
        """
        from ...lowlevel.osc import OperationalSpaceController

        kwargs.setdefault("delta_limit", list(self.output_max))
        return OperationalSpaceController(list(self.kp), list(self.damping_ratio), **kwargs)


def controller_setting(task: str, name: str) -> ControllerSetting:
    """The paper's controller setting ``name`` (``original``, ``stiffness``, ``damping``) for ``task``."""
    task = _check_task(task)
    if name == "original":
        return ControllerSetting("original", (150.0,) * 6, (1.0,) * 6, tuple(ORIGINAL_SCALE))
    if name == "stiffness":
        kp, ratio = (150.0, 150.0, 150.0, 50.0, 50.0, 50.0), (1.0,) * 6
    elif name == "damping":
        kp, ratio = (150.0,) * 6, (3.0, 3.0, 3.0, 1.0, 1.0, 1.0)
    else:
        raise ValueError(f"setting must be one of {SETTING_NAMES}, got {name!r}")
    pos, ori = _WIDE[(task, name)]
    return ControllerSetting(name, kp, ratio, (pos,) * 3 + (ori,) * 3)


def _check_task(task: str) -> str:
    t = str(task).lower()
    if t not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return t
