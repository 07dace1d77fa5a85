"""A controller's data residual as a function of z *and* of its own parameters (for identification).

:class:`Unknown` names any floating-point ``nn.Parameter`` or buffer of a controller by its
attribute path and optionally ties entries into groups; :class:`Parametrisation` maps the free
vector ``theta (p,)`` to the full tensors, differentiably; :func:`residual_jacobians` gives the
teacher-forced action residual with its exact Jacobians in z and theta by forward-mode AD through
``torch.func.functional_call`` -- no controller-specific code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..lowlevel.base import LowLevelController

Groups = Optional[Mapping[str, Sequence[int]]]
OSC_AXIS_GROUPS: Dict[str, Tuple[int, ...]] = {"pos": (0, 1, 2), "ori": (3, 4, 5)}


@dataclass(frozen=True)
class Unknown:
    """One unknown parameter (or buffer) of a controller, addressed by its attribute path.

    Attributes:
        name: ``controller.get_parameter/get_buffer`` path, e.g. ``"kp"``, ``"Q"``, ``"inner.gain"``.
        groups: ``{label: flat indices}``: each group is one free value shared by its entries;
            entries in no group keep their current value. ``None``: every entry is free.
        bounds: ``(low, high) > 0`` on the value (log-parametrised).
        prior: ``(mean, relative std)``: a log-normal prior ``(log v - log mean) / std``.
        init: starting value (scalar); default the controller's current value (group mean).
    """

    name: str
    groups: Groups = None
    bounds: Tuple[float, float] = (1e-6, 1e6)
    prior: Optional[Tuple[float, float]] = None
    init: Optional[float] = None

    def __post_init__(self) -> None:
        lo, hi = self.bounds
        if not (0 < lo < hi < math.inf):
            raise ValueError(f"Unknown({self.name!r}).bounds must satisfy 0 < low < high < inf, got {self.bounds}")
        if self.prior is not None and not (self.prior[0] > 0 and self.prior[1] > 0):
            raise ValueError(f"Unknown({self.name!r}).prior must be (mean > 0, relative std > 0), got {self.prior}")
        if self.init is not None and not (lo <= self.init <= hi):
            raise ValueError(f"Unknown({self.name!r}).init must lie within bounds {self.bounds}, got {self.init}")


UnknownLike = Union[str, Unknown]


def osc_unknowns(kp: bool = True, damping_ratio: bool = True, per: str = "group", **kwargs: Any) -> List[Unknown]:
    """Unknowns of an :class:`~ohio_layers.lowlevel.osc.OperationalSpaceController`.

    ``per="group"``: one kp / damping ratio for the position axes and one for the orientation axes
    (4 values); ``"axis"``: each of the 6 axes; ``"scalar"``: one value for all. ``kwargs`` go to
    every :class:`Unknown` (bounds, prior).
    """
    groups = {"group": OSC_AXIS_GROUPS, "axis": None, "scalar": {"all": tuple(range(6))}}
    if per not in groups:
        raise ValueError(f"per must be one of {tuple(groups)}, got {per!r}")
    names = [n for n, on in (("kp", kp), ("damping_ratio", damping_ratio)) if on]
    return [Unknown(n, groups[per], **kwargs) for n in names]


def diagonal_unknown(name: str, dim: int, **kwargs: Any) -> Unknown:
    """The diagonal entries of a ``(dim, dim)`` matrix parameter (e.g. LQR ``Q``), one value each."""
    return Unknown(name, {str(i): (i * (dim + 1),) for i in range(dim)}, **kwargs)


def find_parameters(controller: nn.Module) -> List[str]:
    """Names of every floating-point parameter and buffer of ``controller`` (the candidate unknowns)."""
    names = [n for n, t in list(controller.named_parameters()) + list(controller.named_buffers()) if t.is_floating_point()]
    return sorted(set(names))


# ------------------------------------------------------------------------------ the free vector
class Parametrisation:
    """Maps the free vector ``theta (p,)`` to full parameter tensors ``{name: tensor}``, differentiably."""

    def __init__(self, controller: nn.Module, unknowns: Sequence[UnknownLike]) -> None:
        if not unknowns:
            raise ValueError("unknowns must name at least one parameter")
        available = find_parameters(controller)
        self.names: List[str] = []
        self.labels: List[str] = []
        self.base: Dict[str, Tensor] = {}
        self.select: Dict[str, Tuple[Tensor, Tensor, Tensor]] = {}  # name -> (selection (numel, p), keep mask, columns)
        init, lo, hi, prior_mean, prior_std = [], [], [], [], []
        for u in unknowns:
            u = Unknown(u) if isinstance(u, str) else u
            if u.name not in available:
                raise ValueError(f"unknown {u.name!r} is not a floating-point parameter or buffer of "
                                 f"{type(controller).__name__}; it has {available}")
            if u.name in self.base:
                raise ValueError(f"unknown {u.name!r} is listed twice")
            t = get_tensor(controller, u.name).detach().to(torch.float64)
            flat = t.reshape(-1)
            groups = {str(i): (i,) for i in range(flat.numel())} if u.groups is None else dict(u.groups)
            if not groups:
                raise ValueError(f"Unknown({u.name!r}).groups must not be empty")
            seen: set = set()
            cols = []
            for label, idx in groups.items():
                idx = tuple(int(i) for i in idx)
                if not idx or any(not 0 <= i < flat.numel() for i in idx) or seen.intersection(idx):
                    raise ValueError(f"Unknown({u.name!r}).groups[{label!r}] must be non-empty, disjoint indices "
                                     f"in [0, {flat.numel()}), got {idx}")
                seen.update(idx)
                value = float(flat[list(idx)].mean()) if u.init is None else float(u.init)
                if not value > 0:
                    raise ValueError(f"{u.name}[{label}] starts at {value}; identification is log-parametrised and needs "
                                     f"positive values (pass Unknown(init=...))")
                cols.append(idx)
                self.labels.append(f"{u.name}.{label}" if u.groups is not None else f"{u.name}[{label}]")
                init.append(min(max(value, u.bounds[0]), u.bounds[1]))
                lo.append(u.bounds[0])
                hi.append(u.bounds[1])
                prior_mean.append(u.prior[0] if u.prior else 1.0)
                prior_std.append(u.prior[1] if u.prior else math.inf)
            S = torch.zeros(flat.numel(), len(cols), dtype=torch.float64)
            for j, idx in enumerate(cols):
                S[list(idx), j] = 1.0
            keep = 1.0 - S.sum(1)
            start = sum(s[0].shape[1] for s in self.select.values())
            self.select[u.name] = (S, keep, torch.arange(start, start + len(cols)))
            self.names.append(u.name)
            self.base[u.name] = t
        self.init = torch.tensor(init, dtype=torch.float64)
        self.log_low, self.log_high = torch.tensor(lo).log().double(), torch.tensor(hi).log().double()
        self.prior_mean = torch.tensor(prior_mean, dtype=torch.float64).log()
        self.prior_std = torch.tensor(prior_std, dtype=torch.float64)

    @property
    def size(self) -> int:
        return len(self.labels)

    def values(self, theta: Tensor, like: Tensor) -> Dict[str, Tensor]:
        """``{name: tensor}`` with the free entries set from ``theta (p,)`` (differentiable)."""
        out = {}
        for name in self.names:
            S, keep, cols = self.select[name]
            base = self.base[name].to(like)
            flat = base.reshape(-1) * keep.to(like) + S.to(like) @ theta[cols.to(theta.device)]
            out[name] = flat.reshape(base.shape)
        return out

    def write(self, controller: nn.Module, theta: Tensor) -> None:
        """Set the controller's tensors to ``theta`` in place."""
        with torch.no_grad():
            for name, v in self.values(theta, self.base[self.names[0]]).items():
                t = get_tensor(controller, name)
                t.copy_(v.to(t))


