"""Identify a low-level controller's own parameters from data, jointly with the per-window z.

Real logs rarely say which gains, cost weights or limits the controller ran. The controllers
here are differentiable in their parameters, so the residual that recovers z also recovers them::

    min_{theta, z_1..z_N}  sum_w || W_w^(1/2) (pi_lo(s_w, z_w; theta) - a_w) ||^2  +  prior(theta)

over windows ``w`` of recorded sub-step states ``s`` and actions ``a`` (teacher forcing: no
dynamics model). It is solved by *variable projection*: for a given ``theta`` every ``z_w`` has
a fast exact inverse (``OSCInverse`` for the OSC, Gauss-Newton for any other controller, exact in
one step for controllers affine in z), so Levenberg-Marquardt runs on ``theta`` alone, with
``z`` eliminated (Kaufman's Jacobian ``(I - J_z J_z^+) J_theta``, per window). ``theta`` is
log-parametrised (positive parameters, relative steps, multiplicative bounds) and may carry a
log-normal prior.

Which parameters are unknown is said by name (:class:`Unknown`): any ``nn.Parameter`` or float
buffer of the controller (``"kp"``, ``"damping_ratio"``, ``"Q"``, a custom controller's
``"gain"``), optionally tying entries into groups (the OSC's position / orientation axes,
the diagonal of ``Q``). No controller-specific code is needed: the Jacobians come from
forward-mode AD through ``torch.func.functional_call``.

Recorded actions at the controller's action limits carry no equation (weight 0, as in the OSC
inverse); unknown symmetric limits are identified first from where the recorded actions pile up
(:func:`identify_action_limits`).

Every estimate comes with an uncertainty report (:class:`Identification`): the Gauss-Newton
Hessian's condition number, per-parameter standard errors and an ``identifiable`` flag with the
reason when the data cannot determine a parameter (a null direction of the Hessian -- e.g. a
damping ratio on windows with no velocity, or the common scale of LQR weights --, a negligible
sensitivity, a large standard error, an estimate stuck at its bound, or no convergence). Use
:meth:`Identification.apply` to get the identified controller; it refuses unidentified
parameters unless told otherwise. Mixed datasets (several withheld settings): :mod:`.mixed`.

Device: identification runs on the CPU in float64 (the parametrisation's bounds, prior and
selection matrices and the Levenberg-Marquardt system on ``theta`` are host tensors; ``theta``
has a handful of entries, so a GPU would not help that part). Give it a CPU controller; relabel
with the identified controller on any device afterwards.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._validate import check_tensor
from ..data.dataset import Dataset, window_starts
from ..lowlevel.base import LowLevelController
from .parametric import (OSC_AXIS_GROUPS, DataResidual, Parametrisation, Unknown, UnknownLike, diagonal_unknown,
                         find_parameters, gauss_newton_z, get_tensor, osc_unknowns, residual_jacobians, weighted_pinv_apply)

__all__ = ["Unknown", "osc_unknowns", "diagonal_unknown", "find_parameters", "OSC_AXIS_GROUPS", "Identification",
           "Identifier", "identify", "dataset_windows", "identify_action_limits", "saturation_weights", "default_inner"]


# ------------------------------------------------------------------------------ limits
def identify_action_limits(actions: Tensor, min_hits: int = 3, rtol: float = 1e-9) -> Dict[str, Tensor]:
    """Symmetric action limits ``(da,)`` from where recorded actions ``(..., da)`` pile up.

    A clipped (saturating) controller records exactly ``+-limit`` whenever it saturates; unclipped
    continuous actions practically never repeat their extreme value. Joint ``i``'s limit is
    identified as ``max |a_i|`` when at least ``min_hits`` records equal it (relative ``rtol``).
    Otherwise the data show only ``limit >= max |a_i|`` (``identified[i] = False``).

    Returns ``{"limit" (da,), "identified" (da,) bool, "hits" (da,) int}``.
    """
    a = actions.reshape(-1, actions.shape[-1]).abs()
    top = a.amax(0)
    hits = (a >= top * (1.0 - rtol)).sum(0)
    return {"limit": top, "identified": hits >= min_hits, "hits": hits}


def saturation_weights(controller: LowLevelController, actions: Tensor, tol: float = 1e-9) -> Tensor:
    """``(N, k da)`` 0/1 weights: 0 where a recorded action ``(N, k, da)`` sits at the controller's limits."""
    high, low = controller.action_high.to(actions), controller.action_low.to(actions)
    at = (actions >= high - tol) | (actions <= low + tol) | ~torch.isfinite(actions)
    return (~at).to(actions.dtype).reshape(actions.shape[0], -1)


