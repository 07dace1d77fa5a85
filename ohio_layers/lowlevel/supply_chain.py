"""Supply-chain lower level: (store shares, production target) -> shipments and production.

The OHIO supply-chain low level (digest §2.4) on a star: one factory, ``S`` stores. Shapes::

    state (B, 3S + 2) = [stock I (S), demand_hat D (S), arrivals A (S), factory stock I_f, pending production A_f]
    z     (B, S + 2)  = [shares u over stores 0..S-1 and the factory (S + 1, on the simplex), production target q]
    action (B, S + 1) = [shipments x (S), production p]

``D_i`` = current demand + backlog + next period's mean demand; ``A_i`` = shipments arriving this
period; ``avail = I_f + A_f`` is the factory's stock to split. Desired shipments ``d_i = u_i avail``
(the factory share is what stays) and the production target ``q``. With the room of store ``i``,
``room_i = Cap_i - I_i + D_i - A_i``, the **lexicographic LP** is::

    stage 1:  min  sum_i c_i                       (capacity slack first)
    stage 2:  min  sum_i |x_i - d_i| + |p - q|      (then target tracking), stage-1 optimum fixed
    s.t.      x_i - c_i <= room_i,  c >= 0,  x >= 0,  sum_i x_i <= avail,
              avail - sum_i x_i + p <= Cap_f  (hard factory capacity),  0 <= p <= C.

Stage 1's optimal set is ``0 <= x_i <= max(room_i, 0)``; stage 2 is then solved by the
**closed form** ``x_i = min(d_i, max(room_i, 0))``, ``p = min(q, Cap_f - avail + sum_i x_i)`` (a
unit of ``x`` above ``d`` that lets ``p`` rise by one is a tie, so the optimum value is unique
even where the optimiser is not). ``method="highs"`` solves the two stages with HiGHS (one
block-diagonal LP per stage for the whole batch, stage 2 with every sample's stage-1 optimum as
a constraint); ``method="closed_form"`` evaluates the formula batched in torch. The test suite
checks both stage objectives agree to 1e-9 on 500+ random instances. Device: the closed form runs
on the inputs' device; ``"highs"`` solves on the host (one copy of the batch there and one back
per call, which synchronises a CUDA device), its outputs are on the inputs' device again.

**Integers** (``integer=True``, the default used by the environment): the desired shipments are
the largest-remainder (Hamilton) rounding of ``u * avail`` over all ``S + 1`` nodes, so they sum to
``avail`` exactly and never exceed the stock; the production target is ``q`` rounded to the
nearest integer (at most ``floor(C)``; unbiased like the shipments' rounding and like the
environment's rounding of end-to-end production, where the reference's ``int`` truncation
under-produced by half a unit on average); the demand term is floored (``D <- floor(D)``) so the room is an integer. The LP data are then
integral, its closed-form vertex is integral, and ``x_i <= floor(room_i)`` keeps every shipment
within the room computed with the exact forecast. Units not shipped stay at the factory
(stock-preserving: ``sum x + kept == avail``). Requires integer stocks (flagged otherwise).

**Differentiability**: the closed form is piecewise linear in ``z`` (the LP's optimal-basis
Jacobian): ``dx_i / du_i = avail`` where tracking binds, 0 where capacity binds. With
``integer=False`` the returned action is that closed form itself (``gradcheck`` passes away from
the kinks); with ``integer=True`` the integer action carries the continuous closed form's
gradient (straight-through: ``x_int + x_cont - x_cont.detach()``).

**Bad inputs** never give a silent answer: :meth:`SupplyChainController.solve` returns a per-sample
:class:`SupplyStatus` (non-finite values, negative stock, shares off the simplex, production
target outside ``[0, C]``, non-integer stock in integer mode, a factory already above its
capacity -- the hard constraint is then infeasible --, solver failure) and NaN actions for
flagged samples; ``forward`` raises :class:`SupplyChainInputError` naming the samples and reasons.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .._validate import check_same_batch, check_tensor
from .base import Context, LowLevelController
from .min_cost_flow import largest_remainder

__all__ = ["SupplyStatus", "SupplySolution", "SupplyChainInputError", "SupplyChainController", "store_room"]


class SupplyStatus(IntEnum):
    """Per-sample outcome of :meth:`SupplyChainController.solve` (first failing check)."""

    OK = 0
    NON_FINITE = 1  # NaN or inf in state or z
    NEGATIVE_STOCK = 2  # a stock, arrival or pending production < 0
    OFF_SIMPLEX = 3  # shares negative or not summing to 1 (tolerance simplex_tol)
    PRODUCTION_OUT_OF_RANGE = 4  # target outside [0, C]
    NON_INTEGER_STOCK = 5  # integer mode with fractional stocks
    FACTORY_OVERFULL = 6  # avail > Cap_f: the hard factory capacity cannot hold
    SOLVER_FAILED = 7  # HiGHS did not report an optimum


class SupplyChainInputError(ValueError):
    """Raised by :meth:`SupplyChainController.forward` for samples that :meth:`solve` flags."""


@dataclass
class SupplySolution:
    """Batched result. ``shipments (B, S)``, ``production (B,)`` (NaN where flagged), desired shipments
    ``targets (B, S)``, ``production_target (B,)``, ``room (B, S)``, stage objectives ``stage1 (B,)``,
    ``stage2 (B,)`` and ``status (B,)`` int64 :class:`SupplyStatus` codes."""

    shipments: Tensor
    production: Tensor
    targets: Tensor
    production_target: Tensor
    room: Tensor
    stage1: Tensor
    stage2: Tensor
    status: Tensor

    @property
    def ok(self) -> Tensor:
        return self.status == SupplyStatus.OK

    @property
    def action(self) -> Tensor:
        """``(B, S + 1)`` shipments then production."""
        return torch.cat([self.shipments, self.production[:, None]], 1)


def store_room(state: Tensor, store_capacity: Tensor, integer: bool = False) -> Tensor:
    """The stores' room ``Cap - I + D - A`` ``(B, S)`` of controller states ``(B, 3S + 2)`` =
    ``[I, D, A, I_f, A_f]`` under ``store_capacity (S,)`` (``D`` floored when ``integer``); negative when
    the stock on hand and on the way already exceeds the capacity."""
    S = store_capacity.shape[0]
    I, D, A = state[:, :S], state[:, S:2 * S], state[:, 2 * S:3 * S]
    return store_capacity.to(state) - I + (torch.floor(D) if integer else D) - A


class SupplyChainController(LowLevelController):
    """Lexicographic-LP shipment/production controller of a one-factory, ``S``-store star.

    Args:
        store_capacity: ``(S,)`` storage capacities ``Cap_i`` (the LP knows them: a changed
            capacity changes the controller, not the high level).
        factory_capacity: ``Cap_f``.
        production_capacity: ``C`` (bound of the production target and of ``p``).
        method: default forward method, ``"closed_form"`` or ``"highs"``.
        integer: default integrality of the actions (see the module docstring).
        simplex_tol: tolerance of ``|sum(u) - 1|`` and of negative shares.
    """

    def __init__(self, store_capacity: Union[Sequence[float], Tensor], factory_capacity: float, production_capacity: float,
                 method: str = "closed_form", integer: bool = True, simplex_tol: float = 1e-5) -> None:
        cap = torch.as_tensor(store_capacity, dtype=torch.float64).reshape(-1)
        S = int(cap.numel())
        if S < 1 or not bool(torch.isfinite(cap).all()) or bool((cap < 0).any()):
            raise ValueError(f"store_capacity must be a non-empty sequence of finite values >= 0, got {cap.tolist()}")
        if not (np.isfinite(factory_capacity) and factory_capacity > 0 and np.isfinite(production_capacity) and production_capacity > 0):
            raise ValueError(f"factory_capacity and production_capacity must be finite and > 0, got {factory_capacity} / {production_capacity}")
        if method not in ("closed_form", "highs"):
            raise ValueError(f"method must be 'closed_form' or 'highs', got {method!r}")
        C = float(production_capacity)
        super().__init__(3 * S + 2, S + 2, S + 1, z_low=[0.0] * (S + 1) + [0.0], z_high=[1.0] * (S + 1) + [C],
                         action_low=0.0, action_high=[float("inf")] * S + [C])
        self.n_stores, self.factory_capacity, self.production_capacity = S, float(factory_capacity), C
        self.method, self.integer, self.simplex_tol = method, bool(integer), float(simplex_tol)
        self.register_buffer("store_capacity", cap, persistent=False)

    # ------------------------------------------------------------------ state helpers
    def split_state(self, state: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(I (B, S), D (B, S), A (B, S), I_f (B,), A_f (B,))``."""
        S = self.n_stores
        return state[:, :S], state[:, S:2 * S], state[:, 2 * S:3 * S], state[:, 3 * S], state[:, 3 * S + 1]

    def room(self, state: Tensor, integer: bool = False) -> Tensor:
        """``Cap - I + D - A`` ``(B, S)`` (``D`` floored when ``integer``)."""
        return store_room(state, self.store_capacity, integer)

    def status(self, state: Tensor, z: Tensor, integer: Optional[bool] = None) -> Tensor:
        """``(B,)`` int64 :class:`SupplyStatus` of each sample (no solve)."""
        integer = self.integer if integer is None else integer
        S, st = self.n_stores, torch.zeros(state.shape[0], dtype=torch.long, device=state.device)

        def flag(mask: Tensor, code: SupplyStatus) -> None:
            st[(st == 0) & mask] = int(code)

        flag(~(torch.isfinite(state).all(1) & torch.isfinite(z).all(1)), SupplyStatus.NON_FINITE)
        s = torch.nan_to_num(state)
        I, _, A, I_f, A_f = self.split_state(s)
        flag((I < 0).any(1) | (A < 0).any(1) | (I_f < 0) | (A_f < 0), SupplyStatus.NEGATIVE_STOCK)
        u = torch.nan_to_num(z[:, :S + 1])
        flag((u < -self.simplex_tol).any(1) | ((u.sum(1) - 1).abs() > self.simplex_tol), SupplyStatus.OFF_SIMPLEX)
        q = torch.nan_to_num(z[:, S + 1])
        flag((q < 0) | (q > self.production_capacity), SupplyStatus.PRODUCTION_OUT_OF_RANGE)
        if integer:
            stocks = torch.cat([I, A, I_f[:, None], A_f[:, None]], 1)
            flag((stocks != stocks.round()).any(1), SupplyStatus.NON_INTEGER_STOCK)
        flag(I_f + A_f > self.factory_capacity, SupplyStatus.FACTORY_OVERFULL)
        return st

    def targets(self, state: Tensor, z: Tensor, integer: bool) -> Tuple[Tensor, Tensor]:
        """Desired shipments ``d (B, S)`` and production target ``(B,)``."""
        S = self.n_stores
        _, _, _, I_f, A_f = self.split_state(state)
        avail, u, q = I_f + A_f, z[:, :S + 1], z[:, S + 1]
        if integer:
            return largest_remainder(u.clamp_min(0.0), avail)[:, :S], torch.round(q.detach()).clamp(max=float(np.floor(self.production_capacity)))
        return u[:, :S] * avail[:, None], q

    # ------------------------------------------------------------------ solves
    def _closed_form(self, state: Tensor, d: Tensor, q: Tensor, integer: bool) -> Tuple[Tensor, Tensor]:
        _, _, _, I_f, A_f = self.split_state(state)
        x = torch.minimum(d, torch.relu(self.room(state, integer)))
        p = torch.minimum(q, self.factory_capacity - I_f - A_f + x.sum(1))
        return x, p.clamp(0.0, self.production_capacity)

    def _objectives(self, state: Tensor, x: Tensor, p: Tensor, d: Tensor, q: Tensor, integer: bool) -> Tuple[Tensor, Tensor]:
        room = self.room(state, integer)
        return torch.relu(x - room).sum(1), (x - d).abs().sum(1) + (p - q).abs()

    def solve(self, state: Tensor, z: Tensor, method: Optional[str] = None, integer: Optional[bool] = None) -> SupplySolution:
        """Shipments and production for every sample; flagged samples get NaN (see :class:`SupplyStatus`).

        Args:
            state: ``(B, 3S + 2)``; z: ``(B, S + 2)`` (same dtype/device).
            method: ``"closed_form"`` (batched torch, differentiable) or ``"highs"`` (two LP stages).
            integer: integer actions (module docstring); default ``self.integer``.
        """
        method = self.method if method is None else method
        integer = self.integer if integer is None else bool(integer)
        if method not in ("closed_form", "highs"):
            raise ValueError(f"method must be 'closed_form' or 'highs', got {method!r}")
        check_tensor("state", state, ("B", self.state_dim), finite=False)
        check_tensor("z", z, ("B", self.z_dim), finite=False)
        check_same_batch(state=state, z=z)
        if state.dtype != z.dtype or state.device != z.device:
            raise TypeError(f"state and z must share dtype and device, got {state.dtype}/{state.device} and {z.dtype}/{z.device}")
        status = self.status(state, z, integer)
        ok = status == 0
        s_ok = torch.where(ok[:, None], state, torch.zeros_like(state))
        z_ok = torch.where(ok[:, None], z, torch.zeros_like(z))
        d, q = self.targets(s_ok, z_ok, integer)
        if method == "closed_form":
            x, p = self._closed_form(s_ok, d, q, integer)
            if integer and (z.requires_grad or state.requires_grad):  # straight-through surrogate
                dc, qc = self.targets(s_ok, z_ok, False)
                xc, pc = self._closed_form(s_ok, dc, qc, False)
                x, p = x.detach() + xc - xc.detach(), p.detach() + pc - pc.detach()
        else:
            x, p, solved = self._highs(s_ok, d, q, integer, ok)
            status = torch.where(ok & ~solved, torch.full_like(status, int(SupplyStatus.SOLVER_FAILED)), status)
            ok = status == 0
        o1, o2 = self._objectives(s_ok, x, p, d, q, integer)
        nan = lambda t: torch.where(ok.view(-1, *([1] * (t.dim() - 1))), t, torch.full_like(t, float("nan")))  # noqa: E731
        return SupplySolution(nan(x), nan(p), nan(d), nan(q), nan(self.room(s_ok, integer)), nan(o1), nan(o2), status)

    def _highs(self, state: Tensor, d: Tensor, q: Tensor, integer: bool, ok: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """The two LP stages with HiGHS, one block-diagonal LP per stage over the ``ok`` samples."""
        from scipy.optimize import linprog
        import scipy.sparse as sp

        S, B = self.n_stores, state.shape[0]
        out = np.zeros((B, S + 2))  # x (S), p, solved: copied back to the device in one piece
        # the one copy to the host (HiGHS solves there; it synchronises a CUDA device once per call)
        packed = torch.cat([ok.to(state.device, torch.float64)[:, None], state.detach().double(),
                            self.room(state.detach(), integer).double(), d.detach().double(),
                            q.detach().double()[:, None]], 1).cpu().numpy()
        idx = np.flatnonzero(packed[:, 0] > 0)

        def result() -> Tuple[Tensor, Tensor, Tensor]:
            back = torch.from_numpy(out).to(state.device)
            return back[:, :S].to(state.dtype), back[:, S].to(state.dtype), back[:, S + 1] > 0

        if idx.size == 0:
            return result()
        nd = self.state_dim
        st, room = packed[idx, 1:1 + nd], packed[idx, 1 + nd:1 + nd + S]
        dn, qn = packed[idx, 1 + nd + S:1 + nd + 2 * S], packed[idx, -1]
        avail = st[:, 3 * S] + st[:, 3 * S + 1]
        n, V = idx.size, 4 * S + 3  # per sample: x (S), p, c (S), f+ (S), f- (S), p+, p-
        ix, ip, ic, ifp, ifm, ipp, ipm = (np.arange(S), S, S + 1 + np.arange(S), 2 * S + 1 + np.arange(S),
                                          3 * S + 1 + np.arange(S), 4 * S + 1, 4 * S + 2)
        ones = np.ones(S)
        # one sample's rows: equalities x - f+ + f- = d (S), p - p+ + p- = q; inequalities x - c <= room (S),
        # sum x <= avail, p - sum x <= Cap_f - avail
        Aeq = sp.coo_matrix((np.r_[ones, -ones, ones, 1, -1, 1], (np.r_[np.tile(np.arange(S), 3), S, S, S],
                             np.r_[ix, ifp, ifm, ip, ipp, ipm])), shape=(S + 1, V))
        Aub = sp.coo_matrix((np.r_[ones, -ones, ones, 1, -ones],
                             (np.r_[np.arange(S), np.arange(S), np.full(S, S), S + 1, np.full(S, S + 1)],
                              np.r_[ix, ic, ix, ip, ix])), shape=(S + 2, V))
        A_eq, A_ub = sp.block_diag([Aeq] * n, "csr"), sp.block_diag([Aub] * n, "csr")
        b_eq = np.c_[dn, qn].reshape(-1)
        b_ub = np.c_[room, avail, self.factory_capacity - avail].reshape(-1)
        lower = np.zeros(V)
        upper = np.full(V, np.inf)
        upper[ip] = self.production_capacity
        bounds = np.c_[np.tile(lower, n), np.tile(upper, n)]
        c1 = np.zeros(V)
        c1[ic] = 1.0
        opts = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}
        r1 = linprog(np.tile(c1, n), A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=b_eq, bounds=bounds, method="highs", options=opts)
        if r1.status != 0:
            return result()
        stage1 = r1.x.reshape(n, V)[:, ic].sum(1)
        fix = sp.block_diag([sp.coo_matrix((np.ones(S), (np.zeros(S), ic)), shape=(1, V))] * n, "csr")
        c2 = np.zeros(V)
        c2[np.r_[ifp, ifm, ipp, ipm]] = 1.0
        r2 = linprog(np.tile(c2, n), A_ub=sp.vstack([A_ub, fix], "csr"), b_ub=np.r_[b_ub, stage1 + 1e-10],
                     A_eq=A_eq, b_eq=b_eq, bounds=bounds, method="highs", options=opts)
        if r2.status != 0:
            return result()
        sol = r2.x.reshape(n, V)
        out[idx, :S] = np.maximum(sol[:, ix], 0.0)
        out[idx, S] = np.clip(sol[:, ip], 0.0, self.production_capacity)
        out[idx, S + 1] = 1.0
        return result()

    # ------------------------------------------------------------------ contract
    def law(self, state: Tensor, z: Tensor, context: Context, step: int) -> Tensor:
        """Closed-form action ``(B, S + 1)`` (no input checks; the hot path)."""
        d, q = self.targets(state, z, self.integer)
        x, p = self._closed_form(state, d, q, self.integer)
        if self.integer and z.requires_grad:
            dc, qc = self.targets(state, z, False)
            xc, pc = self._closed_form(state, dc, qc, False)
            x, p = x.detach() + xc - xc.detach(), p.detach() + pc - pc.detach()
        return torch.cat([x, p[:, None]], 1)

    def saturate(self, action: Tensor, state: Tensor, context: Context) -> Tensor:
        return action  # feasible by construction

    def forward(self, state: Tensor, z: Tensor, context: Optional[Context] = None, step: int = 0) -> Tensor:
        """Checked action ``(B, S + 1)`` by ``self.method``; raises :class:`SupplyChainInputError` for flagged samples."""
        sol = self.solve(state, z)
        if not bool(sol.ok.all()):
            bad = (~sol.ok).nonzero().flatten().tolist()
            reasons = sorted({SupplyStatus(int(sol.status[i])).name for i in bad})
            raise SupplyChainInputError(f"state/z infeasible for samples {bad[:10]}{'...' if len(bad) > 10 else ''}: {reasons}")
        return sol.action

    def extra_repr(self) -> str:
        return (f"stores={self.n_stores}, factory_capacity={self.factory_capacity}, production_capacity="
                f"{self.production_capacity}, method={self.method!r}, integer={self.integer}")
