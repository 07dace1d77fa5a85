"""The batched, exact, differentiable QP layer; :func:`solve_qp` is its one public entry.

Modules, one job each (imports run downwards only):

* :mod:`.problem` -- problem, status and solution types, argument validation;
* :mod:`.kkt` -- the KKT backward passes (implicit differentiation at a fixed active set);
* :mod:`.box` -- the batched active-set search for box constraints;
* :mod:`.small` -- the small-batch CPU (LAPACK) path for box constraints;
* :mod:`.dual_active_set` -- the compiled (numba) Goldfarb-Idnani path for CPU problems (its kernels in
  :mod:`.active_set_kernels`, the dense Cholesky and triangular solves in :mod:`.dense_kernels`);
* :mod:`.interior` -- interior point plus active-set polish for general constraints (any device);
* :mod:`.certify` -- the checks behind every status (KKT residual, PSD, empty box, LP certificates);
* :mod:`.solve` -- :func:`solve_qp`, which dispatches between them;
* :mod:`.backends` -- qpth / cvxpylayers backends for cross-checking (optional extras).
"""
from .problem import QPProblem, QPSolution, QPStatus, make_problem
from .small import SMALL_BATCH_LOOP
from .solve import solve_qp

__all__ = ["QPProblem", "QPSolution", "QPStatus", "make_problem", "solve_qp", "SMALL_BATCH_LOOP"]
