"""Amortised OSC relabelling: an :class:`~ohio_layers.inverse.AmortizedInverse` through the OSC_POSE controller.

The windows are the recorded transitions of the manipulation data (k = 1 decision = the
controller's 5 torque sub-steps; action matching on the recorded sub-step states, no dynamics).

*The first sub-step closed form* (:class:`OSCFirstStep`). At sub-step 0 the goal is set from the
state itself, so with the goal-independent terms ``P, O, d`` of that sub-step (see
:class:`~ohio_layers.lowlevel.osc.OSCTerms`)::

    tau_0 = P dp + O e + d,    e = e(Exp(dw) R_0, R_0) = sin|dw| dw / |dw|

seven equations, linear in ``(dp, e)``, and ``dw = asin|e| e / |e|``. Solved by least squares on
the joints whose recorded torque is not at its limit, this is *exact* on every transition with at
least six unclipped joints at sub-step 0 (about 90 % of scripted Lift transitions, 74 % have none
clipped; position error median 2e-13 m, p90 4e-9 m against ``OSCInverse``, see
``benchmarks/bench_amortized.py``) and costs one sub-step's OSC terms, a fifth of the structure
:class:`OSCInverse` builds before it iterates. Where more joints saturate it is only a guess: the network (trained without
labels through the clipped controller over all 5 sub-steps) learns the correction, from that guess,
the clip pattern, the recorded torques and the arm state.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ..data.dataset import Dataset
from ..data.io import PathLike
from ..lowlevel.osc import OperationalSpaceController, osc_terms
from .amortized import AmortizedInverse
from .osc_inverse import OSCInverse
from .problem import InverseProblem, WindowBatch
from .result import InverseResult

__all__ = ["OSCFirstStep", "osc_problem", "osc_windows", "osc_amortized_inverse", "AmortizedOSCRelabeler"]


def osc_problem(controller: OperationalSpaceController) -> InverseProblem:
    """Action matching over the controller's sub-steps (teacher forcing: no dynamics model)."""
    return InverseProblem(controller, match="actions")


def osc_windows(problem: InverseProblem, dataset: Dataset, rows: np.ndarray, dtype: torch.dtype = torch.float64,
                with_context: bool = True) -> WindowBatch:
    """The windows of recorded manipulation rows: ``substep_states (B, 5, ds)``, ``substep_torques (B, 5, n)``."""
    S = torch.as_tensor(np.ascontiguousarray(dataset["substep_states"][rows]), dtype=dtype)
    T = torch.as_tensor(np.ascontiguousarray(dataset["substep_torques"][rows]), dtype=dtype)
    return problem.batch(S[:, 0], states=S, actions=T, with_context=with_context)