def get_tensor(module: nn.Module, name: str) -> Tensor:
    """The parameter or buffer ``name`` (attribute path) of ``module``."""
    try:
        return module.get_parameter(name)
    except AttributeError:
        return module.get_buffer(name)


# ------------------------------------------------------------------------------ residual and Jacobians
class DataResidual(nn.Module):
    """``(z (N, dz), states (N, k, ds), actions (N, k, da)) -> (N, k da)`` unsaturated action residual."""

    def __init__(self, controller: LowLevelController) -> None:
        super().__init__()
        self.c = controller

    def forward(self, z: Tensor, states: Tensor, actions: Tensor) -> Tensor:
        ctx = self.c.context(states[:, 0])
        return torch.cat([self.c.act(states[:, j], z, ctx, j, saturate=False) - actions[:, j]
                          for j in range(states.shape[1])], -1)


def residual_jacobians(fn: DataResidual, par: Parametrisation, theta: Tensor, z: Tensor, states: Tensor, actions: Tensor,
               with_theta: bool = True) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """``(r (N, m), J_z (N, m, dz), J_theta (N, m, p) or None)`` by forward-mode AD (central differences
    as a fallback for layers without forward-mode support)."""
    N, dz = z.shape
    p = par.size if with_theta else 0

    def f(zz: Tensor, th: Tensor) -> Tensor:
        params = {f"c.{k}": v for k, v in par.values(th, zz).items()}
        return torch.func.functional_call(fn, params, (zz, states, actions))

    tz = torch.zeros(dz + p, N, dz, dtype=z.dtype, device=z.device)
    tz[torch.arange(dz), :, torch.arange(dz)] = 1.0
    tt = torch.zeros(dz + p, par.size, dtype=z.dtype, device=z.device)
    if p:
        tt[dz + torch.arange(p), torch.arange(p)] = 1.0
    try:
        r, jv = torch.func.vmap(lambda a, b: torch.func.jvp(f, (z, theta), (a, b)), out_dims=(None, 0))(tz, tt)
    except (RuntimeError, NotImplementedError):
        with torch.no_grad():
            r = f(z, theta)
            cols = []
            for i in range(dz + p):
                h = 1e-6 * (1.0 + (z[:, i].abs().mean() if i < dz else theta[i - dz].abs()))
                cols.append((f(z + h * tz[i], theta + h * tt[i]) - f(z - h * tz[i], theta - h * tt[i])) / (2 * h))
            jv = torch.stack(cols)
    J = jv.permute(1, 2, 0)
    return r, J[..., :dz], (J[..., dz:] if p else None)


