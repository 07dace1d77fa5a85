"""robosuite's OSC_POSE operational-space controller as a batched, differentiable ``nn.Module``.

The robot quantities the law needs are *inputs* (a flat state, see :class:`OSCStateLayout`),
so the module needs no simulator. Per high-level decision the goal is set once, from the
state at the first sub-step (:meth:`OperationalSpaceController.context`)::

    p* = p_0 + dp,        R* = Exp(dw) R_0                      z = (dp, dw) in m and rad

and at every sub-step ``l`` (state ``q_l, qdot_l``)::

    F   = kp_pos * (p* - p_l) - kd_pos * v_l
    T   = kp_ori * e(R*, R_l) - kd_ori * w_l,        e = 0.5 sum_i R_l[:, i] x R*[:, i]
    tau = J_pos' Lam_pos F + J_ori' Lam_ori T + b + N' M (kn (q0 - q_l) - 2 sqrt(kn) qdot_l)

with ``kd = 2 sqrt(kp) * damping_ratio``, ``Lam_x = (J_x M^{-1} J_x')^{-1}`` (task-space inertia,
damped, see :func:`task_space_inverse`), ``N = I - M^{-1} J' Lam J`` and ``b`` the bias torques
(gravity + Coriolis). Torque limits are then applied by :meth:`saturate`: clipped (as robosuite)
or enforced exactly by the QP ``min (tau - tau_osc)' W (tau - tau_osc) s.t. |tau| <= tau_max``.

Frames: positions, rotations, velocities and Jacobians are in one fixed frame (MuJoCo's world
frame); the deltas ``z`` are expressed in it. This equals robosuite's default
``input_ref_frame="base"`` when the robot base is not rotated (Panda in Lift/Door).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Dict, Mapping, NamedTuple, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .._validate import check_tensor
from .base import Context, LowLevelController
from .qp import solve_qp
from .rotations import axis_angle_to_matrix, orientation_error

PANDA_TORQUE_LIMIT = (80.0, 80.0, 80.0, 80.0, 80.0, 12.0, 12.0)
ROBOSUITE_DELTA_LIMIT = (0.05, 0.05, 0.05, 0.5, 0.5, 0.5)  # OSC_POSE default output_max (m, rad)
IMPEDANCE_MODES = ("fixed", "variable_kp", "variable")
SATURATIONS = ("clip", "qp", "none")
QP_WEIGHTS = ("identity", "mass", "mass_inverse")
Gain = Union[float, Sequence[float], Tensor]


class OSCStateLayout:
    """The flat state ``(..., ds)`` of the OSC for an arm with ``n`` joints.

    Fields, in order (``rot`` and the matrices are stored row-major)::

        q (n)  qdot (n)  q0 (n)  pos (3)  rot (3, 3)  lin_vel (3)  ang_vel (3)
        mass (n, n)  jac_pos (3, n)  jac_ori (3, n)  bias (n)

    ``q0`` is the null-space posture target, ``pos``/``rot`` the pose of the controlled site,
    ``lin_vel``/``ang_vel`` its velocity relative to the robot base, ``mass`` the arm block of
    the joint-space inertia (with armature), ``jac_*`` the site Jacobians on the arm joints and
    ``bias`` the bias torques (MuJoCo ``qfrc_bias``). ``ds = n^2 + 10 n + 18`` (137 for n = 7).
    """

    def __init__(self, n_joints: int = 7) -> None:
        if not isinstance(n_joints, int) or n_joints < 1:
            raise ValueError(f"n_joints must be a positive int, got {n_joints!r}")
        n = n_joints
        self.n_joints = n
        self.fields: "OrderedDict[str, Tuple[int, ...]]" = OrderedDict(
            q=(n,), qdot=(n,), q0=(n,), pos=(3,), rot=(3, 3), lin_vel=(3,), ang_vel=(3,),
            mass=(n, n), jac_pos=(3, n), jac_ori=(3, n), bias=(n,),
        )
        self.slices: Dict[str, slice] = {}
        start = 0
        for name, shape in self.fields.items():
            size = math.prod(shape)
            self.slices[name] = slice(start, start + size)
            start += size
        self.dim = start

    def pack(self, quantities: Mapping[str, Tensor]) -> Tensor:
        """Flat state ``(..., ds)`` from a dict of ``(..., *field_shape)`` tensors."""
        missing = [k for k in self.fields if k not in quantities]
        if missing:
            raise KeyError(f"missing OSC state fields {missing}; required: {list(self.fields)}")
        parts = []
        lead = None
        for name, shape in self.fields.items():
            t = quantities[name]
            if not isinstance(t, Tensor) or tuple(t.shape[t.dim() - len(shape):]) != shape:
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"{name} must have shape (..., {', '.join(map(str, shape))}), got {got}")
            this = tuple(t.shape[: t.dim() - len(shape)])
            if lead is not None and this != lead:
                raise ValueError(f"{name} has leading shape {this}, other fields {lead}")
            lead = this
            parts.append(t.reshape(*this, math.prod(shape)))  # not -1: an empty batch has 0 elements
        return torch.cat(parts, -1)

    def unpack(self, state: Tensor) -> Dict[str, Tensor]:
        """Views ``(..., *field_shape)`` of every field of ``state (..., ds)``."""
        if state.shape[-1] != self.dim:
            raise ValueError(f"state must have last dimension {self.dim} (OSC layout, n={self.n_joints}), got {tuple(state.shape)}")
        lead = state.shape[:-1]
        return {k: state[..., self.slices[k]].reshape(*lead, *shape) for k, shape in self.fields.items()}


def task_space_inverse(A: Tensor, damping: float = 0.0) -> Tensor:
    """Task-space inertia ``Lam`` from ``A = J M^{-1} J' (B, d, d)`` (symmetric PSD).

    ``damping = 0``: ``A^{-1}`` -- equal to robosuite's ``pinv(A)`` whenever ``A`` has full rank
    (non-singular poses). ``damping = lam > 0``: the damped least-squares inverse
    ``(A^2 + lam^2 I)^{-1} A``, which tends to ``pinv(A)`` for singular values ``>> lam``, goes
    smoothly to zero along singular directions (like the pseudo-inverse) and is differentiable
    at singular poses. Its relative deviation from ``A^{-1}`` is ``lam^2 / sigma^2`` per singular
    value ``sigma``.
    """
    if damping == 0.0:
        inv, info = torch.linalg.inv_ex(A)
        return _nan_where_failed(inv, info)
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    x, info = torch.linalg.solve_ex(A @ A + (damping ** 2) * eye, A)
    return _nan_where_failed(x, info)


def _nan_where_failed(x: Tensor, info: Tensor) -> Tensor:
    """NaN for the batch members whose factorisation failed (``info != 0``): one singular mass
    matrix or Jacobian flags its member (NaN torques) instead of failing the whole batch."""
    if info.dim() == 0 or not bool((info != 0).any()):
        return x
    bad = (info != 0).reshape(*info.shape, *([1] * (x.dim() - info.dim())))
    return torch.where(bad, torch.full_like(x, float("nan")), x)


class OSCTerms(NamedTuple):
    """The OSC law split by what the goal enters: ``tau = pos_gain (p* - p) + ori_gain e(R*, R) + offset``.

    ``pos_gain = J_pos' Lam_pos diag(kp_pos)`` and ``ori_gain = J_ori' Lam_ori diag(kp_ori)`` are
    ``(B, n, 3)``; ``offset (B, n)`` holds the velocity damping, bias and null-space torques.
    The torque is affine in the goal position and, through ``e``, linear in the goal rotation.
    """

    pos_gain: Tensor
    ori_gain: Tensor
    offset: Tensor


def osc_terms(s: Mapping[str, Tensor], kp: Tensor, kd: Tensor, nullspace_kp: float = 10.0, task_damping: float = 0.0) -> OSCTerms:
    """Goal-independent parts of the OSC_POSE law for unpacked state fields ``s``.

    Args:
        s: dict of ``(B, *field_shape)`` tensors (:meth:`OSCStateLayout.unpack`).
        kp, kd: ``(B, 6)`` or ``(6,)`` stiffness and damping (position, then orientation).
        nullspace_kp: posture gain ``kn`` (damping ``2 sqrt(kn)``).
        task_damping: damping of the task-space inverse (:func:`task_space_inverse`).
    """
    M, Jp, Jo = s["mass"], s["jac_pos"], s["jac_ori"]
    J = torch.cat([Jp, Jo], -2)  # (B, 6, n)
    Minv_Jt, info = torch.linalg.solve_ex(M, J.transpose(-1, -2))  # (B, n, 6)
    Minv_Jt = _nan_where_failed(Minv_Jt, info)
    A = J @ Minv_Jt
    lam_full = task_space_inverse(A, task_damping)
    lam_pos = task_space_inverse(A[..., :3, :3], task_damping)
    lam_ori = task_space_inverse(A[..., 3:, 3:], task_damping)
    pos_map = Jp.transpose(-1, -2) @ lam_pos  # (B, n, 3): wrench -> torque
    ori_map = Jo.transpose(-1, -2) @ lam_ori
    n = M.shape[-1]
    null = torch.eye(n, dtype=M.dtype, device=M.device) - Minv_Jt @ lam_full @ J  # N = I - Jbar J
    posture = _mv(M, nullspace_kp * (s["q0"] - s["q"]) - 2.0 * math.sqrt(nullspace_kp) * s["qdot"])
    offset = (s["bias"] + _mv(null.transpose(-1, -2), posture)
              - _mv(pos_map, kd[..., :3] * s["lin_vel"]) - _mv(ori_map, kd[..., 3:] * s["ang_vel"]))
    return OSCTerms(pos_map * kp[..., None, :3], ori_map * kp[..., None, 3:], offset)


def osc_torques(
    s: Mapping[str, Tensor],
    goal_pos: Tensor,
    goal_rot: Tensor,
    kp: Tensor,
    kd: Tensor,
    nullspace_kp: float = 10.0,
    task_damping: float = 0.0,
) -> Tensor:
    """Unsaturated OSC_POSE torques ``(B, n)`` towards ``goal_pos (B, 3)``, ``goal_rot (B, 3, 3)``.

    Arguments as :func:`osc_terms`.
    """
    t = osc_terms(s, kp, kd, nullspace_kp, task_damping)
    return _mv(t.pos_gain, goal_pos - s["pos"]) + _mv(t.ori_gain, orientation_error(goal_rot, s["rot"])) + t.offset


def _mv(M: Tensor, v: Tensor) -> Tensor:
    return (M @ v.unsqueeze(-1)).squeeze(-1)


def _gain(value: Gain, name: str) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float64).clone()
    if t.dim() == 0:
        t = t.expand(6).clone()
    if t.shape != (6,):
        raise ValueError(f"{name} must be a scalar or have 6 entries (position xyz, orientation xyz), got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise ValueError(f"{name} must be finite and >= 0, got {t.tolist()}")
    return t


class OperationalSpaceController(LowLevelController):
    """robosuite OSC_POSE (``uncouple_pos_ori=True``, delta input), batched and differentiable.

    ``forward(state (B, ds), z (B, dz)) -> tau (B, n)``; state layout :class:`OSCStateLayout`.

    Args:
        kp: stiffness (scalar or 6 values); a module parameter (``self.kp``) in ``"fixed"`` mode.
        damping_ratio: scalar or 6 values (``self.damping_ratio``); ``kd = 2 sqrt(kp) ratio``.
        n_joints: arm joints ``n`` (7 for Panda).
        impedance_mode: ``"fixed"`` -- ``z = (dp, dw)`` (6); ``"variable_kp"`` -- ``z = (kp (6),
            dp, dw)`` (12), ``kd = 2 sqrt(kp)``; ``"variable"`` -- ``z = (ratio (6), kp (6), dp,
            dw)`` (18). As robosuite, gains given in z are clipped to ``kp_limits`` /
            ``damping_ratio_limits``; fixed gains are not.
        nullspace_kp: posture gain (robosuite: 10).
        torque_limit: ``tau_max`` (scalar or ``(n,)``; Panda ctrlrange by default; ``None`` =
            unlimited).
        saturation: ``"clip"`` (robosuite), ``"qp"`` (exact weighted projection onto the
            limits through :func:`~ohio_layers.lowlevel.qp.solve_qp`) or ``"none"``.
        qp_weight: ``W`` of the QP: ``"mass_inverse"`` (``M^{-1}``: the smallest change of joint
            acceleration in the kinetic-energy metric), ``"mass"`` or ``"identity"`` (= clip).
        task_damping: damping of the task-space inverse (0 = robosuite; see
            :func:`task_space_inverse`).
        horizon: sub-steps per decision (5 at 100 Hz control / 500 Hz simulation).
        delta_limit: symmetric bound on ``(dp, dw)`` (scalar or 6 values); default robosuite's
            OSC_POSE ``output_max`` (0.05 m, 0.5 rad), which robosuite clips every delta to.
            ``None`` = unbounded (then an inverse may return deltas robosuite cannot command).
        trainable_gains: make ``kp`` / ``damping_ratio`` require gradients.
    """

    def __init__(
        self,
        kp: Gain = 150.0,
        damping_ratio: Gain = 1.0,
        *,
        n_joints: int = 7,
        impedance_mode: str = "fixed",
        kp_limits: Tuple[float, float] = (0.0, 300.0),
        damping_ratio_limits: Tuple[float, float] = (0.0, 10.0),
        nullspace_kp: float = 10.0,
        torque_limit: Union[Gain, None] = PANDA_TORQUE_LIMIT,
        saturation: str = "clip",
        qp_weight: str = "mass_inverse",
        task_damping: float = 0.0,
        horizon: int = 5,
        delta_limit: Union[Gain, None] = ROBOSUITE_DELTA_LIMIT,
        trainable_gains: bool = False,
    ) -> None:
        if impedance_mode not in IMPEDANCE_MODES:
            raise ValueError(f"impedance_mode must be one of {IMPEDANCE_MODES}, got {impedance_mode!r}")
        if saturation not in SATURATIONS:
            raise ValueError(f"saturation must be one of {SATURATIONS}, got {saturation!r}")
        if qp_weight not in QP_WEIGHTS:
            raise ValueError(f"qp_weight must be one of {QP_WEIGHTS}, got {qp_weight!r}")
        if task_damping < 0 or nullspace_kp < 0:
            raise ValueError("task_damping and nullspace_kp must be >= 0")
        layout = OSCStateLayout(n_joints)
        n_gains = {"fixed": 0, "variable_kp": 6, "variable": 12}[impedance_mode]
        inf = float("inf")
        if delta_limit is None:
            dlo, dhi = None, None
        else:
            d = _gain(delta_limit, "delta_limit")
            dlo = torch.cat([torch.full((n_gains,), -inf, dtype=torch.float64), -d])
            dhi = torch.cat([torch.full((n_gains,), inf, dtype=torch.float64), d])
        if torque_limit is None:
            tlo = thi = None
        else:
            t = torch.as_tensor(torque_limit, dtype=torch.float64)
            t = t.expand(n_joints).clone() if t.dim() == 0 else t
            if t.shape != (n_joints,) or bool((t <= 0).any()):
                raise ValueError(f"torque_limit must be positive with shape ({n_joints},) or a scalar, got {t.tolist()}")
            tlo, thi = -t, t
        super().__init__(layout.dim, n_gains + 6, n_joints, horizon, dlo, dhi, tlo, thi)
        self.layout = layout
        self.impedance_mode, self.saturation, self.qp_weight = impedance_mode, saturation, qp_weight
        self.nullspace_kp, self.task_damping = float(nullspace_kp), float(task_damping)
        self.kp_limits, self.damping_ratio_limits = tuple(map(float, kp_limits)), tuple(map(float, damping_ratio_limits))
        self.kp = nn.Parameter(_gain(kp, "kp"), requires_grad=trainable_gains)
        self.damping_ratio = nn.Parameter(_gain(damping_ratio, "damping_ratio"), requires_grad=trainable_gains)

    # ------------------------------------------------------------------ gains and goal
    def gains(self, z: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """``(kp, kd, delta)`` for ``z (B, dz)``: gains ``(6,)`` or ``(B, 6)``, delta ``(B, 6)``."""
        if self.impedance_mode == "fixed":
            kp, ratio = self.kp.to(z), self.damping_ratio.to(z)
        elif self.impedance_mode == "variable_kp":
            kp, ratio = z[:, :6].clamp(*self.kp_limits), torch.ones_like(z[:, :6])
        else:
            ratio, kp = z[:, :6].clamp(*self.damping_ratio_limits), z[:, 6:12].clamp(*self.kp_limits)
        return kp, 2.0 * kp.sqrt() * ratio, z[:, -6:]

    def context(self, state0: Tensor) -> Context:
        """``{"pos0" (B, 3), "rot0" (B, 3, 3)}``: the pose the goal is set from (first sub-step)."""
        check_tensor("state0", state0, ("B", self.state_dim))
        s = self.layout.unpack(state0)
        return {"pos0": s["pos"], "rot0": s["rot"]}

    def goal(self, delta: Tensor, context: Context) -> Tuple[Tensor, Tensor]:
        """``(goal_pos (B, 3), goal_rot (B, 3, 3))`` for pose deltas ``delta (B, 6)``."""
        return context["pos0"] + delta[:, :3], axis_angle_to_matrix(delta[:, 3:]) @ context["rot0"]

    # ------------------------------------------------------------------ contract
    def law(self, state: Tensor, z: Tensor, context: Context, step: int) -> Tensor:
        kp, kd, delta = self.gains(z)
        goal_pos, goal_rot = self.goal(delta, context)
        return osc_torques(self.layout.unpack(state), goal_pos, goal_rot, kp, kd, self.nullspace_kp, self.task_damping)

    def saturate(self, action: Tensor, state: Tensor, context: Context) -> Tensor:
        """Clip to ``+-torque_limit``, or project exactly by the QP (``saturation="qp"``)."""
        if self.saturation == "none":
            return action
        if self.saturation == "clip" or self.qp_weight == "identity":
            return super().saturate(action, state, context)
        low, high = self.action_low.to(action), self.action_high.to(action)
        if bool(torch.isinf(high).all()) and bool(torch.isinf(low).all()):
            return action
        M = self.layout.unpack(state)["mass"]
        W = torch.linalg.inv(M) if self.qp_weight == "mass_inverse" else M
        W = 0.5 * (W + W.transpose(-1, -2))
        sol = solve_qp(W, -_mv(W, action), low, high, check_psd=False)
        return torch.where(sol.ok[:, None], sol.x, torch.clamp(action, low, high))

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, impedance_mode={self.impedance_mode!r}, saturation={self.saturation!r}, "
                f"task_damping={self.task_damping}")