# ------------------------------------------------------------------------------ result
@dataclass
class Identification:
    """Estimated parameters of one group of windows (an episode or a whole dataset), with uncertainty.

    Attributes:
        labels: ``(p,)`` names of the free values (``"kp.pos"``, ``"Q[5]"``, ...).
        estimate, initial: ``(p,)`` identified and starting values.
        std_error: ``(p,)`` standard errors (delta method on the log-parameters: ``value * sd(log)``;
            ``inf`` where the data do not determine the parameter at all -- zero sensitivity or a null
            direction; finite but flagged where it is only too uncertain, at a bound or not converged).
        identifiable: ``(p,)`` bool; ``reasons[i]`` says why not ("" when identifiable).
        condition: condition number of the scaled data Hessian ``J'WJ`` (z eliminated).
        residual_rms: RMS of the weighted residual over used equations (units of the actions).
        relative_residual: ``||r||_W / ||a||_W`` -- large means the controller model does not fit.
        windows, equations: data used (equations = unsaturated recorded action entries).
        converged, iterations: the outer LM's own stopping test and iteration count.
        values: the full identified tensors by name (for :meth:`apply`).
        z: ``(N, dz)`` the windows' z at the estimate.
        group: the episode id (or ``None`` for a whole dataset).
        limits: identified action limits, when asked for (:func:`identify`).
    """

    labels: List[str]
    estimate: np.ndarray
    initial: np.ndarray
    std_error: np.ndarray
    identifiable: np.ndarray
    reasons: List[str]
    condition: float
    residual_rms: float
    relative_residual: float
    windows: int
    equations: int
    converged: bool
    iterations: int
    values: Dict[str, Tensor] = field(repr=False)
    z: Tensor = field(repr=False)
    group: Any = None
    limits: Optional[Dict[str, Any]] = None
    parametrisation: Optional[Parametrisation] = field(default=None, repr=False)

    @property
    def all_identifiable(self) -> bool:
        return bool(self.identifiable.all())

    def as_dict(self) -> Dict[str, float]:
        return {k: float(v) for k, v in zip(self.labels, self.estimate)}

    def apply(self, controller: nn.Module, strict: bool = True) -> nn.Module:
        """A copy of ``controller`` with the identified values (and action limits, if identified).

        ``strict``: raise ``ValueError`` naming the parameters the data could not identify (their
        value would be the starting value, a prior's or an arbitrary point of a null direction).
        """
        if strict and not self.all_identifiable:
            bad = {lab: why for lab, why, ok in zip(self.labels, self.reasons, self.identifiable) if not ok}
            raise ValueError(f"not identifiable from these data (group {self.group}): {bad}; pass strict=False to use "
                             f"the estimates anyway, or add data / a prior")
        out = copy.deepcopy(controller)
        with torch.no_grad():
            for name, v in self.values.items():
                t = get_tensor(out, name)
                t.copy_(v.to(t))
            if self.limits is not None:
                lim = torch.as_tensor(self.limits["limit"])
                out.action_high.copy_(lim.to(out.action_high))
                out.action_low.copy_((-lim).to(out.action_low))
        return out

    def with_estimate(self, estimate: np.ndarray, identifiable: np.ndarray) -> "Identification":
        """A copy holding other values ``(p,)`` of the free parameters (e.g. a cluster's pooled values)."""
        if self.parametrisation is None:
            raise ValueError("this Identification has no parametrisation to rebuild its tensors from")
        out = copy.copy(self)
        out.estimate, out.identifiable = np.asarray(estimate, dtype=np.float64), np.asarray(identifiable, dtype=bool)
        out.reasons = [why if not ok else "" for why, ok in zip(self.reasons, out.identifiable)]
        theta = torch.as_tensor(out.estimate)
        out.values = {k: v.detach().clone() for k, v in self.parametrisation.values(theta, theta).items()}
        return out

    @classmethod
    def from_summary(cls, summary: Dict[str, Any]) -> "Identification":
        """A light copy rebuilt from :meth:`summary` (JSON): enough to cluster, not to :meth:`apply`."""
        labels = list(summary["estimate"])
        est = np.array([summary["estimate"][g] for g in labels], dtype=np.float64)
        return cls(labels, est, est, np.array([summary["std_error"][g] for g in labels], dtype=np.float64),
                   np.array([summary["identifiable"][g] for g in labels]), [summary["reasons"].get(g, "") for g in labels],
                   summary["condition"], summary["residual_rms"], summary["relative_residual"], summary["windows"],
                   summary["equations"], summary["converged"], summary["iterations"], {}, torch.zeros(0), summary["group"])

    def summary(self) -> Dict[str, Any]:
        """JSON-ready report."""
        return {"group": self.group if not isinstance(self.group, np.generic) else self.group.item(),
                "estimate": self.as_dict(), "std_error": dict(zip(self.labels, map(float, self.std_error))),
                "identifiable": dict(zip(self.labels, map(bool, self.identifiable))),
                "reasons": {k: r for k, r in zip(self.labels, self.reasons) if r}, "condition": self.condition,
                "residual_rms": self.residual_rms, "relative_residual": self.relative_residual, "windows": self.windows,
                "equations": self.equations, "converged": self.converged, "iterations": self.iterations,
                "limits": self.limits}


