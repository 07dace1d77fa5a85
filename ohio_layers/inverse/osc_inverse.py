"""Recover the OSC pose delta z = (dp, dw) of every transition from recorded sub-step torques.

For one transition the data are the ``k`` sub-step states ``s_j`` (teacher forcing: no dynamics
model is needed) and the applied arm torques ``tau_j``. With the goal set from ``s_0`` the
unsaturated OSC torque is (see :class:`~ohio_layers.lowlevel.osc.OSCTerms`)::

    tau_j(dp, dw) = P_j dp + d_j + O_j e(Exp(dw) R_0, R_j),    d_j = P_j (p_0 - p_j) + offset_j

affine in ``dp`` for a fixed ``dw``. The goal-independent matrices ``P, d, O`` are computed once
per sub-step; an iteration then costs a few small batched products. All transitions of a batch
are solved as one tensor and each stops on its own test.

Stage 1, *variable projection* on the unsaturated equations: for the current ``dw`` the best
``dp`` is one exact weighted linear least-squares solve, and Levenberg-Marquardt runs on ``dw``
alone with the reduced residual and its exact Jacobian ``(I - P (P'WP)^{-1} P'W) d tau / d dw``.
Saturated torques carry only an inequality: with ``saturation="clip"`` (robosuite) a recorded
torque at its limit gets weight 0; with ``saturation="qp"`` the projection couples the joints,
so a sub-step with any torque at a limit is dropped entirely.

Stage 2, for clipped controllers, only for transitions whose stage-1 z does not reproduce the
data (too few unsaturated equations, a wrong root of the orientation map): LM on all six
components of the *clipped* residual ``clip(tau(z)) - tau``, from the stage-1 z and from zero,
keeping the better. With heavy saturation z may not be identifiable (every torque at a limit):
the residual is then small but z is one of many.

The reported residual is that of the controller itself (saturation included) at the returned
z, over all sub-steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from .._validate import check_tensor
from ..lowlevel.osc import OperationalSpaceController, osc_terms
from ..lowlevel.rotations import axis_angle_to_matrix, left_jacobian, orientation_error, skew
from .convergence import assess, converged_test
from .problem import InverseProblem, WindowBatch
from .result import InverseResult
from .solvers import check_setting

class _Structure(NamedTuple):
    """Goal-independent parts of all sub-steps: ``tau = P dp + d + O e(Exp(dw) R0, R_sub)``."""

    P: Tensor  # (N, k n, 3)
    d: Tensor  # (N, k n)
    O: Tensor  # (N, k, n, 3)
    R_sub: Tensor  # (N, k, 3, 3)
    R0: Tensor  # (N, 3, 3)

    def orientation(self, w: Tensor) -> Tuple[Tensor, Tensor]:
        """``(O e (N, k n), d(O e)/dw (N, k n, 3))`` at ``w (N, 3)``."""
        N, k = self.R_sub.shape[:2]
        R = axis_angle_to_matrix(w)
        Jl = left_jacobian(w)
        R_goal = R @ self.R0
        e = orientation_error(R_goal[:, None], self.R_sub)  # (N, k, 3)
        # d Exp(w) / dw_i = [J_l e_i]_x Exp(w); e is linear in the goal rotation
        de = torch.stack([orientation_error((skew(Jl[..., i]) @ R_goal)[:, None], self.R_sub) for i in range(3)], -1)
        return (self.O @ e.unsqueeze(-1)).reshape(N, -1), (self.O @ de).reshape(N, -1, 3)


@dataclass
class OSCInverse:
    """Batched inverse of an OSC_POSE controller (variable projection + saturated refinement).

    Args:
        max_iter: LM iterations per stage (each member stops earlier on its own test). 200, not
            30: on hard synthetic data (deltas up to 0.3 m / 1.5 rad, 79-95 % saturated) 30
            recovered 77.6 / 86.0 % of z and 200 79.0 / 87.6 % at 1.2-1.7x the time; easy data
            stop after <= 7 iterations either way (benchmarks/bench_osc_inverse_iterations.py).
        damping: initial LM damping ``lam`` (step ``(J'WJ + lam (diag(J'WJ) + 1e-9 I)) d = -J'Wr``;
            ``lam /= 3`` after an accepted step, ``*= 4`` after a rejected one).
        gtol: stop when ``||J'Wr||_inf <= gtol (1 + cost)``.
        xtol: stop when a step is shorter than ``xtol (|x| + xtol)``.
        ftol_abs: stop when the cost ``||r||_W^2 / 2`` is below this.
        saturation_tol: a recorded torque with ``|tau| >= limit - saturation_tol`` is saturated.
        refine_tol: run stage 2 for a transition whose residual exceeds ``refine_tol (1 + |tau|)``.
        refine: run stage 2 at all.
    """

    max_iter: int = 200
    damping: float = 1e-6
    gtol: float = 1e-12
    xtol: float = 1e-12
    ftol_abs: float = 1e-26
    saturation_tol: float = 1e-9
    refine_tol: float = 1e-8
    refine: bool = True

    def __post_init__(self) -> None:
        check_setting(self, "max_iter", integer=True)
        for name in ("damping", "gtol", "xtol", "ftol_abs", "saturation_tol", "refine_tol"):
            check_setting(self, name)

    # ------------------------------------------------------------------ InverseProblem interface
    def solve(self, problem, batch, z0: Optional[Tensor] = None) -> InverseResult:  # noqa: ANN001
        """Solver interface of :mod:`ohio_layers.inverse.solvers` (``match="actions"`` problems)."""
        if getattr(problem, "match", None) != "actions":
            raise ValueError("OSCInverse matches recorded torques: the problem needs match='actions'")
        return self.invert(problem.controller, batch.states, batch.actions, z0)

    # ------------------------------------------------------------------ direct use
    def invert(self, controller: OperationalSpaceController, states: Tensor, torques: Tensor,
               z0: Optional[Tensor] = None) -> InverseResult:
        """z ``(N, 6)`` reproducing ``torques (N, k, n)`` from sub-step ``states (N, k, ds)``.

        ``z0 (N, 6)`` optionally starts the orientation search (default: zero rotation).
        """
        c = controller
        if not isinstance(c, OperationalSpaceController) or c.impedance_mode != "fixed":
            raise TypeError("OSCInverse needs an OperationalSpaceController with impedance_mode='fixed' (z = pose delta)")
        check_tensor("states", states, ("N", None, c.state_dim))
        N, k = states.shape[0], states.shape[1]
        if k != c.horizon:
            raise ValueError(f"states has {k} sub-steps per transition but the controller's horizon is {c.horizon}: "
                             f"the goal is held for exactly horizon sub-steps (pass a controller with horizon={k} "
                             f"or windows of {c.horizon} sub-steps)")
        check_tensor("torques", torques, (N, k, c.action_dim))
        states, torques = states.detach(), torques.detach()
        w0 = torch.zeros(N, 3, dtype=states.dtype, device=states.device)
        if z0 is not None:
            check_tensor("z0", z0, (N, 6))
            w0 = z0[:, 3:].detach().to(states)
        z = torch.full((N, 6), float("nan"), dtype=states.dtype, device=states.device)
        converged = torch.zeros(N, dtype=torch.bool, device=states.device)
        iters = torch.zeros(N, dtype=torch.int64, device=states.device)
        residual = torch.full((N,), float("nan"), dtype=states.dtype, device=states.device)
        if N == 0:
            return InverseResult(z, residual, converged, iters)
        with torch.no_grad():
            st = self._structure(c, states)
            # a member whose mass matrix or Jacobian is singular has no OSC law (NaN): flag it, keep the rest
            ok = torch.isfinite(st.P).flatten(1).all(-1) & torch.isfinite(st.d).all(-1) & torch.isfinite(st.O).flatten(1).all(-1)
            idx = ok.nonzero().flatten()
            if idx.numel():
                z_ok, it_ok = self._solve_members(c, st_rows(st, idx), states[idx], torques[idx], w0[idx])
                z[idx], iters[idx] = z_ok, it_ok
                residual[idx], converged[idx] = self._assess(c, st_rows(st, idx), states[idx], torques[idx], z_ok)
        return InverseResult(z, residual, converged, iters)

    @staticmethod
    def _assess(c: OperationalSpaceController, st: "_Structure", states: Tensor, torques: Tensor, z: Tensor
                ) -> Tuple[Tensor, Tensor]:
        """``(residual, converged)`` by the common test (:mod:`..convergence`); the exact Jacobian
        ``[P, d(O e)/dw]`` (zero rows where clipped) is at hand for clipped / unsaturated controllers."""
        N, k = states.shape[:2]
        if c.saturation == "qp":  # the Jacobian goes through the QP: the generic (autodiff) test
            problem = InverseProblem(c, match="actions", steps=k)
            batch = WindowBatch(states[:, 0], states=states, actions=torques, context=c.context(states[:, 0]))
            return assess(problem, batch, z)
        target = torques.reshape(N, -1)
        oe, doe = st.orientation(z[:, 3:])
        tau = (st.P @ z[:, :3].unsqueeze(-1)).squeeze(-1) + st.d + oe
        J = torch.cat([st.P, doe], -1)
        if c.saturation == "clip":
            low, high = c.action_low.to(tau).repeat(k), c.action_high.to(tau).repeat(k)
            J = J * ((tau > low) & (tau < high)).to(tau.dtype).unsqueeze(-1)
            tau = torch.clamp(tau, low, high)
        return converged_test(z, tau - target, J, c.z_low.to(z), c.z_high.to(z), 1.0 + target.norm(dim=-1))

    def _solve_members(self, c: OperationalSpaceController, st: "_Structure", states: Tensor, torques: Tensor,
                       w0: Tensor) -> Tuple[Tensor, Tensor]:
        """Stage 1 (+ stage 2 where needed) for members with a valid structure; ``(z (N, 6), iterations (N,))``."""
        N, k = states.shape[:2]
        target = torques.reshape(N, -1)
        weight = self._weights(c, torques)
        w, dp, converged, iters = self._variable_projection(st, target, weight, w0)
        z = c.clamp_z(torch.cat([dp, w], -1))
        residual = self.residual(c, z, states, torques).norm(dim=-1)
        if self.refine and c.saturation in ("clip", "none"):
            scale = 1.0 + target.norm(dim=-1)
            bad = (residual > self.refine_tol * scale).nonzero().flatten()
            if bad.numel():
                z, residual, converged, iters = self._refine(c, st, target, states, torques, bad, z, residual, converged, iters)
        return z, iters

    @staticmethod
    def residual(controller: OperationalSpaceController, z: Tensor, states: Tensor, torques: Tensor) -> Tensor:
        """``(N, k n)`` controller torques (saturated, goal from sub-step 0) minus the recorded ones."""
        ctx = controller.context(states[:, 0])
        return torch.cat([controller.act(states[:, j], z, ctx, j) - torques[:, j] for j in range(states.shape[1])], -1)

    # ------------------------------------------------------------------ stages
    def _variable_projection(self, st: _Structure, target: Tensor, weight: Tensor, w0: Tensor):  # noqa: ANN202
        PtW = st.P.transpose(1, 2) * weight[:, None, :]
        H = PtW @ st.P
        scale = H.diagonal(dim1=1, dim2=2).amax(-1)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # no unsaturated equation: dp = 0
        eye3 = torch.eye(3, dtype=H.dtype, device=H.device)
        eps = torch.finfo(H.dtype).eps
        # a ridge at the dtype's resolution (1e-14 is below float32's and made its Cholesky fail)
        L, info = torch.linalg.cholesky_ex(H + (64 * eps * scale)[:, None, None] * eye3)
        if bool((info != 0).any()):  # nearly singular P'WP in this dtype: a larger ridge for those members
            bad = info != 0
            L2, _ = torch.linalg.cholesky_ex(H[bad] + (eps ** 0.5 * scale[bad])[:, None, None] * eye3)
            L = L.clone()
            L[bad] = L2

        def evaluate(w: Tensor, rows: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
            f, Jf = st_rows(st, rows).orientation(w)
            f = f + st.d[rows] - target[rows]
            sol = -torch.cholesky_solve(PtW[rows] @ torch.cat([f.unsqueeze(-1), Jf], -1), L[rows])  # best dp and d dp/dw
            P = st.P[rows]
            return f + (P @ sol[..., :1]).squeeze(-1), Jf + P @ sol[..., 1:], sol[..., 0]

        return self._levenberg_marquardt(w0, evaluate, weight)

    def _refine(self, c, st, target, states, torques, bad, z, residual, converged, iters):  # noqa: ANN001, ANN202
        """Stage 2: LM on all of z with the clipped residual, for the members ``bad``."""
        low, high = c.action_low.to(target), c.action_high.to(target)
        k = states.shape[1]
        low, high = low.repeat(k), high.repeat(k)
        sub = st_rows(st, bad)
        tgt = target[bad]

        def evaluate(x: Tensor, rows: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
            s = st_rows(sub, rows)
            oe, doe = s.orientation(x[:, 3:])
            tau = (s.P @ x[:, :3].unsqueeze(-1)).squeeze(-1) + s.d + oe
            inside = ((tau > low) & (tau < high)).to(tau.dtype).unsqueeze(-1)
            return torch.clamp(tau, low, high) - tgt[rows], torch.cat([s.P, doe], -1) * inside, x[:, :0]

        ones = torch.ones_like(tgt)
        best_z, best_res, best_conv, extra = z[bad], residual[bad], converged[bad], torch.zeros_like(iters[bad])
        for start in (best_z, torch.zeros_like(best_z)):
            x, _, conv, it = self._levenberg_marquardt(start, evaluate, ones)
            x = c.clamp_z(x)
            res = self.residual(c, x, states[bad], torques[bad]).norm(dim=-1)
            better = res < best_res
            best_z = torch.where(better[:, None], x, best_z)
            best_res, best_conv = torch.where(better, res, best_res), torch.where(better, conv, best_conv)
            extra = extra + it
        z, residual, converged, iters = z.clone(), residual.clone(), converged.clone(), iters.clone()
        z[bad], residual[bad], converged[bad], iters[bad] = best_z, best_res, best_conv, iters[bad] + extra
        return z, residual, converged, iters

    def _levenberg_marquardt(self, x: Tensor, evaluate, weight: Tensor):  # noqa: ANN001, ANN202
        """Batched LM on ``x (N, d)``; ``evaluate(x_rows, rows) -> (r, J, extra)``; returns ``(x, extra, converged, iters)``."""
        N, dim = x.shape
        everyone = torch.arange(N, device=x.device)
        r, J, extra = evaluate(x, everyone)
        cost = 0.5 * (weight * r * r).sum(-1)
        lam = torch.full((N,), self.damping, dtype=x.dtype, device=x.device)
        done = cost <= self.ftol_abs
        iters = torch.zeros(N, dtype=torch.int64, device=x.device)
        eye = torch.eye(dim, dtype=x.dtype, device=x.device)
        x, extra = x.clone(), extra.clone()
        for _ in range(self.max_iter):
            act = (~done).nonzero().flatten()
            if act.numel() == 0:
                break
            ra, Ja, wa = r[act], J[act], weight[act]
            JtW = Ja.transpose(1, 2) * wa[:, None, :]
            H, g = JtW @ Ja, (JtW @ ra.unsqueeze(-1)).squeeze(-1)
            stationary = g.abs().amax(-1) <= self.gtol * (1.0 + cost[act])
            A = H + lam[act, None, None] * (torch.diag_embed(H.diagonal(dim1=1, dim2=2)) + 1e-9 * eye)
            step, info = torch.linalg.solve_ex(A, -g)
            step = torch.where((info == 0)[:, None], step, torch.zeros_like(step))
            x_new = x[act] + step
            r_new, J_new, extra_new = evaluate(x_new, act)
            cost_new = 0.5 * (wa * r_new * r_new).sum(-1)
            accept = (cost_new <= cost[act]) & ~stationary
            tiny = step.norm(dim=-1) <= self.xtol * (x[act].norm(dim=-1) + self.xtol)
            a = accept[:, None]
            x[act] = torch.where(a, x_new, x[act])
            extra[act] = torch.where(a, extra_new, extra[act])
            r[act] = torch.where(a, r_new, ra)
            J[act] = torch.where(a[..., None], J_new, Ja)
            cost[act] = torch.where(accept, cost_new, cost[act])
            lam[act] = torch.where(accept, lam[act] / 3.0, lam[act] * 4.0).clamp(1e-15, 1e15)
            iters[act] += 1
            done[act] = stationary | tiny | (cost[act] <= self.ftol_abs)
        return x, extra, done, iters

    # ------------------------------------------------------------------ data
    def _weights(self, c: OperationalSpaceController, torques: Tensor) -> Tensor:
        """``(N, k n)`` 0/1 weights of the torque equations (0 = saturated, carries no equality)."""
        N, k, n = torques.shape
        if c.saturation == "none":
            return torch.ones(N, k * n, dtype=torques.dtype, device=torques.device)
        high, low = c.action_high.to(torques), c.action_low.to(torques)
        at_limit = (torques >= high - self.saturation_tol) | (torques <= low + self.saturation_tol)
        if c.saturation == "qp" and c.qp_weight != "identity":
            at_limit = at_limit.any(-1, keepdim=True).expand(-1, -1, n)
        return (~at_limit).to(torques.dtype).reshape(N, k * n)

    @staticmethod
    def _structure(c: OperationalSpaceController, states: Tensor) -> _Structure:
        N, k, _ = states.shape
        s = c.layout.unpack(states.reshape(N * k, -1))
        kp = c.kp.detach().to(states)
        kd = 2.0 * kp.sqrt() * c.damping_ratio.detach().to(states)
        t = osc_terms(s, kp, kd, c.nullspace_kp, c.task_damping)
        n = t.offset.shape[-1]
        pos = s["pos"].reshape(N, k, 3)
        P = t.pos_gain.reshape(N, k, n, 3)
        d = (P @ (pos[:, :1] - pos).unsqueeze(-1)).squeeze(-1) + t.offset.reshape(N, k, n)
        R_sub = s["rot"].reshape(N, k, 3, 3)
        return _Structure(P.reshape(N, k * n, 3), d.reshape(N, k * n), t.ori_gain.reshape(N, k, n, 3), R_sub, R_sub[:, 0])


def st_rows(st: _Structure, rows: Tensor) -> _Structure:
    """The members ``rows`` of a structure."""
    return _Structure(*(t[rows] for t in st))