def gauss_newton_z(fn: DataResidual, par: Parametrisation, theta: Tensor, z: Tensor, states: Tensor, actions: Tensor,
                    weight: Tensor, iters: int = 25, rcond: float = 1e-12) -> Tensor:
    """Weighted Gauss-Newton on every window's z (exact in one step for controllers affine in z)."""
    lo, hi = fn.c.z_low.to(z), fn.c.z_high.to(z)
    for _ in range(iters):
        r, Jz, _ = residual_jacobians(fn, par, theta, z, states, actions, with_theta=False)
        step = -weighted_pinv_apply(Jz, weight, r.unsqueeze(-1), rcond).squeeze(-1)
        z = torch.clamp(z + step, lo, hi)
        if bool((step.abs() <= 1e-13 * (1.0 + z.abs())).all()):
            break
    return z


def weighted_pinv_apply(J: Tensor, w: Tensor, X: Tensor, rcond: float) -> Tensor:
    """``(J'WJ)^+ J'W X`` per batch member: ``J (N, m, d)``, ``w (N, m)``, ``X (N, m, c)`` -> ``(N, d, c)``."""
    JtW = J.transpose(1, 2) * w[:, None, :]
    H = JtW @ J
    evals, evecs = torch.linalg.eigh(H)
    cut = rcond * evals.amax(-1, keepdim=True).clamp_min(1e-300)
    inv = torch.where(evals > cut, 1.0 / evals.clamp_min(1e-300), torch.zeros_like(evals))
    return evecs @ (inv.unsqueeze(-1) * (evecs.transpose(1, 2) @ (JtW @ X)))