# ------------------------------------------------------------------------------ the solver
Inner = Callable[[LowLevelController, Tensor, Tensor, Tensor, Optional[Tensor]], Tensor]
"""``(controller, states (N, k, ds), actions (N, k, da), weight (N, k da), z0 (N, dz) or None) -> z (N, dz)``."""


def default_inner(controller: LowLevelController, saturation_tol: float = 1e-9) -> Optional[Inner]:
    """The exact z-inverse for ``controller``: the OSC inverse for a fixed-impedance OSC, else ``None``
    (weighted Gauss-Newton through the controller, generic). The identifier calls it from the default
    start (``z0=None``) and from the previous z and keeps the better per window."""
    from ..lowlevel.osc import OperationalSpaceController
    from .osc_inverse import OSCInverse

    if isinstance(controller, OperationalSpaceController) and controller.impedance_mode == "fixed" \
            and controller.saturation in ("clip", "none"):
        inv = OSCInverse(refine=False, saturation_tol=saturation_tol)  # the same equations as the outer cost
        return lambda c, states, actions, weight, z0: inv.invert(c, states, actions, z0).z
    return None


@dataclass
class Identifier:
    """Variable-projection Levenberg-Marquardt on log-parameters (module docstring).

    Args:
        max_iter: outer iterations.
        damping: initial LM damping (``/3`` on success, ``x4`` on failure).
        xtol: stop when the log-step is below ``xtol`` (relative change of every value).
        ftol: stop when an accepted step lowers the cost by a relative ``< ftol`` (or the cost falls
            below ``1e-24`` of the data's, a relative residual of ``1e-12``).
        rcond: relative eigenvalue cut of the per-window ``J_z'WJ_z`` pseudo-inverse.
        null_tol: eigenvalues of the scaled data Hessian below ``null_tol`` are null directions.
        min_sensitivity: a parameter whose profile sensitivity (residual change per unit log-change,
            other parameters and z re-optimised) is below ``min_sensitivity ||a||_W`` is not identifiable.
        max_rel_std_error: relative standard error above which a parameter is flagged.
        saturation_tol: recorded actions within this of a limit carry no equation.
        free_z: drop the controller's z bounds while identifying (a clipped delta range is not a
            parameter of the law; the data hold the applied z).
        inner_iters: Gauss-Newton iterations of the generic z-inverse.
        noise_std: standard deviation of the action noise, which sets a prior's weight against the
            data (``None``: estimated from a first, data-only fit). Without priors it is not used.
        verbose: print every outer iteration.
    """

    max_iter: int = 50
    damping: float = 1e-3
    xtol: float = 1e-8
    ftol: float = 1e-14
    rcond: float = 1e-12
    null_tol: float = 1e-8
    min_sensitivity: float = 1e-7
    max_rel_std_error: float = 0.05
    saturation_tol: float = 1e-9
    free_z: bool = True
    inner_iters: int = 25
    noise_std: Optional[float] = None
    verbose: bool = False

    def identify(self, controller: LowLevelController, states: Tensor, actions: Tensor,
                 unknowns: Sequence[UnknownLike], inner: Optional[Inner] = None, z0: Optional[Tensor] = None,
                 group: Any = None) -> Identification:
        """Identify ``unknowns`` from windows ``states (N, k, ds)``, ``actions (N, k, da)`` (one group)."""
        if not isinstance(controller, LowLevelController):
            raise TypeError(f"controller must be a LowLevelController, got {type(controller).__name__}")
        check_tensor("states", states, ("N", None, controller.state_dim))
        N, k = states.shape[:2]
        check_tensor("actions", actions, (N, k, controller.action_dim))
        if N < 1:
            raise ValueError("states must hold at least one window")
        c = copy.deepcopy(controller).to(torch.float64).requires_grad_(False)
        states, actions = states.detach().to(torch.float64), actions.detach().to(torch.float64)
        if self.free_z:
            c.z_low.fill_(-math.inf)
            c.z_high.fill_(math.inf)
        par = Parametrisation(c, unknowns)
        fn = DataResidual(c)
        weight = saturation_weights(c, actions, self.saturation_tol)
        inner = inner if inner is not None else default_inner(c, self.saturation_tol)
        signal = float((weight * actions.reshape(N, -1) ** 2).sum())
        dz = c.z_dim

        def window_cost(zs: Tensor) -> Tensor:
            with torch.no_grad():
                return (weight * fn(zs, states, actions) ** 2).sum(-1)

        def solve_z(theta: Tensor, zs: Optional[Tensor]) -> Tensor:
            par.write(c, theta)
            if inner is None:
                start = torch.zeros(N, dz, dtype=torch.float64) if zs is None else zs
                return gauss_newton_z(fn, par, theta, start, states, actions, weight, self.inner_iters, self.rcond)
            # from the default start and from the previous z, the better per window: a cold start alone
            # lets badly determined (saturated) windows jump between roots under tiny changes of theta,
            # a warm start alone keeps roots found at an early, wrong theta
            z = inner(c, states, actions, weight, None).detach()
            if zs is not None:
                warm = inner(c, states, actions, weight, zs).detach()
                z = torch.where((window_cost(warm) < window_cost(z))[:, None], warm, z)
            return z

        def data_cost(theta: Tensor, zs: Tensor) -> float:
            with torch.no_grad():
                return 0.5 * float((weight * fn(zs, states, actions) ** 2).sum())

        def fit(prior_scale: float) -> Tuple[Tensor, Tensor, Tensor, Tensor, bool, int]:
            return self._fit(par, fn, solve_z, data_cost, states, actions, weight, signal, z0, prior_scale)

        x, theta, z, H, converged, it = fit(0.0)
        prior_scale = 0.0
        if bool(torch.isfinite(par.prior_std).any()):
            # the prior weighs against the data in units of the noise: known, or estimated from the data-only fit
            prior_scale = self.noise_std ** 2 if self.noise_std is not None else \
                self._noise_variance(fn, par, theta, z, states, actions, weight)
            x, theta, z, H, converged, it = fit(prior_scale)
        par.write(c, theta)
        return self._report(par, fn, x, theta, z, H, states, actions, weight, signal, converged, it, group, prior_scale)

    def _fit(self, par, fn, solve_z, data_cost, states, actions, weight, signal, z0, prior_scale):  # noqa: ANN001, ANN202
        """The LM loop on ``x = log(theta)``; returns ``(x, theta, z, H_data, converged, iterations)``."""
        inv_var = torch.where(torch.isfinite(par.prior_std), prior_scale / par.prior_std ** 2, torch.zeros_like(par.prior_std))
        Hp = torch.diag(inv_var)

        def prior_cost(x: Tensor) -> float:
            return 0.5 * float((inv_var * (x - par.prior_mean) ** 2).sum())

        x = par.init.log()
        theta = x.exp()
        z = solve_z(theta, z0)
        cost = data_cost(theta, z) + prior_cost(x)
        lam, converged, it = self.damping, False, 0
        H, g = self._normal_equations(fn, par, theta, z, states, actions, weight)
        for it in range(1, self.max_iter + 1):
            A, b = H + Hp, g + inv_var * (x - par.prior_mean)
            scale = float(A.diagonal().amax().clamp_min(1e-300))
            step = -torch.linalg.solve(A + lam * (torch.diag(A.diagonal()) + 1e-12 * scale * torch.eye(par.size, dtype=A.dtype)), b)
            x_new = torch.minimum(torch.maximum(x + step, par.log_low), par.log_high)
            theta_new = x_new.exp()
            z_new = solve_z(theta_new, z)
            cost_new = data_cost(theta_new, z_new) + prior_cost(x_new)
            if self.verbose:
                print(f"identify it {it}: cost {cost:.6e} -> {cost_new:.6e}, lam {lam:.1e}, theta {theta_new.tolist()}")
            if cost_new < cost:
                rel = (cost - cost_new) / max(cost, 1e-300)
                moved = float((x_new - x).abs().max())
                x, theta, z, cost = x_new, theta_new, z_new, cost_new
                lam = max(lam / 3.0, 1e-12)
                H, g = self._normal_equations(fn, par, theta, z, states, actions, weight)
                if rel < self.ftol or moved < self.xtol or cost <= 1e-24 * max(signal, 1e-300):
                    converged = True
                    break
            else:
                lam *= 4.0
                if lam > 1e12 or float(step.abs().max()) < self.xtol:
                    converged = True  # no descent left at this point: a (local) minimum
                    break
        return x, theta, z, H, converged, it

    def _noise_variance(self, fn, par, theta, z, states, actions, weight) -> float:  # noqa: ANN001
        """Residual variance per used equation, net of the degrees of freedom z and theta absorb."""
        with torch.no_grad():
            r = fn(z, states, actions)
        used = int((weight > 0).sum())
        rank_z = int(torch.linalg.matrix_rank(self._z_jacobian_sample(fn, par, theta, z, states, actions, weight)).sum())
        return float((weight * r * r).sum()) / max(used - rank_z - par.size, 1)

    def _normal_equations(self, fn: DataResidual, par: Parametrisation, theta: Tensor, z: Tensor, states: Tensor,
                          actions: Tensor, weight: Tensor) -> Tuple[Tensor, Tensor]:
        """Data Gauss-Newton ``(H (p, p), g (p,))`` in log-parameters with z eliminated (Kaufman)."""
        with torch.no_grad():
            r, Jz, Jt = residual_jacobians(fn, par, theta, z, states, actions)
            Jx = Jt * theta  # d r / d log(theta)
            both = torch.cat([Jx, r.unsqueeze(-1)], -1)
            proj = both - Jz @ weighted_pinv_apply(Jz, weight, both, self.rcond)
            Jr, rr = proj[..., :-1], proj[..., -1]
            JtW = Jr.transpose(1, 2) * weight[:, None, :]
            return (JtW @ Jr).sum(0), (JtW @ rr.unsqueeze(-1)).squeeze(-1).sum(0)

    def _report(self, par, fn, x, theta, z, H, states, actions, weight, signal, converged, it, group,  # noqa: ANN001
                prior_scale: float) -> Identification:
        N = states.shape[0]
        with torch.no_grad():
            r = fn(z, states, actions)
        wr2 = float((weight * r * r).sum())
        used = int((weight > 0).sum())
        p = par.size
        d = H.diagonal().clamp_min(0.0)
        norm = math.sqrt(max(signal, 1e-300))
        floor = (self.min_sensitivity * norm) ** 2
        reasons = ["" for _ in range(p)]
        for i in range(p):
            if float(d[i]) <= floor:
                reasons[i] = "the data do not depend on it (zero sensitivity)" + \
                    (" -- its value is the prior's" if math.isfinite(float(par.prior_std[i])) else "")
        if prior_scale > 0:  # the posterior: a parameter pinned by its prior along a null direction is determined
            H = H + torch.diag(torch.where(torch.isfinite(par.prior_std), prior_scale / par.prior_std ** 2,
                                           torch.zeros_like(par.prior_std)))
        live = [i for i in range(p) if not reasons[i]]
        cov = torch.full((p, p), math.inf, dtype=torch.float64)
        condition = math.inf
        if live:
            sub = H[live][:, live]
            s = sub.diagonal().sqrt()
            Hs = sub / s[:, None] / s[None, :]
            evals, evecs = torch.linalg.eigh(Hs)
            condition = float(evals[-1] / evals[0]) if float(evals[0]) > 0 else math.inf
            null = evals < self.null_tol * evals[-1]
            for j in null.nonzero().flatten().tolist():
                v = evecs[:, j] / s  # the null direction in log-parameters (a common scale shows as equal entries)
                v = v / v.norm()
                members = [live[a] for a in range(len(live)) if abs(float(v[a])) > 0.1]
                for m in members:
                    others = [par.labels[o] for o in members if o != m]
                    reasons[m] = reasons[m] or (f"confounded with {others}" if others else "a null direction of the Hessian")
            inv = evecs @ torch.diag(torch.where(null, torch.zeros_like(evals), 1.0 / evals.clamp_min(1e-300))) @ evecs.T
            inv = inv / s[:, None] / s[None, :]
            sigma2 = prior_scale if prior_scale > 0 else self._noise_variance(fn, par, theta, z, states, actions, weight)
            for a, i in enumerate(live):
                if reasons[i]:
                    continue
                prof = 1.0 / math.sqrt(max(float(inv[a, a]), 1e-300))
                if prof < self.min_sensitivity * norm:
                    reasons[i] = f"negligible sensitivity ({prof / norm:.1e} of the data norm)"
                cov[i, i] = sigma2 * float(inv[a, a])
        rel_se = cov.diagonal().clamp_min(0).sqrt()
        for i in range(p):
            if not reasons[i] and float(rel_se[i]) > self.max_rel_std_error:
                reasons[i] = f"relative standard error {100 * float(rel_se[i]):.1f}% > {100 * self.max_rel_std_error:.1f}%"
            if not reasons[i] and (float(x[i]) <= float(par.log_low[i]) + 1e-9 or float(x[i]) >= float(par.log_high[i]) - 1e-9):
                reasons[i] = "stuck at its bound"
            if not reasons[i] and not converged:
                reasons[i] = f"not converged in {self.max_iter} iterations"
        est = theta.numpy().copy()
        se = np.where(np.isfinite(rel_se.numpy()), est * rel_se.numpy(), np.inf)
        values = {k: v.detach().clone() for k, v in par.values(theta, theta).items()}
        return Identification(list(par.labels), est, par.init.numpy().copy(), se, np.array([not r_ for r_ in reasons]),
                              reasons, condition, math.sqrt(wr2 / max(used, 1)), math.sqrt(wr2) / norm, N, used,
                              bool(converged), int(it), values, z.detach().clone(), group, parametrisation=par)

    def _z_jacobian_sample(self, fn, par, theta, z, states, actions, weight):  # noqa: ANN001, ANN202
        """Weighted per-window ``J_z`` (for the degrees of freedom the z absorb)."""
        with torch.no_grad():
            _, Jz, _ = residual_jacobians(fn, par, theta, z, states, actions, with_theta=False)
        return Jz * weight.sqrt().unsqueeze(-1)


