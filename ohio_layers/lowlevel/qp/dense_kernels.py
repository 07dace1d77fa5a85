"""Compiled (numba) dense kernels on small arrays: a Cholesky factor of a principal submatrix and
triangular solves with it. Shared by the kernels of :mod:`.active_set_kernels`; without numba
they stay plain Python functions (and :func:`available` is ``False``).
"""
from __future__ import annotations

import math

import numpy as np

try:  # pragma: no cover - exercised when numba is installed (the robosuite extra has it)
    import numba

    _njit = numba.njit(cache=True, nogil=True, error_model="numpy")
    _AVAILABLE = True
except ImportError:  # pragma: no cover
    _njit = None
    _AVAILABLE = False


def available() -> bool:
    """numba is installed, so the compiled kernels run compiled."""
    return _AVAILABLE


def compiled(fn):  # noqa: ANN001, ANN201 - decorator
    """``numba.njit`` (cached, nogil) when numba is installed, else ``fn`` unchanged."""
    return _njit(fn) if _AVAILABLE else fn


@compiled
def _cholesky(A: np.ndarray, idx: np.ndarray, k: int, F: np.ndarray, rel: float) -> bool:
    """Lower Cholesky factor of ``A[idx[:k]][:, idx[:k]]`` into ``F[:k, :k]``; False if a pivot is ``<= rel * max diag``."""
    big = 0.0
    for a in range(k):
        big = max(big, A[idx[a], idx[a]])
    for j in range(k):
        s = A[idx[j], idx[j]]
        for c in range(j):
            s -= F[j, c] * F[j, c]
        if not s > rel * big:
            return False
        F[j, j] = math.sqrt(s)
        for i in range(j + 1, k):
            s = A[idx[i], idx[j]]
            for c in range(j):
                s -= F[i, c] * F[j, c]
            F[i, j] = s / F[j, j]
    return True


@compiled
def _forward_from(F: np.ndarray, k: int, b: np.ndarray, out: np.ndarray, start: int) -> None:
    """``out[:k] = F[:k, :k]^{-1} b[:k]`` (lower triangular) for ``b[:start] = 0`` (so ``out[:start] = 0``)."""
    for i in range(start):
        out[i] = 0.0
    for i in range(start, k):
        s = b[i]
        for c in range(start, i):
            s -= F[i, c] * out[c]
        out[i] = s / F[i, i]


@compiled
def _forward(F: np.ndarray, k: int, b: np.ndarray, out: np.ndarray) -> None:
    """``out[:k] = F[:k, :k]^{-1} b[:k]`` (lower triangular)."""
    _forward_from(F, k, b, out, 0)


@compiled
def _backward(F: np.ndarray, k: int, b: np.ndarray, out: np.ndarray) -> None:
    """``out[:k] = F[:k, :k]^{-T} b[:k]``."""
    for i in range(k - 1, -1, -1):
        s = b[i]
        for c in range(i + 1, k):
            s -= F[c, i] * out[c]
        out[i] = s / F[i, i]
