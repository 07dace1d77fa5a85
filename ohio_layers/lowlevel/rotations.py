"""Batched rotation utilities with gradients that stay finite and informative at zero rotation.

Conventions: rotation matrices ``(..., 3, 3)`` act on column vectors; axis-angle vectors
``omega (..., 3)`` have the rotation angle as their norm; quaternions are ``(w, x, y, z)``.
"""
from __future__ import annotations

import torch
from torch import Tensor

_SMALL = 1e-4  # below this angle the series forms are exact to double precision


def skew(v: Tensor) -> Tensor:
    """Cross-product matrix ``[v]_x (..., 3, 3)`` of ``v (..., 3)`` (``[v]_x u = v x u``)."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(*v.shape[:-1], 3, 3)


def _sinc_terms(theta2: Tensor) -> "tuple[Tensor, Tensor]":
    """``(sin t / t, (1 - cos t) / t^2)`` as smooth functions of ``t^2``.

    Near zero both use their Taylor series in ``t^2``, so values and derivatives of every
    order are finite; elsewhere the closed forms (evaluated on a clamped angle so the unused
    branch never produces NaN gradients).
    """
    small = theta2 < _SMALL ** 2
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    t = safe2.sqrt()
    a_big = torch.sin(t) / t
    b_big = (1.0 - torch.cos(t)) / safe2
    a_small = 1.0 - theta2 / 6.0 + theta2 * theta2 / 120.0
    b_small = 0.5 - theta2 / 24.0 + theta2 * theta2 / 720.0
    return torch.where(small, a_small, a_big), torch.where(small, b_small, b_big)


def axis_angle_to_matrix(omega: Tensor) -> Tensor:
    """Rotation ``Exp(omega) (..., 3, 3)`` (Rodrigues, sinc form) of ``omega (..., 3)``.

    ``R = I + a(t) K + b(t) K^2`` with ``K = [omega]_x``, ``t = |omega|``, ``a = sin t / t``,
    ``b = (1 - cos t) / t^2``; smooth everywhere, with ``dR/domega_i = [e_i]_x`` at zero.
    """
    K = skew(omega)
    a, b = _sinc_terms((omega * omega).sum(-1))
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device)
    return eye + a[..., None, None] * K + b[..., None, None] * (K @ K)


def left_jacobian(omega: Tensor) -> Tensor:
    """Left Jacobian ``J_l(omega) (..., 3, 3)`` of the exponential map.

    ``d Exp(omega + eps v) / d eps = [J_l(omega) v]_x Exp(omega)`` at ``eps = 0``;
    ``J_l = I + b K + c K^2`` with ``b = (1 - cos t) / t^2`` and ``c = (t - sin t) / t^3``.
    """
    K = skew(omega)
    theta2 = (omega * omega).sum(-1)
    a, b = _sinc_terms(theta2)
    small = theta2 < _SMALL ** 2
    c = torch.where(small, 1.0 / 6.0 - theta2 / 120.0 + theta2 * theta2 / 5040.0,
                    (1.0 - a) / torch.where(small, torch.ones_like(theta2), theta2))
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device)
    return eye + b[..., None, None] * K + c[..., None, None] * (K @ K)


def axis_angle_to_quat(omega: Tensor) -> Tensor:
    """Unit quaternion ``(w, x, y, z) (..., 4)`` of ``omega (..., 3)``, smooth at zero."""
    half2 = 0.25 * (omega * omega).sum(-1)
    small = half2 < _SMALL ** 2
    safe2 = torch.where(small, torch.ones_like(half2), half2)
    h = safe2.sqrt()
    s_big = torch.sin(h) / h  # sin(t/2) / (t/2)
    s_small = 1.0 - half2 / 6.0 + half2 * half2 / 120.0
    w = torch.where(small, 1.0 - half2 / 2.0 + half2 * half2 / 24.0, torch.cos(h))
    s = 0.5 * torch.where(small, s_small, s_big)
    return torch.cat([w.unsqueeze(-1), s.unsqueeze(-1) * omega], -1)


def quat_to_matrix(q: Tensor) -> Tensor:
    """Rotation matrix ``(..., 3, 3)`` of a unit quaternion ``q = (w, x, y, z) (..., 4)``."""
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], -1).reshape(*q.shape[:-1], 3, 3)


def orientation_error(goal: Tensor, current: Tensor) -> Tensor:
    """robosuite's orientation error ``0.5 * sum_i current[:, i] x goal[:, i]``, ``(..., 3)``.

    For a small rotation ``goal = Exp(e) current`` it is approximately ``e`` (exactly
    ``sin(|e|) e / |e|``).
    """
    return 0.5 * torch.linalg.cross(current, goal, dim=-2).sum(-1)
