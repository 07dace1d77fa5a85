"""Batched inverse solvers. Each has ``solve(problem, batch, z0=None) -> InverseResult``.

* :class:`AnalyticSolver` -- exact least squares of the *unsaturated* closed loop, which is
  affine in z for affine controllers and linear dynamics (pseudo-inverse or Tikhonov).
* :class:`LevenbergMarquardt` -- projected LM (Gauss-Newton with ``lam=0``) through the
  saturated closed loop, exact Jacobians by forward-mode AD.
* :class:`AdamSolver` -- plain gradient descent (Adam) through the saturated closed loop.
* :class:`CEMSolver` -- derivative-free cross-entropy method.

All samples of a batch are solved together as one tensor; each sample stops on its own test.
z is kept inside the controller's bounds (projection). Whatever the stopping rule, the returned
``converged`` is the common test of :mod:`ohio_layers.inverse.convergence` (one meaning for
every solver, see :mod:`ohio_layers.inverse.result`).

Device: every solver runs on the batch's device and returns its results there. The host syncs
are the stopping tests: LM compacts to the unfinished samples every iteration (one ``nonzero``,
which saves their Jacobians), CEM asks ``done.all()`` every iteration, Adam every ``patience``
iterations (when its test changes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from .._validate import check_tensor
from .convergence import finish
from .jacobian import residual_jacobian
from .problem import InverseProblem, WindowBatch
from .result import InverseResult


def check_setting(owner: object, name: str, low: float = 0.0, high: float = math.inf, *, integer: bool = False,
                  low_open: bool = False) -> None:
    """Raise naming ``owner.name`` unless it is a finite number (an int if ``integer``) in ``[low, high]``
    (``(low, high]`` if ``low_open``)."""
    v = getattr(owner, name)
    kind = "an int" if integer else "a finite number"
    if isinstance(v, bool) or not isinstance(v, (int, np.integer) if integer else (int, float, np.integer, np.floating)):
        raise TypeError(f"{type(owner).__name__}.{name} must be {kind}, got {v!r}")
    f = float(v)
    if not math.isfinite(f) or f < low or f > high or (low_open and f == low):
        rng = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if math.isinf(high) else ']'}"
        raise ValueError(f"{type(owner).__name__}.{name} must be {kind} in {rng}, got {v!r}")


def _initial_z(problem: InverseProblem, batch: WindowBatch, z0: Optional[Tensor]) -> Tensor:
    c = problem.controller
    if z0 is None:
        z0 = torch.zeros(len(batch), c.z_dim, dtype=batch.state0.dtype, device=batch.state0.device)
    check_tensor("z0", z0, (len(batch), c.z_dim))
    return c.clamp_z(z0.to(batch.state0))


def _least_squares(J: Tensor, r0: Tensor, ridge: float, rcond: float) -> Tensor:
    """``argmin_z ||r0 + J z||^2 + ridge ||z||^2`` for ``J (B, m, dz)``, ``r0 (B, m)``.

    Square systems use an LU solve; members that are singular or ill-conditioned beyond
    ``1 / rcond``, and non-square systems, use the SVD pseudo-inverse.
    """
    n, m, dz = J.shape
    rhs = -r0.unsqueeze(-1)
    if ridge > 0:
        eye = torch.eye(dz, dtype=J.dtype, device=J.device)
        Jt = J.transpose(1, 2)
        return torch.linalg.solve(Jt @ J + ridge * eye, Jt @ rhs).squeeze(-1)
    if m != dz:
        return (torch.linalg.pinv(J, rtol=rcond) @ rhs).squeeze(-1)
    z, info = torch.linalg.solve_ex(J, rhs)
    z = z.squeeze(-1)
    # solve_ex only flags exact singularity; also send ill-conditioned members (1-norm estimate) to the SVD
    cond = torch.linalg.matrix_norm(J, ord=1) * torch.linalg.matrix_norm(torch.linalg.inv_ex(J)[0], ord=1)
    bad = (info != 0) | ~torch.isfinite(z).all(-1) | ~(cond < 1.0 / rcond)
    if bool(bad.any()):
        idx = bad.nonzero().squeeze(-1)
        z[idx] = (torch.linalg.pinv(J[idx], rtol=rcond) @ rhs[idx]).squeeze(-1)
    return z


@dataclass
class AnalyticSolver:
    """Closed-form z for controllers affine in z with linear(ised) dynamics.

    The unsaturated residual is affine, ``r(z) = r0 + J z``, with ``r0`` and the exact J taken
    at ``z = 0``. ``z = -pinv(J) r0`` (``ridge = 0``; an LU solve when J is square and
    well-conditioned, singular values below ``rcond * s_max`` dropped otherwise) or
    ``z = -(J'J + ridge I)^{-1} J' r0``. The result is then projected onto the z bounds; the
    reported residual is that of the saturated problem at the returned z.
    """

    ridge: float = 0.0
    rcond: float = 1e-10

    def __post_init__(self) -> None:
        check_setting(self, "ridge")
        check_setting(self, "rcond", 0.0, 1.0, low_open=True)

    def solve(self, problem: InverseProblem, batch: WindowBatch, z0: Optional[Tensor] = None) -> InverseResult:
        c = problem.controller
        if not c.is_affine:
            raise TypeError(f"AnalyticSolver needs a controller affine in z; {type(c).__name__} does not implement affine()")
        n, x = len(batch), batch.state0
        with torch.no_grad():
            r0, J = residual_jacobian(problem, torch.zeros(n, c.z_dim, dtype=x.dtype, device=x.device), batch, saturate=False)
            z = _least_squares(J, r0, self.ridge, self.rcond)
            z = c.clamp_z(z)
        return finish(problem, batch, z, torch.zeros(n, dtype=torch.int64, device=x.device))


@dataclass
class LevenbergMarquardt:
    """Projected Levenberg-Marquardt through the saturated closed loop, batched.

    Step: ``(J'J + lam diag(J'J) + lam*eps I) dz = -J'r``; a step is kept only if it lowers the
    cost, then ``lam /= 3``, else ``lam *= 4``. A sample stops when its gradient
    ``||J'r||_inf <= gtol``, its cost ``<= ftol_abs``, or an accepted step changes the cost by a
    relative ``< ftol``, or the proposed step is shorter than ``xtol * (||z|| + xtol)``.
    ``damping=0`` gives Gauss-Newton (every step accepted). ``converged`` is the common test
    at the returned z (a sample stopped by ``max_iter`` can still pass it, one stopped by
    ``xtol`` on a flat region does not).
    """

    max_iter: int = 30
    damping: float = 1e-3
    gtol: float = 1e-10
    ftol: float = 1e-14
    ftol_abs: float = 1e-24
    xtol: float = 1e-10

    def __post_init__(self) -> None:
        check_setting(self, "max_iter", integer=True)
        for name in ("damping", "gtol", "ftol", "ftol_abs", "xtol"):
            check_setting(self, name)

    def solve(self, problem: InverseProblem, batch: WindowBatch, z0: Optional[Tensor] = None) -> InverseResult:
        c = problem.controller
        z = _initial_z(problem, batch, z0)
        n, dz = z.shape
        eye = torch.eye(dz, dtype=z.dtype, device=z.device)
        lam = torch.full((n,), self.damping, dtype=z.dtype, device=z.device)
        done = torch.zeros(n, dtype=torch.bool, device=z.device)
        iters = torch.zeros(n, dtype=torch.int64, device=z.device)
        with torch.no_grad():
            cost = problem.residual(z, batch).pow(2).sum(-1)
        for _ in range(self.max_iter):
            act = (~done).nonzero().squeeze(-1)
            if act.numel() == 0:
                break
            sub = select_windows(batch, act)
            za = z[act]
            with torch.no_grad():
                r, J = residual_jacobian(problem, za, sub)
                g = (J.transpose(1, 2) @ r.unsqueeze(-1)).squeeze(-1)
                H = J.transpose(1, 2) @ J
                small_grad = g.abs().amax(-1) <= self.gtol
                la = lam[act, None, None]
                A = H + la * torch.diag_embed(torch.diagonal(H, dim1=1, dim2=2)) + (la * 1e-9 + 1e-14) * eye
                step = -torch.linalg.solve(A, g.unsqueeze(-1)).squeeze(-1)
                z_new = c.clamp_z(za + step)
                cost_new = problem.residual(z_new, sub).pow(2).sum(-1)
                old = cost[act]
                accept = (cost_new < old) | (self.damping == 0)
                rel = (old - cost_new).abs() / old.clamp_min(1e-300)
                z[act] = torch.where(accept[:, None], z_new, za)
                cost[act] = torch.where(accept, cost_new, old)
                lam[act] = torch.where(accept, lam[act] / 3, lam[act] * 4).clamp(1e-12, 1e12)
                iters[act] += 1
                tiny_step = step.norm(dim=-1) <= self.xtol * (za.norm(dim=-1) + self.xtol)
                done[act] = small_grad | tiny_step | (cost[act] <= self.ftol_abs) | (accept & (rel < self.ftol))
        return finish(problem, batch, z, iters)


@dataclass
class AdamSolver:
    """Adam on ``||r(z)||^2`` through the saturated closed loop (the reference's numerical inverse).

    The learning rate decays exponentially from ``lr`` to ``lr * final_lr_ratio`` over
    ``max_iter`` iterations (``final_lr_ratio=1``, ``lr=0.01``, ``max_iter=1000`` are the
    reference code's settings). Per-sample early stop when the cost changes by a relative
    ``< ftol`` over ``patience`` iterations. Adam's moments are per coordinate, so summing the
    independent per-sample costs does not couple the samples.
    """

    lr: float = 0.1
    max_iter: int = 1000
    final_lr_ratio: float = 1e-3
    ftol: float = 1e-8
    patience: int = 10

    def __post_init__(self) -> None:
        check_setting(self, "lr", low_open=True)
        check_setting(self, "max_iter", integer=True)
        check_setting(self, "final_lr_ratio", 0.0, 1.0, low_open=True)
        check_setting(self, "ftol")
        check_setting(self, "patience", 1, integer=True)

    def solve(self, problem: InverseProblem, batch: WindowBatch, z0: Optional[Tensor] = None) -> InverseResult:
        c = problem.controller
        z = _initial_z(problem, batch, z0).clone().requires_grad_(True)
        n = z.shape[0]
        opt = torch.optim.Adam([z], lr=self.lr)
        decay = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=self.final_lr_ratio ** (1.0 / max(1, self.max_iter)))
        done = torch.zeros(n, dtype=torch.bool, device=z.device)
        iters = torch.zeros(n, dtype=torch.int64, device=z.device)
        last = torch.full((n,), float("inf"), dtype=z.dtype, device=z.device)
        for it in range(self.max_iter):
            cost = problem.residual(z, batch).pow(2).sum(-1)
            opt.zero_grad()
            (cost * (~done)).sum().backward()
            frozen = z.detach().clone()
            opt.step()
            decay.step()
            with torch.no_grad():
                z.copy_(torch.where(done[:, None], frozen, c.clamp_z(z)))
                iters += (~done).long()
                if (it + 1) % self.patience == 0:
                    c_now = cost.detach()
                    done |= torch.isfinite(last) & ((last - c_now).abs() <= self.ftol * last.clamp_min(1e-30))
                    last = c_now
                    if bool(done.all()):  # done changes only here: one host sync per `patience` iterations
                        break
        return finish(problem, batch, z.detach(), iters)


@dataclass
class CEMSolver:
    """Cross-entropy method: full-covariance Gaussian search over z, refit to the elites.

    A full covariance (not a diagonal one) lets the search follow the correlated valleys of
    ill-conditioned closed loops. Keeps the best sample seen (not the elite mean); the refit is
    smoothed by ``alpha`` and floored at ``min_std``. A sample stops when every standard
    deviation is below ``tol``; ``converged`` is the common stationarity test at the best sample. Seeded by ``seed``, so results are reproducible.
    """

    population: int = 128
    elite_frac: float = 0.1
    max_iter: int = 100
    init_std: float = 1.0
    min_std: float = 1e-9
    alpha: float = 0.8
    tol: float = 1e-7
    seed: int = 0

    def __post_init__(self) -> None:
        check_setting(self, "population", 2, integer=True)
        check_setting(self, "elite_frac", 0.0, 1.0, low_open=True)
        check_setting(self, "max_iter", integer=True)
        check_setting(self, "init_std", low_open=True)
        check_setting(self, "min_std")
        check_setting(self, "alpha", 0.0, 1.0, low_open=True)
        check_setting(self, "tol")
        check_setting(self, "seed", integer=True)

    def solve(self, problem: InverseProblem, batch: WindowBatch, z0: Optional[Tensor] = None) -> InverseResult:
        c = problem.controller
        mean = _initial_z(problem, batch, z0)
        n, dz = mean.shape
        P = self.population
        E = max(dz + 1, int(P * self.elite_frac))
        if E > P:
            raise ValueError(f"CEMSolver.population must be at least z_dim + 1 = {dz + 1} (the elites must span z), got {P}")
        gen = torch.Generator(device=mean.device).manual_seed(self.seed)
        eye = torch.eye(dz, dtype=mean.dtype, device=mean.device)
        cov = (self.init_std ** 2) * eye.expand(n, dz, dz).clone()
        tiled = batch.repeat(P)
        with torch.no_grad():
            best_z = mean.clone()
            best = problem.residual(best_z, batch).pow(2).sum(-1)
            done = torch.zeros(n, dtype=torch.bool, device=mean.device)
            iters = torch.zeros(n, dtype=torch.int64, device=mean.device)
            for _ in range(self.max_iter):
                L = torch.linalg.cholesky(cov + (self.min_std ** 2) * eye)
                eps = torch.randn(P, n, dz, 1, generator=gen, dtype=mean.dtype, device=mean.device)
                samples = c.clamp_z((mean[None] + (L[None] @ eps).squeeze(-1)).reshape(P * n, dz))
                cost = problem.residual(samples, tiled).pow(2).sum(-1).reshape(P, n)
                samples = samples.reshape(P, n, dz)
                order = cost.argsort(0)[:E]  # (E, n)
                elites = torch.gather(samples, 0, order[..., None].expand(-1, -1, dz))
                top = torch.gather(cost, 0, order[:1]).squeeze(0)
                better = (top < best) & ~done
                best_z = torch.where(better[:, None], elites[0], best_z)
                best = torch.where(better, top, best)
                e_mean = elites.mean(0)
                centred = (elites - e_mean).permute(1, 2, 0)  # (n, dz, E)
                e_cov = centred @ centred.transpose(1, 2) / (E - 1)
                new_mean = self.alpha * e_mean + (1 - self.alpha) * mean
                new_cov = self.alpha * e_cov + (1 - self.alpha) * cov
                mean = torch.where(done[:, None], mean, new_mean)
                cov = torch.where(done[:, None, None], cov, new_cov)
                iters += (~done).long()
                done |= torch.diagonal(cov, dim1=1, dim2=2).sqrt().amax(-1) <= self.tol
                if bool(done.all()):
                    break
        return finish(problem, batch, best_z, iters)


@dataclass
class BestStart:
    """Run ``solver`` from the better (lower residual) of the given ``z0`` and ``init``'s solution, per window.

    E.g. the fallback of an amortised inverse: ``BestStart(AnalyticSolver(), LevenbergMarquardt())``
    starts LM from the network's z where that is closer, and from the analytic z where the network
    is off (on saturated windows the analytic start reaches solutions a network start can miss).
    """

    init: Any
    solver: Any

    def solve(self, problem: InverseProblem, batch: WindowBatch, z0: Optional[Tensor] = None) -> InverseResult:
        start = self.init.solve(problem, batch)
        if z0 is not None:
            z0 = _initial_z(problem, batch, z0)
            with torch.no_grad():
                r0 = problem.residual(z0, batch).norm(dim=-1)
            start_z = torch.where((r0 < start.residual)[:, None], z0, start.z)
        else:
            start_z = start.z
        return self.solver.solve(problem, batch, start_z)


def select_windows(batch: WindowBatch, idx: Tensor) -> WindowBatch:
    """The windows ``idx`` of a batch (data and context)."""
    pick = lambda t: None if t is None else t[idx]  # noqa: E731
    return WindowBatch(pick(batch.state0), pick(batch.target), pick(batch.states), pick(batch.actions),
                       None if batch.context is None else {k: v[idx] for k, v in batch.context.items()})