class OSCFirstStep:
    """Features ``WindowBatch -> (x (B, f), z_base (B, 6), exact (B,))`` for an amortised OSC inverse.

    ``z_base`` is the first sub-step closed form (module docstring), ``exact`` marks the windows
    where at most one joint is clipped at sub-step 0 (at least six equations remain, so the closed
    form is exact and the network leaves it unchanged). ``x`` = the closed-form ``z_base``, the clip pattern of sub-step 0, the recorded torques over
    their limits (all sub-steps), joint positions and velocities at sub-step 0 and their changes
    over the sub-steps, the site rotation. Picklable; holds only the controller.

    Args:
        controller: the (fixed-impedance) OSC the network inverts.
        saturation_tol: a recorded torque within this of its limit counts as clipped.
        trust_first_step: mark the closed form exact where it solves the first sub-step exactly.
            Right when ``controller`` recorded the data; for other gains the data do not fit any z
            exactly and the best z over all sub-steps differs from the first sub-step's: pass ``False``
            (the network then corrects every window).
    """

    def __init__(self, controller: OperationalSpaceController, saturation_tol: float = 1e-9,
                 trust_first_step: bool = True) -> None:
        if not isinstance(controller, OperationalSpaceController) or controller.impedance_mode != "fixed":
            raise TypeError("OSCFirstStep needs an OperationalSpaceController with impedance_mode='fixed'")
        if controller.saturation not in ("clip", "none"):  # a QP projection moves the unclipped joints' torques too
            raise ValueError(f"OSCFirstStep needs saturation 'clip' or 'none' (the closed form is exact only there), "
                             f"got {controller.saturation!r}")
        self.controller, self.saturation_tol, self.trust_first_step = controller, float(saturation_tol), bool(trust_first_step)

    def closed_form(self, state0: Tensor, tau0: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """``(z (B, 6), clipped (B, n), solved (B,))`` from the first sub-step's state ``(B, ds)`` and torque
        ``(B, n)``; ``solved`` is False where the normal equations were singular (z is then 0).

        Solved in float64 whatever the inputs' dtype (the network trains in float32): with fewer than
        six unclipped rows the ridge is far below float32's precision, and training and inference must
        see the same ``z``. ``z`` comes back in the inputs' dtype.
        """
        c = self.controller
        dtype = tau0.dtype
        state0, tau0 = state0.double(), tau0.double()
        s = c.layout.unpack(state0)
        kp, kd, _ = c.gains(state0.new_zeros(1, 6))
        t = osc_terms(s, kp, kd, c.nullspace_kp, c.task_damping)
        A = torch.cat([t.pos_gain, t.ori_gain], -1)  # (B, n, 6): tau_0 = A (dp, e) + offset
        limit = c.action_high.to(tau0)
        clipped = tau0.abs() >= limit - self.saturation_tol
        w = (~clipped).to(A)
        AtW = A.transpose(-1, -2) * w[:, None]
        G = AtW @ A
        ridge = 1e-13 * G.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-30)  # min-norm-like where < 6 rows remain
        G = G + ridge[:, None, None] * torch.eye(6, dtype=A.dtype, device=A.device)
        sol, info = torch.linalg.solve_ex(G, AtW @ (tau0 - t.offset).unsqueeze(-1))
        x = torch.nan_to_num(sol.squeeze(-1)) * (info == 0)[:, None]  # a singular member: estimate 0, flagged by the residual
        dp, e = x[:, :3], x[:, 3:]
        norm = e.norm(dim=-1, keepdim=True)
        scale = torch.where(norm > 1e-12, torch.asin(norm.clamp(max=1.0)) / norm.clamp_min(1e-12), torch.ones_like(norm))
        return torch.cat([dp, e * scale], -1).to(dtype), clipped, info == 0

    def __call__(self, batch: WindowBatch) -> Tuple[Tensor, Tensor]:
        c = self.controller
        if batch.states is None or batch.actions is None:
            raise ValueError("OSCFirstStep needs action-matching windows (states (B, k, ds), actions (B, k, n))")
        z, clipped, solved = self.closed_form(batch.states[:, 0], batch.actions[:, 0])
        s = c.layout.unpack(batch.states)
        qq = torch.cat([s["q"], s["qdot"]], -1)  # (B, k, 2n)
        x = torch.cat([z, clipped.to(z), (batch.actions / c.action_high.to(z)).flatten(1), qq[:, 0],
                       (qq[:, 1:] - qq[:, :1]).flatten(1), s["rot"][:, 0].flatten(1)], -1)
        exact = (clipped.sum(-1) <= c.action_dim - 6) & solved
        return x, z, exact if self.trust_first_step else torch.zeros_like(exact)

    def __repr__(self) -> str:
        return f"OSCFirstStep(saturation_tol={self.saturation_tol}, trust_first_step={self.trust_first_step})"


