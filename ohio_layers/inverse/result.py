"""What every inverse solver returns."""
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
        converged: ``(B,)`` bool, the solver's own stopping test was met (not "residual is
            small": a target the controller cannot reach converges with a large residual).
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

    def select(self, mask: Tensor) -> "InverseResult":
        return InverseResult(self.z[mask], self.residual[mask], self.converged[mask], self.iterations[mask])

    @staticmethod
    def cat(parts: "list[InverseResult]") -> "InverseResult":
        return InverseResult(*(torch.cat([getattr(p, f) for p in parts]) for f in ("z", "residual", "converged", "iterations")))
