"""Compiled (numba) kernels of the Goldfarb-Idnani path, :mod:`.dual_active_set` (which explains the method).

Plain loops over small dense arrays: the search of one member, its KKT residual, and the batch
loops of the forward and adjoint passes (the Cholesky factors and triangular solves are in
:mod:`.dense_kernels`). Without numba the functions stay plain Python and :func:`available` is
``False`` (the callers then skip the path).
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np

from .dense_kernels import _AVAILABLE, _backward, _cholesky, _forward, available, compiled as _compiled

__all__ = ["available", "solve_batch", "adjoint_batch", "adjoint_into", "kkt_residual_one"]


@_compiled
def _gram_column(V: np.ndarray, first: np.ndarray, q: int, Mt: np.ndarray, have: np.ndarray) -> None:
    """Column ``q`` of ``M = V V'`` (rows of ``V`` are ``L^{-1} C_i'``, zero before ``first[i]``), once,
    stored as row ``q`` of ``Mt`` (``Mt[q, i] = M[i, q]``: the search reads and writes whole columns).

    The last ``n`` rows are the lower-bound rows, each the negated upper-bound row ``n`` above it
    (the row layout of :func:`solve_batch`): their entries are negated copies, which is exactly
    what the dot products would give (IEEE negation is exact), so they are not recomputed. The
    other rows' dot products run side by side (``c`` outer, rows inner): each row's sum still adds
    its terms in order of ``c`` from ``max(first[i], first[q])`` (the same bits as one row at a
    time), without waiting on one long chain of additions.
    """
    if have[q]:
        return
    r, n = V.shape
    twins = r - n
    if q >= twins and have[q - n]:  # the negated column of the upper-bound twin
        for i in range(r):
            Mt[q, i] = -Mt[q - n, i]
    else:
        for i in range(twins):
            Mt[q, i] = 0.0
        for c in range(first[q], n):
            vq = V[q, c]
            for i in range(twins):
                if first[i] <= c:
                    Mt[q, i] += V[i, c] * vq
        for i in range(twins, r):
            Mt[q, i] = -Mt[q, i - n]
    have[q] = True


# ------------------------------------------------------------------ the search
@_compiled
def _search(Q: np.ndarray, p: np.ndarray, C: np.ndarray, d: np.ndarray, me: int, max_iter: int,
            x: np.ndarray, lam: np.ndarray, L: np.ndarray, F: np.ndarray, S: np.ndarray) -> Tuple[int, int, int]:
    """One member (module docstring). Writes ``x (n,)``, ``lam (r,)`` and the factors ``L (n, n)``,
    ``F (n, n)`` of ``M_SS`` with the working rows ``S[:k]``; returns ``(status, k, iterations)``.
    ``C`` is in the row layout of :func:`solve_batch` (its last ``n`` rows negate the ``n`` above them)."""
    n = Q.shape[0]
    r = C.shape[0]
    ident = np.arange(n)
    if not _cholesky(Q, ident, n, L, 1e-12):
        return 2, 0, 0
    V = np.empty((r, n))
    first = np.empty(r, dtype=np.int64)  # leading zeros of row i (bound rows are +-e_c): skipped below
    twins = r - n  # the last n rows (lower bounds) are the negated upper-bound rows above them: V too, exactly
    for i in range(twins):
        f = 0
        while f < n and C[i, f] == 0.0:
            f += 1
        first[i] = f
        for c in range(f):
            V[i, c] = 0.0
    # V[i] = L^{-1} C[i] for all rows together: entry c of every row, then entry c + 1 (each row's
    # entry is computed exactly as by _forward_from; independent rows side by side instead of one
    # long chain of dependent operations after another)
    for c in range(n):
        for i in range(twins):
            f = first[i]
            if c >= f:
                s = C[i, c]
                for a in range(f, c):
                    s -= L[c, a] * V[i, a]
                V[i, c] = s / L[c, c]
    for i in range(twins, r):
        f = first[i - n]
        first[i] = f
        for c in range(f):
            V[i, c] = 0.0
        for c in range(f, n):
            V[i, c] = -V[i - n, c]
    w = np.empty(n)
    x0 = np.empty(n)
    _forward(L, n, p, w)
    _backward(L, n, w, x0)
    for c in range(n):
        x0[c] = -x0[c]
    slack0 = np.empty(r)  # C x0 - d; -inf for infinite bounds
    norm = np.empty(r)
    dmax = 0.0
    for i in range(r):
        s = 0.0
        nn = 0.0
        for c in range(first[i], n):
            s += C[i, c] * x0[c]
            nn += C[i, c] * C[i, c]
        slack0[i] = s - d[i]
        norm[i] = math.sqrt(nn) if nn > 0.0 else 1.0
        if math.isfinite(d[i]):
            dmax = max(dmax, abs(d[i]))
    viol_tol = 1e-13 * (1.0 + dmax)
    slack = slack0.copy()
    Mt = np.empty((r, r))  # Mt[q] = column q of M, once row q has been touched
    M = Mt.T  # M[i, j] for the Cholesky factorisations (entries of computed columns only)
    ms = np.empty(r)  # column q of M minus M[:, S] r (the slack update)
    have = np.zeros(r, dtype=np.bool_)
    cand = np.ones(r, dtype=np.bool_)
    cand[:me] = False
    wlam = np.zeros(n)  # multipliers of the working rows S[:k]
    u = np.empty(n)
    lv = np.empty(n)
    rv = np.empty(n)
    k = 0
    n_eq = 0
    it = 0
    while True:
        if n_eq < me:  # the equalities first, in order
            q = n_eq
        else:
            q = -1
            best = 0.0
            for i in range(me, r):
                if cand[i] and slack[i] > viol_tol:
                    score = slack[i] / norm[i]
                    if score > best:
                        best, q = score, i
            if q < 0:
                break
        _gram_column(V, first, q, Mt, have)
        lam_q = 0.0
        while True:  # add row q, dropping blocking rows on the way
            it += 1
            if it > max_iter:
                return 3, k, it
            for a in range(k):
                u[a] = Mt[q, S[a]]
            _forward(F, k, u, lv)
            _backward(F, k, lv, rv)
            kappa = Mt[q, q]
            for a in range(k):
                kappa -= lv[a] * lv[a]
            dependent = not kappa > 1e-12 * Mt[q, q]
            block = -1
            if q < me:
                if dependent:
                    return 4, k, it
                t = slack[q] / kappa
            else:
                t = math.inf if dependent else slack[q] / kappa
                for a in range(n_eq, k):
                    if rv[a] > 0.0:
                        ratio = wlam[a] / rv[a]
                        if ratio < t:
                            t, block = ratio, a
                if not math.isfinite(t):
                    return 5, k, it  # a dual ray: inconsistent rows (the torch path classifies)
            for a in range(k):
                wlam[a] -= t * rv[a]
            lam_q += t
            for i in range(r):  # per row i the same operations in the same order as a dot product over a
                ms[i] = Mt[q, i]
            for a in range(k):
                sa, ra = S[a], rv[a]
                for i in range(r):
                    ms[i] -= Mt[sa, i] * ra
            for i in range(r):
                slack[i] -= t * ms[i]
            if block < 0:  # q is tight: it joins the working set (k <= n: the rows stay independent)
                for a in range(k):
                    F[k, a] = lv[a]
                F[k, k] = math.sqrt(kappa)
                S[k] = q
                wlam[k] = lam_q
                k += 1
                cand[q] = False
                if q < me:
                    n_eq += 1
                break
            cand[S[block]] = True  # a working multiplier reached zero: that row leaves
            for a in range(block, k - 1):
                S[a] = S[a + 1]
                wlam[a] = wlam[a + 1]
            k -= 1
            if not _cholesky(M, S, k, F, 1e-14):
                return 6, k, it
    # the final working set, solved from scratch: M_SS lam_S = C_S x0 - d_S, x = x0 - L^{-T} V_S' lam_S
    if k and not _cholesky(M, S, k, F, 1e-14):
        return 6, k, it
    for a in range(k):
        u[a] = slack0[S[a]]
    _forward(F, k, u, lv)
    _backward(F, k, lv, rv)
    lam[:] = 0.0
    for c in range(n):
        w[c] = 0.0
    for a in range(k):
        lam[S[a]] = rv[a]
        for c in range(n):
            w[c] += V[S[a], c] * rv[a]
    _backward(L, n, w, x)
    for c in range(n):
        x[c] = x0[c] - x[c]
        if not math.isfinite(x[c]):
            return 7, k, it
    return 0, k, max(it, 1)


@_compiled
def kkt_residual_one(Q: np.ndarray, p: np.ndarray, C: np.ndarray, d: np.ndarray, me: int, m: int, x: np.ndarray,
              lam: np.ndarray) -> float:
    """:func:`~.certify.kkt_residual` of one member in the row layout of this module (same terms and scales).

    Rows ``[:me]`` are ``A`` (multipliers ``y``), ``[me:me+m]`` ``G`` (``mu``), then ``n`` upper rows
    (``zu``) and ``n`` lower rows (``zl``), with ``d`` infinite for an infinite bound.
    """
    n = Q.shape[0]
    r = C.shape[0]
    stat = 0.0
    s_d = 0.0
    for c in range(n):
        qx = 0.0
        for j in range(n):
            qx += Q[c, j] * x[j]
        gmu = 0.0
        ay = 0.0
        for i in range(me):
            ay += C[i, c] * lam[i]
        for i in range(me, me + m):
            gmu += C[i, c] * lam[i]
        zu = lam[me + m + c]
        zl = lam[me + m + n + c]
        stat = max(stat, abs(qx + p[c] - zl + zu + gmu + ay))
        s_d = max(s_d, abs(p[c]), abs(qx), abs(zl), abs(zu), abs(gmu), abs(ay))
    s_d += 1.0
    prim = 0.0
    s_p = 0.0
    sign = 0.0
    comp = 0.0
    for i in range(r):
        cx = 0.0
        for c in range(n):
            cx += C[i, c] * x[c]
        if math.isfinite(d[i]):
            s_p = max(s_p, abs(d[i]))
            slk = d[i] - cx
            if i < me:
                prim = max(prim, abs(slk))
            else:
                prim = max(prim, -min(slk, 0.0))
                comp = max(comp, abs(lam[i] * slk))
        if i >= me:
            sign = max(sign, -min(lam[i], 0.0))
            if not math.isfinite(d[i]):
                sign = max(sign, abs(lam[i]))
    s_p += 1.0
    res = max(stat / s_d, prim / s_p, sign / s_d, comp / (s_d * s_p))
    for c in range(n):
        if not math.isfinite(x[c]):
            return math.inf
    return res if res == res else math.inf


@_compiled
def _finite(a: np.ndarray) -> bool:
    for v in a.ravel():
        if not math.isfinite(v):
            return False
    return True


@_compiled
def solve_batch(Q: np.ndarray, p: np.ndarray, lo: np.ndarray, hi: np.ndarray, G: np.ndarray, h: np.ndarray,
                 A: np.ndarray, b: np.ndarray, tol: float, C: np.ndarray, X: np.ndarray, LAM: np.ndarray,
                 L: np.ndarray, F: np.ndarray, S: np.ndarray, K: np.ndarray, iters: np.ndarray, res: np.ndarray) -> int:
    """Every member: the symmetric part of ``Q``, its rows ``C[i] (r, n)``, the search, the KKT check. An argument with a
    leading dimension of 1 is shared by the batch. Unsolved members (an empty box, a failed
    search, a residual above ``tol``) get ``x = 0``, ``lam = 0``, ``K = -1`` and ``res = inf``.
    Returns the number of solved members, or -1 (nothing solved) if ``Q, p, G, h, A`` or ``b`` has
    a NaN or inf entry (the caller's validation reports it; the bounds may be infinite)."""
    if not (_finite(Q) and _finite(p) and _finite(G) and _finite(h) and _finite(A) and _finite(b)):
        K[:] = -1
        return -1
    B, n = X.shape
    solved = 0
    me, m = A.shape[1], G.shape[1]
    r = me + m + 2 * n
    d = np.empty(r)
    Qi = np.empty((n, n))
    for i in range(B):
        Qr, pi, loi, hii = Q[i % Q.shape[0]], p[i % p.shape[0]], lo[i % lo.shape[0]], hi[i % hi.shape[0]]
        for a in range(n):  # the symmetric part of Q
            for c in range(n):
                Qi[a, c] = 0.5 * (Qr[a, c] + Qr[c, a])
        Gi, hi_, Ai, bi = G[i % G.shape[0]], h[i % h.shape[0]], A[i % A.shape[0]], b[i % b.shape[0]]
        Ci = C[i]
        Ci[:] = 0.0
        Ci[:me] = Ai
        Ci[me:me + m] = Gi
        d[:me] = bi
        d[me:me + m] = hi_
        empty = False
        for c in range(n):
            Ci[me + m + c, c] = 1.0
            Ci[me + m + n + c, c] = -1.0
            d[me + m + c] = hii[c]
            d[me + m + n + c] = -loi[c]
            if not loi[c] <= hii[c] or loi[c] == math.inf or hii[c] == -math.inf:
                empty = True
        st = 1
        if not empty:
            st, k, it = _search(Qi, pi, Ci, d, me, 3 * r + 10, X[i], LAM[i], L[i], F[i], S[i])
            K[i] = k
            iters[i] = it
        res[i] = kkt_residual_one(Qi, pi, Ci, d, me, m, X[i], LAM[i]) if st == 0 else math.inf
        if not res[i] <= tol:
            X[i] = 0.0
            LAM[i] = 0.0
            K[i] = -1
            res[i] = math.inf
        else:
            solved += 1
    return solved


@_compiled
def _add_rows(out: np.ndarray, b: int, gd: np.ndarray, start: int, count: int, sign: float) -> None:
    """``out[b % len(out)][i] += sign * gd[start + i]`` for ``i < count``; skipped when ``out`` is empty (not
    wanted). ``sign`` is +-1, so the products are exact."""
    if out.shape[0]:
        o = out[b % out.shape[0]]
        for i in range(count):
            o[i] += sign * gd[start + i]


@_compiled
def _add_outer_rows(out: np.ndarray, b: int, lam: np.ndarray, gd: np.ndarray, start: int, count: int, wx: np.ndarray,
                    x: np.ndarray) -> None:
    """``out[b % len(out)][i, c] += -(lam[start + i] wx[c] + gd[start + i] x[c])`` (a constraint matrix's gradient);
    skipped when ``out`` is empty."""
    if out.shape[0]:
        o2 = out[b % out.shape[0]]
        for i in range(count):
            li, di = lam[start + i], gd[start + i]
            for c in range(len(x)):
                o2[i, c] += -(li * wx[c] + di * x[c])


@_compiled
def adjoint_into(L: np.ndarray, F: np.ndarray, S: np.ndarray, K: np.ndarray, C: np.ndarray, X: np.ndarray,
                 LAM: np.ndarray, g: np.ndarray, me: int, m: int, gQ: np.ndarray, gp: np.ndarray, glo: np.ndarray,
                 ghi: np.ndarray, gG: np.ndarray, gh: np.ndarray, gA: np.ndarray, gb: np.ndarray) -> None:
    """Gradients of every member, added into the caller's layout.

    With ``(w_x, w_l) = [[Q, C_S'], [C_S, 0]]^{-1} (g, 0)``: ``t = L^{-1} g``, ``w_l = M_SS^{-1} V_S t``,
    ``w_x = L^{-T} (t - V_S' w_l)``; ``gd = w_l`` on the working rows ``S`` (0 elsewhere), then
    ``gQ += -(w_x x' + x w_x')/2``, ``gp += -w_x``, ``glo += -gd`` (lower rows), ``ghi += gd`` (upper
    rows), ``gh += gd``, ``gb += gd`` (their rows) and ``gG += -(lam w_x' + gd x')``, ``gA`` alike. Each
    output (zeros on entry) has a leading dimension of ``B`` (member ``b`` adds into ``[b]``), 1 (a
    shared argument: every member adds into ``[0]``, in member order, as a sum over the batch) or 0
    (not wanted: skipped). Members with ``K = -1`` (unsolved) add nothing.
    """
    B, n = g.shape
    k_rows = me + m
    r = LAM.shape[1]
    t = np.empty(n)
    v = np.empty(n)
    u = np.empty(n)
    lv = np.empty(n)
    wl = np.empty(n)
    wx = np.empty(n)
    gd = np.empty(r)
    for b in range(B):
        k = K[b]
        if k < 0:
            continue
        _forward(L[b], n, g[b], t)
        VS = np.empty((k, n))
        for a in range(k):
            _forward(L[b], n, C[b, S[b, a]], v)
            VS[a] = v
            s = 0.0
            for c in range(n):
                s += v[c] * t[c]
            u[a] = s
        _forward(F[b], k, u, lv)
        _backward(F[b], k, lv, wl)
        gd[:] = 0.0
        for a in range(k):
            gd[S[b, a]] = wl[a]
            for c in range(n):
                t[c] -= VS[a, c] * wl[a]
        _backward(L[b], n, t, wx)
        x = X[b]
        if gQ.shape[0]:
            o2 = gQ[b % gQ.shape[0]]
            for i in range(n):
                for j in range(n):
                    o2[i, j] += -0.5 * (wx[i] * x[j] + x[i] * wx[j])
        if gp.shape[0]:
            o = gp[b % gp.shape[0]]
            for i in range(n):
                o[i] += -wx[i]
        _add_rows(ghi, b, gd, k_rows, n, 1.0)
        _add_rows(glo, b, gd, k_rows + n, n, -1.0)
        _add_rows(gh, b, gd, me, m, 1.0)
        _add_rows(gb, b, gd, 0, me, 1.0)
        _add_outer_rows(gG, b, LAM[b], gd, me, m, wx, x)
        _add_outer_rows(gA, b, LAM[b], gd, 0, me, wx, x)