def osc_amortized_inverse(controller: OperationalSpaceController, hidden: Tuple[int, ...] = (256, 256),
                          delta: float = 1.0, trust_first_step: bool = True, path: Optional[PathLike] = None,
                          **solve_options: Any) -> AmortizedInverse:
    """An :class:`AmortizedInverse` of ``controller`` with :class:`OSCFirstStep` features: untrained, or
    loaded from ``path`` (saved by ``AmortizedInverse.save``; ``hidden`` and ``delta`` then come from the file).

    ``delta = 1`` (not the reacher's 0.01): what is left to learn are the windows where two or more
    joints clip, and their errors are large; with 0.01 the robust loss treated them all as outliers and
    the network did not improve them (Lift, 10k transitions: position error p99 33 mm with 0.01 as
    with the closed form alone, 21 mm with 1, 18 mm with 10; p90 on windows clipped at the first
    sub-step 22, 9, 10 mm).
    """
    features = OSCFirstStep(controller, trust_first_step=trust_first_step)
    if path is not None:
        return AmortizedInverse.load(path, osc_problem(controller), features=features, **solve_options)
    return AmortizedInverse(osc_problem(controller), hidden=hidden, features=features, delta=delta, **solve_options)


class AmortizedOSCRelabeler:
    """Inverter ``(dataset, starts) -> InverseResult`` for :func:`~ohio_layers.inverse.relabel` with k = 1.

    z ``(B, 7)`` = the network's pose delta and the recorded gripper command, as
    :class:`~ohio_layers.inverse.osc_relabel.OSCRelabeler` returns.

    Args:
        inverse: a trained amortised inverse of the setting's controller.
        fallback: exact inverter (an ``OSCRelabeler``) for the windows whose torque residual is
            above ``tolerance``; its labels replace the network's there.
        tolerance: residual (N m, over the 35 sub-step torques) above which a window is flagged.
        compute_residual: evaluate the residual (always, when there is a fallback). ``False`` and no
            fallback is the network alone: residual NaN, ``converged`` False (nothing was checked).
    """

    def __init__(self, inverse: AmortizedInverse, fallback: Any = None, tolerance: Optional[float] = None,
                 compute_residual: bool = False) -> None:
        if fallback is not None and tolerance is None:
            raise ValueError("a fallback needs a tolerance (the residual above which a window is sent to it)")
        if tolerance is not None and not tolerance > 0:
            raise ValueError(f"tolerance must be > 0, got {tolerance}")
        self.inverse, self.fallback, self.tolerance = inverse, fallback, tolerance
        self.compute_residual = compute_residual or fallback is not None
        self.sent_to_fallback = 0  # windows flagged for the fallback so far (whether or not it improved them)

    def __call__(self, dataset: Dataset, starts: np.ndarray) -> InverseResult:
        p = self.inverse.problem
        batch = osc_windows(p, dataset, starts, with_context=self.compute_residual)
        self.inverse._check_fitted()
        with torch.no_grad():
            z = self.inverse(batch)
        n = len(starts)
        iters = torch.zeros(n, dtype=torch.int64)
        if not self.compute_residual:
            residual, converged = torch.full((n,), float("nan"), dtype=z.dtype), torch.zeros(n, dtype=torch.bool)
        else:
            residual = OSCInverse.residual(p.controller, z, batch.states, batch.actions).norm(dim=-1)
            converged = residual <= self.tolerance if self.tolerance is not None else torch.isfinite(residual)
        grip = torch.as_tensor(dataset["actions"][starts, 6:7], dtype=z.dtype)
        z = torch.cat([z, grip], -1)
        if self.fallback is not None:
            flagged = ~converged
            if bool(flagged.any()):
                idx = flagged.nonzero().squeeze(-1)
                fb = self.fallback(dataset, np.asarray(starts)[idx.numpy()])
                better = ~(fb.residual.to(residual) >= residual[idx])  # as AmortizedInverse.solve: NaN-safe, never worse
                pick = idx[better]
                z[pick], residual[pick] = fb.z[better].to(z), fb.residual[better].to(residual)
                converged[pick] = fb.converged[better]
                iters[idx] = fb.iterations.to(iters)
            self.sent_to_fallback += int(flagged.sum())
        return InverseResult(z, residual, converged, iters)

    def describe(self) -> str:
        fb = self.fallback.describe() if hasattr(self.fallback, "describe") else repr(self.fallback)
        return f"AmortizedOSC[{self.inverse.describe()}]|fallback={fb}|tol={self.tolerance}|residual={self.compute_residual}"
