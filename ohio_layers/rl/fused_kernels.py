"""Compiled (numba) element-wise kernels of the fused offline-RL updates (:mod:`~ohio_layers.rl.fused`).

The losses between the networks' matrix products are a few dozen element-wise tensor ops on
``(256, 7)`` arrays, each costing more in dispatch than in arithmetic; one compiled loop per loss
replaces them. numba is the optional extra ``fastqp``: without it (or after
``set_compiled(False)``) :mod:`~ohio_layers.rl.fused` runs its torch version, whose values are
autograd's bit for bit; the compiled loops accumulate in float64 in another order, so they agree
with it to float32 rounding (``tests/rl/test_fused.py`` compares both with autograd). The first use
compiles the loops (~1-2 s once; numba caches them on disk).
"""
from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np

try:  # pragma: no cover - exercised when numba is installed (the fastqp extra)
    import numba

    _njit = numba.njit(cache=True, nogil=True, error_model="numpy")
    _AVAILABLE = True
except ImportError:  # pragma: no cover
    _njit = None
    _AVAILABLE = False

__all__ = ["available", "set_compiled", "compiled_enabled", "tanh_gaussian_nll_grad", "expectile_value_grad",
           "iql_weights_and_targets", "twin_squared_error_grad"]

_ENABLED: List[bool] = [True]
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def available() -> bool:
    """numba is installed, so the compiled kernels can run."""
    return _AVAILABLE


def set_compiled(enabled: bool) -> None:
    """Use (``True``, the default, when numba is installed) or never use the compiled kernels."""
    _ENABLED[0] = bool(enabled)


def compiled_enabled() -> bool:
    """Whether the fused updates use the compiled kernels (numba installed and not switched off)."""
    return _AVAILABLE and _ENABLED[0]


def _tanh_gaussian_nll_grad(out: np.ndarray, act: np.ndarray, low: np.ndarray, high: np.ndarray,
                            weights: np.ndarray, log_std: np.ndarray, state_dependent: bool, unit_lo: np.float32,
                            unit_hi: np.float32, log_std_min: float, log_std_max: float, grad: np.ndarray,
                            grad_log_std: np.ndarray) -> float:
    b, da = act.shape
    log_det = 0.0
    for j in range(da):
        log_det += math.log(np.float32(0.5) * (high[j] - low[j]))
    # a learned log-std vector: its clamp and exp once per dimension, not per row
    ls_vec = np.empty(da)
    inv_vec = np.empty(da)
    inside_vec = np.empty(da, dtype=np.bool_)
    if not state_dependent:
        for j in range(da):
            grad_log_std[j] = 0.0
            ls_vec[j] = min(max(float(log_std[j]), log_std_min), log_std_max)
            inv_vec[j] = math.exp(-ls_vec[j])
            inside_vec[j] = log_std_min <= log_std[j] <= log_std_max
    total = 0.0
    for i in range(b):
        w = weights[i] if weights.shape[0] > 0 else 1.0
        scale = -w / b
        logp = -log_det
        for j in range(da):
            # the unit action and its clamp in float32, as ActionScaler.to_unit and the torch clamp round them
            u = (act[i, j] - np.float32(0.5) * (high[j] + low[j])) / (np.float32(0.5) * (high[j] - low[j]))
            u = float(min(max(u, unit_lo), unit_hi))
            lp, lm = math.log1p(u), math.log1p(-u)
            x = 0.5 * (lp - lm)  # atanh(u)
            if state_dependent:
                raw = out[i, da + j]
                ls = min(max(float(raw), log_std_min), log_std_max)
                inv_std = math.exp(-ls)
                inside = log_std_min <= raw <= log_std_max
            else:
                ls, inv_std, inside = ls_vec[j], inv_vec[j], inside_vec[j]
            z = (x - out[i, j]) * inv_std
            # log(1 - tanh(x)^2) = log(1 - u^2) = log(1 + u) + log(1 - u)
            logp += -0.5 * z * z - ls - _HALF_LOG_2PI - (lp + lm)
            grad[i, j] = z * inv_std * scale
            g_ls = (z * z - 1.0) * scale if inside else 0.0
            if state_dependent:
                grad[i, da + j] = g_ls
            else:
                grad_log_std[j] += g_ls
        total += w * logp
    return -total / b


_tanh_gaussian_nll_grad_c = _njit(_tanh_gaussian_nll_grad) if _AVAILABLE else _tanh_gaussian_nll_grad


def tanh_gaussian_nll_grad(out: np.ndarray, act: np.ndarray, low: np.ndarray, high: np.ndarray,
                           weights: np.ndarray, log_std: np.ndarray, state_dependent: bool, atanh_eps: float,
                           log_std_min: float, log_std_max: float, grad: np.ndarray,
                           grad_log_std: np.ndarray) -> float:
    """Weighted NLL of env-scale actions under the tanh-squashed Gaussian and its gradients, in one loop.

    ``loss = -mean_b w_b log pi(a_b)`` with :meth:`~ohio_layers.rl.networks.TanhGaussianActor.log_prob`'s
    density (actions to the unit box, clamped to ``[-1 + eps, 1 - eps]``, ``atanh``; ``log_std`` clamped).

    Args:
        out: the trunk's output ``(B, da)`` (means) or ``(B, 2 da)`` (means, raw log-stds) if ``state_dependent``.
        act: actions ``(B, da)``; ``low, high``: the action bounds ``(da,)``.
        weights: ``(B,)``, or ``(0,)`` for all ones.
        log_std: the learned raw log-std ``(da,)`` (read when not ``state_dependent``).
        grad: written, ``d loss / d out``, shaped like ``out`` (zero where the log-std clamp is active).
        grad_log_std: written when not ``state_dependent``: ``d loss / d log_std (da,)``.
    Returns:
        the loss (float).
    """
    return _tanh_gaussian_nll_grad_c(out, act, low, high, weights, log_std, state_dependent,
                                     np.float32(-1.0 + atanh_eps), np.float32(1.0 - atanh_eps),
                                     float(log_std_min), float(log_std_max), grad, grad_log_std)


