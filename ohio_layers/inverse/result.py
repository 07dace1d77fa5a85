"""What every inverse solver returns, and what its flags mean.

Two different questions, two answers (the same for every solver: analytic, LM, Adam, CEM,
OSC, flow):

* ``converged`` -- *did the solver finish its job?* Computed by one test at the returned z
  (:mod:`ohio_layers.inverse.convergence`): the residual is at rounding-noise level
  (``||r|| <= sqrt(eps) (1 + ||data||)``) or z is a first-order stationary point of the bounded
  least-squares problem (projected gradient ``<= sqrt(eps) ||J|| ||r||``, ``J != 0``). It does
  **not** say the data are explained: a target the controller cannot reach, or a wrong local
  minimum, can be converged.
* ``reproduced(tolerance)`` -- *does z explain the data?* ``residual <= tolerance``, with the
  caller's data tolerance (noise level of the recorded states / actions). It does not say the
  solver finished: a derivative-free search can reproduce the data without being stationary.

A member that cannot be evaluated (NaN inputs, a controller that flags it) has a NaN residual
and is neither converged nor reproduced. The closed-form flow inverse
(:func:`~ohio_layers.inverse.flow_inverse.invert_flows`) has no iteration to stop: its
``converged`` says the observed flows were executable and their replay solved, its residual
is the replayed count mismatch in vehicles (0 = reproduced).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class InverseResult:
    """Batched solution of an inverse problem.

    Attributes:
        z: ``(B, dz)`` recovered high-level actions (within the controller's z bounds).
        residual: ``(B,)`` Euclidean norm of the residual vector at ``z``.
        converged: ``(B,)`` bool, the common convergence test (module docstring) holds at ``z``
            (not "residual is small": a target the controller cannot reach converges with a
            large residual; use :meth:`reproduced` for that).
        iterations: ``(B,)`` int64 iterations used per sample (0 for closed-form solvers).
    """

    z: Tensor
    residual: Tensor
    converged: Tensor
    iterations: Tensor

    def __post_init__(self) -> None:
        n = self.z.shape[0]
        for name in ("residual", "converged", "iterations"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"InverseResult.{name} must have shape ({n},), got {tuple(getattr(self, name).shape)}")

    def __len__(self) -> int:
        return self.z.shape[0]

    def reproduced(self, tolerance: float) -> Tensor:
        """``(B,)`` bool: the residual is within the caller's data ``tolerance`` (NaN is not)."""
        if not tolerance >= 0:
            raise ValueError(f"tolerance must be a number >= 0, got {tolerance}")
        return self.residual <= tolerance

    def select(self, mask: Tensor) -> "InverseResult":
        return InverseResult(self.z[mask], self.residual[mask], self.converged[mask], self.iterations[mask])

    @staticmethod
    def cat(parts: "list[InverseResult]") -> "InverseResult":
        return InverseResult(*(torch.cat([getattr(p, f) for p in parts]) for f in ("z", "residual", "converged", "iterations")))