# ------------------------------------------------------------------------------ datasets
def dataset_windows(dataset: Dataset, k: Optional[int] = None, states_key: str = "states", actions_key: str = "actions",
                    stride: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(states (N, k, ds), actions (N, k, da), episode_ids (N,))`` windows of a low-level dataset.

    Per-step arrays ``(T, ds)`` are cut into k-step windows inside episodes (``window_starts``);
    arrays that already hold sub-steps ``(T, k, ds)`` (the OSC's ``substep_states`` /
    ``substep_torques``) are one window per row.
    """
    dataset.require([states_key, actions_key, "episode_ids"])
    S, A = dataset[states_key], dataset[actions_key]
    if S.ndim == 3:
        if A.ndim != 3 or A.shape[:2] != S.shape[:2]:
            raise ValueError(f"{actions_key} must be (T, {S.shape[1]}, da) like {states_key} {S.shape}, got {A.shape}")
        return S, A, dataset["episode_ids"]
    if k is None:
        raise ValueError("k (steps per window) is required for per-step arrays")
    starts = window_starts(dataset, k, stride)
    rows = starts[:, None] + np.arange(k)[None, :]
    return S[rows], A[rows], dataset["episode_ids"][starts]


def identify(controller: LowLevelController, dataset: Dataset, unknowns: Sequence[UnknownLike], *, per: str = "episode",
             k: Optional[int] = None, states_key: str = "states", actions_key: str = "actions",
             action_limits: Optional[str] = None, identifier: Optional[Identifier] = None, inner: Optional[Inner] = None,
             progress: bool = True) -> List[Identification]:
    """Identify ``unknowns`` of ``controller`` from a low-level dataset, per episode (default) or for all of it.

    Args:
        per: ``"episode"`` (one :class:`Identification` per episode, ``group`` = its id) or ``"dataset"``.
        k: window length for per-step arrays (default ``controller.horizon``); see :func:`dataset_windows`.
        action_limits: ``None`` (the controller's limits are known), ``"dataset"`` or ``"episode"``:
            identify symmetric action limits from the pile-up of recorded actions
            (:func:`identify_action_limits`) over the whole dataset or per group, before the other
            parameters. Limits the data never reach are left at ``max(current, max |a|)`` and reported
            in ``Identification.limits``.
        identifier: solver settings (default :class:`Identifier()`).
    """
    if per not in ("episode", "dataset"):
        raise ValueError(f"per must be 'episode' or 'dataset', got {per!r}")
    if action_limits not in (None, "dataset", "episode"):
        raise ValueError(f"action_limits must be None, 'dataset' or 'episode', got {action_limits!r}")
    S, A, ids = dataset_windows(dataset, k or controller.horizon, states_key, actions_key)
    ident = identifier or Identifier()
    as_t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)  # noqa: E731
    groups = [(None, np.arange(len(ids)))] if per == "dataset" else \
        [(g, np.flatnonzero(ids == g)) for g in dict.fromkeys(ids.tolist())]
    base = controller
    if action_limits == "dataset":
        base, limits = _with_limits(controller, as_t(A))
    out = []
    for g, rows in tqdm(groups, desc="identify", unit="group", disable=not progress or len(groups) == 1):
        c, lim = (base, limits) if action_limits == "dataset" else \
            _with_limits(controller, as_t(A[rows])) if action_limits == "episode" else (controller, None)
        res = ident.identify(c, as_t(S[rows]), as_t(A[rows]), unknowns, inner=inner, group=g)
        res.limits = lim
        out.append(res)
    return out


def _with_limits(controller: LowLevelController, actions: Tensor) -> Tuple[LowLevelController, Dict[str, Any]]:
    found = identify_action_limits(actions)
    c = copy.deepcopy(controller)
    current = c.action_high.to(torch.float64)
    limit = torch.where(found["identified"], found["limit"], torch.maximum(current, found["limit"]))
    with torch.no_grad():
        c.action_high.copy_(limit.to(c.action_high))
        c.action_low.copy_((-limit).to(c.action_low))
    return c, {"limit": limit.tolist(), "identified": found["identified"].tolist(), "hits": found["hits"].tolist()}