def _expectile_value_grad(q1: np.ndarray, q2: np.ndarray, v: np.ndarray, expectile: float, q_target: np.ndarray,
                          grad: np.ndarray) -> float:
    b = v.shape[0]
    total = 0.0
    for i in range(b):
        a, c = q1[i, 0], q2[i, 0]
        qt = a if (a != a or a < c) else c  # torch.minimum: a NaN in either wins (the builtin min drops a second one)
        q_target[i] = qt
        diff = float(qt) - float(v[i, 0])
        weight = 1.0 - expectile if diff < 0 else expectile
        total += weight * diff * diff
        grad[i, 0] = -2.0 * weight * diff / b
    return total / b


def _iql_weights_and_targets(q_target: np.ndarray, values: np.ndarray, rewards: np.ndarray, discounts: np.ndarray,
                             terminals: np.ndarray, temperature: float, max_weight: float, weights: np.ndarray,
                             target: np.ndarray) -> Tuple[float, float]:
    b = q_target.shape[0]
    adv_sum = 0.0
    weight_sum = 0.0
    for i in range(b):
        adv = np.float32(q_target[i] - values[i, 0])  # float32, as the torch version rounds it before exp
        w = min(math.exp(temperature * float(adv)), max_weight)
        weights[i] = w
        adv_sum += adv
        weight_sum += weights[i]
        target[i] = rewards[i] + discounts[i] * (1.0 - terminals[i]) * float(values[b + i, 0])
    return adv_sum / b, weight_sum / b


def _twin_squared_error_grad(p1: np.ndarray, p2: np.ndarray, target: np.ndarray, g1: np.ndarray,
                             g2: np.ndarray) -> float:
    b = target.shape[0]
    total = 0.0
    for i in range(b):
        d1 = float(p1[i, 0]) - float(target[i])
        d2 = float(p2[i, 0]) - float(target[i])
        total += d1 * d1 + d2 * d2
        g1[i, 0] = 2.0 * d1 / b
        g2[i, 0] = 2.0 * d2 / b
    return total / b


if _AVAILABLE:
    _expectile_value_grad_c = _njit(_expectile_value_grad)
    _iql_weights_and_targets_c = _njit(_iql_weights_and_targets)
    _twin_squared_error_grad_c = _njit(_twin_squared_error_grad)
else:  # pragma: no cover
    _expectile_value_grad_c, _iql_weights_and_targets_c, _twin_squared_error_grad_c = (
        _expectile_value_grad, _iql_weights_and_targets, _twin_squared_error_grad)


def expectile_value_grad(q1: np.ndarray, q2: np.ndarray, v: np.ndarray, expectile: float, q_target: np.ndarray,
                         grad: np.ndarray) -> float:
    """IQL's value loss ``mean |tau - 1(u < 0)| u^2``, ``u = min(q1, q2) - v``, and its gradient.

    Args:
        q1, q2: the target critics' outputs ``(B, 1)``; ``v``: the value network's ``(B, 1)``.
        q_target: written, ``min(q1, q2) (B,)``; ``grad``: written, ``d loss / d v (B, 1)``.
    Returns:
        the loss (float).
    """
    return _expectile_value_grad_c(q1, q2, v, float(expectile), q_target, grad)


def iql_weights_and_targets(q_target: np.ndarray, values: np.ndarray, rewards: np.ndarray, discounts: np.ndarray,
                            terminals: np.ndarray, temperature: float, max_weight: float, weights: np.ndarray,
                            target: np.ndarray) -> Tuple[float, float]:
    """IQL's advantage weights ``min(exp(beta (q_target - V(s))), w_max)`` and TD targets ``r + gamma (1 - d) V(s')``.

    Args:
        q_target: ``min_i Qbar_i(s, a) (B,)``; ``values``: ``V(s)`` then ``V(s')``, ``(2 B, 1)``.
        rewards, discounts, terminals: ``(B,)``.
        weights, target: written, ``(B,)``.
    Returns:
        ``(mean advantage, mean weight)`` (floats).
    """
    return _iql_weights_and_targets_c(q_target, values, rewards, discounts, terminals, float(temperature),
                                      float(max_weight), weights, target)


def twin_squared_error_grad(p1: np.ndarray, p2: np.ndarray, target: np.ndarray, g1: np.ndarray,
                            g2: np.ndarray) -> float:
    """``mean (p1 - target)^2 + mean (p2 - target)^2`` of two critics' outputs ``(B, 1)`` towards ``target (B,)``;
    writes the gradients ``g1, g2 (B, 1)``. Returns the loss (float)."""
    return _twin_squared_error_grad_c(p1, p2, target, g1, g2)
