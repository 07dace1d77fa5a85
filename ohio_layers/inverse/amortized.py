"""Amortised inverse: a network ``g(window) -> z`` trained through the controller, without labels.

Per-window solvers (analytic, LM, ``OSCInverse``) are bound by per-window work: the
controller context (an FD linearisation + Riccati for the reacher, the OSC terms) and the
iterations. :class:`AmortizedInverse` learns the inverse map once, by minimising the residual of
the :class:`~ohio_layers.inverse.InverseProblem` through the differentiable controller (and
dynamics): no z label is ever used. At relabel time it reads only the observed data, so it needs
no context at all (see :meth:`AmortizedInverse.inverter`).

What made it accurate (measured on the reacher and the OSC, see ``benchmarks/bench_amortized.py``):

* the loss is measured in z units: the residual ``r (B, m)`` is mapped by the mean pseudo-inverse
  of the residual Jacobian ``P (dz, m)``, so ``P r ~ z - z*`` near the solution, and divided by
  the z scale (a raw state residual weighs the well-determined directions and lets the rest drift);
* a robust loss ``log1p(|P r / s|^2 / delta^2)``: windows the controller cannot reproduce (saturated,
  not identifiable) do not dominate;
* the output is ``mu + s * net(x)`` with ``mu, s`` from a label-free reference solution (analytic
  if the controller is affine in z, else a few LM iterations) on the training windows, then
  soft-saturated into the z bounds, so every output respects them;
* input features without the directions the controller is invariant to (``drop_dims``, e.g.
  the reacher's base joint angle), big batches;
* where the controller's structure gives a cheap estimate that is exact on part of the data, the
  network corrects it instead of re-learning it: ``features`` may return ``(x, z_base)`` and the
  output is then ``z_base + s * net(x)``, hard-clipped into the bounds (the OSC's first sub-step
  closed form, exact wherever nothing saturates, see :mod:`~ohio_layers.inverse.osc_amortized`).

Exactness is then recovered where it matters: ``polish=n`` LM iterations from the network's
output, and ``fallback=`` an exact solver applied to exactly the windows whose residual is above
``tolerance`` (:class:`AmortizedResult.flagged`).
"""
from __future__ import annotations

import copy
import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data.dataset import Dataset
from ..data.io import PathLike, atomic_write_bytes
from ..lowlevel.dynamics import train_epoch
from .problem import InverseProblem, WindowBatch
from .result import InverseResult
from .solvers import AnalyticSolver, LevenbergMarquardt, residual_jacobian, select_windows

Features = Callable[[WindowBatch], Union[Tensor, Tuple[Tensor, ...]]]


def window_features(batch: WindowBatch, match: str, drop_dims: Sequence[int] = ()) -> Tensor:
    """Default network input ``(B, f)`` of a window, from the observed data only.

    ``next_state``: the start state without ``drop_dims`` and the change ``target - state0``.
    ``actions``: the start state without ``drop_dims``, the state changes ``states[:, l] - state0``
    (``l >= 1``) and the observed actions. ``drop_dims`` are directions the controller and dynamics
    are invariant to (e.g. an unbounded base joint angle): leaving them out generalises better.
    """
    x0 = batch.state0
    keep = [i for i in range(x0.shape[1]) if i not in set(drop_dims)]
    parts = [x0[:, keep]]
    if match == "next_state":
        parts.append(batch.target - x0)
    else:
        parts.append((batch.states[:, 1:] - x0[:, None]).flatten(1))
        parts.append(batch.actions.flatten(1))
    return torch.cat(parts, dim=1)


@dataclass
class AmortizedResult(InverseResult):
    """An :class:`InverseResult` with the amortised inverse's per-window flags.

    Attributes:
        flagged: ``(B,)`` the network's (polished) residual was above the tolerance.
        fallback_used: ``(B,)`` the window's z comes from the fallback solver.
    ``converged`` means "residual within the tolerance" (``~flagged`` before the fallback).
    """

    flagged: Optional[Tensor] = None
    fallback_used: Optional[Tensor] = None


def _cast_batch(batch: WindowBatch, dtype: torch.dtype) -> WindowBatch:
    cast = lambda t: None if t is None else (t.to(dtype) if t.is_floating_point() else t)  # noqa: E731
    ctx = None if batch.context is None else {k: cast(v) for k, v in batch.context.items()}
    return WindowBatch(cast(batch.state0), cast(batch.target), cast(batch.states), cast(batch.actions), ctx)


class AmortizedInverse(nn.Module):
    """Inverse network for any :class:`InverseProblem`; also a solver (``solve``) for ``relabel``.

    Args:
        problem: the inverse problem (controller, dynamics, match) the network inverts.
        hidden: widths of the MLP's hidden layers (SiLU).
        drop_dims: state dimensions left out of the default features (see :func:`window_features`).
        features: custom ``WindowBatch -> (B, f)`` input (replaces the default; not saved by
            :meth:`save`, pass it again to :meth:`load`). It may return ``(x (B, f), z_base (B, dz))``:
            a cheap estimate of z from the observed data that the network corrects
            (``z = clip(clip(z_base) + s * net(x))``, the last layer starts at zero, so training starts
            from the estimate and the bounds are a hard clip, which keeps exact estimates exact), or
            ``(x, z_base, exact (B,) bool)``: windows where the estimate is known to be exact keep it
            unchanged (the network's float32 correction would only add noise there).
        tolerance: residual above which a window is flagged (and sent to ``fallback``); ``None``
            flags nothing.
        polish: Levenberg-Marquardt iterations run from the network's output in :meth:`solve`.
        fallback: exact solver (``solve(problem, batch, z0)``) for the flagged windows; it starts
            from the network's z, and the better of the two is kept per window.
        delta: scale of the robust loss in normalised z units.

    Example::

        inv = AmortizedInverse(problem, drop_dims=(0,), tolerance=1e-6, fallback=LevenbergMarquardt())
        inv.fit(problem.batch(x0, target=x5))           # unlabelled windows, with their context
        result = inv.solve(problem, batch)              # AmortizedResult; relabel(..., ProblemInverter(problem, inv))
    """

    def __init__(
        self,
        problem: InverseProblem,
        hidden: Sequence[int] = (256, 256),
        drop_dims: Sequence[int] = (),
        features: Optional[Features] = None,
        tolerance: Optional[float] = None,
        polish: int = 0,
        fallback: Any = None,
        delta: float = 1e-2,
    ) -> None:
        super().__init__()
        c = problem.controller
        if tolerance is not None and not tolerance > 0:
            raise ValueError(f"tolerance must be > 0 or None, got {tolerance}")
        if not isinstance(polish, int) or polish < 0:
            raise ValueError(f"polish must be an int >= 0, got {polish!r}")
        if fallback is not None and not hasattr(fallback, "solve"):
            raise TypeError(f"fallback must have solve(problem, batch, z0), got {type(fallback).__name__}")
        if not delta > 0:
            raise ValueError(f"delta must be > 0, got {delta}")
        bad = [d for d in drop_dims if not 0 <= int(d) < c.state_dim]
        if bad:
            raise ValueError(f"drop_dims entries must be in [0, {c.state_dim}), got {bad}")
        self.problem, self.tolerance, self.polish, self.fallback = problem, tolerance, polish, fallback
        self.drop_dims, self.hidden, self.delta = tuple(int(d) for d in drop_dims), tuple(int(h) for h in hidden), float(delta)
        self.custom_features = features
        x, base, _ = self._features(self._dummy_batch())
        self.in_dim, self.has_base = x.shape[1], base is not None
        dz = c.z_dim
        layers, width = [], self.in_dim
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.SiLU()]
            width = h
        layers.append(nn.Linear(width, dz))
        self.net = nn.Sequential(*layers)
        f32 = dict(dtype=torch.float32)
        self.register_buffer("in_mean", torch.zeros(self.in_dim, **f32))
        self.register_buffer("in_std", torch.ones(self.in_dim, **f32))
        self.register_buffer("out_mean", torch.zeros(dz, **f32))
        self.register_buffer("out_scale", torch.ones(dz, **f32))
        m = problem.residual(torch.zeros(1, dz, dtype=torch.float64, device=problem.device),
                             self._dummy_batch(True)).shape[1]
        self.register_buffer("z_map", torch.zeros(dz, m, **f32))  # mean pinv of the residual Jacobian
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    # ------------------------------------------------------------------ network
    def _dummy_batch(self, context: bool = False) -> WindowBatch:
        c, k = self.problem.controller, self.problem.steps
        x = torch.zeros(1, c.state_dim, dtype=torch.float64, device=self.problem.device)
        if self.problem.match == "next_state":
            return self.problem.batch(x, target=x.clone(), with_context=context)
        return self.problem.batch(x, states=x[:, None].expand(1, k, -1).clone(),
                                  actions=x.new_zeros(1, k, c.action_dim), with_context=context)

    def _features(self, batch: WindowBatch) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        """``(x (B, f), z_base (B, dz) or None, exact (B,) or None)``."""
        if self.custom_features is None:
            return window_features(batch, self.problem.match, self.drop_dims), None, None
        out = self.custom_features(batch)
        x, base, exact = (tuple(out) + (None, None))[:3] if isinstance(out, tuple) else (out, None, None)
        if base is not None and tuple(base.shape) != (x.shape[0], self.problem.controller.z_dim):
            raise ValueError(f"features returned z_base of shape {tuple(base.shape)}, expected "
                             f"({x.shape[0]}, {self.problem.controller.z_dim})")
        if exact is not None and (tuple(exact.shape) != (x.shape[0],) or exact.dtype != torch.bool):
            raise ValueError(f"features returned exact of shape {tuple(exact.shape)} ({exact.dtype}), expected ({x.shape[0]},) bool")
        return x, base, exact

    def forward(self, batch: WindowBatch) -> Tensor:
        """``z (B, dz)`` in the batch's dtype, inside the controller's z bounds. Needs no context."""
        x, base, exact = self._features(batch)
        y = (self.out_mean + self.out_scale * self.net((x.to(torch.float32) - self.in_mean) / self.in_std)).to(batch.state0.dtype)
        if base is None:
            return self._into_bounds(y)
        c = self.problem.controller
        if exact is not None:
            y = torch.where(exact[:, None], torch.zeros_like(y), y)
        # the base is clipped first: a correction starting on the bound still gets a gradient inwards
        return c.clamp_z(c.clamp_z(base.to(y)) + y)

    def _into_bounds(self, y: Tensor) -> Tensor:
        c = self.problem.controller
        lo, hi = c.z_low.to(y), c.z_high.to(y)
        finite = torch.isfinite(lo) & torch.isfinite(hi)
        mid = torch.where(finite, (lo + hi) / 2, torch.zeros_like(lo))
        half = torch.where(finite, ((hi - lo) / 2).clamp_min(1e-12), torch.ones_like(lo))
        z = torch.where(finite, mid + half * torch.tanh((y - mid) / half), y)
        return c.clamp_z(z)

    # ------------------------------------------------------------------ training
    def calibrate(self, batch: WindowBatch, max_windows: int = 4096) -> None:
        """Set the input normalisation, the output scale and the z-units map from unlabelled windows.

        The reference z is the analytic solution if the controller is affine in z, else 10 LM
        iterations from the middle of the bounds (from ``z_base`` if the features give one); only
        its spread is used (no label). With a base, the output scale is the spread of the reference
        minus the base and the output mean is 0 (the base is the estimate).
        """
        p, c = self.problem, self.problem.controller
        sub = select_windows(batch, torch.arange(min(len(batch), max_windows)))
        with torch.no_grad():
            _, base, _ = self._features(sub)
            if c.is_affine:
                z_ref = AnalyticSolver().solve(p, sub).z
            else:
                z_ref = LevenbergMarquardt(max_iter=10).solve(p, sub, None if base is None else c.clamp_z(base)).z
            _, J = residual_jacobian(p, z_ref, sub, saturate=False)
            P = torch.linalg.pinv(J).mean(0)
            x = self._features(batch)[0].double()
        self.in_mean.copy_(x.mean(0))
        self.in_std.copy_(x.std(0).clamp_min(1e-6 * (1 + x.abs().mean(0))))
        if base is None:
            mu, sd = z_ref.mean(0), z_ref.std(0)
        else:
            sd = (z_ref - c.clamp_z(base)).std(0)
            mu = torch.zeros_like(sd)
        self.out_mean.copy_(mu)
        self.out_scale.copy_(sd.clamp_min(1e-6 * (1 + mu.abs())))
        self.z_map.copy_(P)

    def loss(self, batch: WindowBatch) -> Tensor:
        """Per-window robust loss ``(B,)``: ``log1p(|P r(g(x)) / s|^2 / delta^2)``."""
        z = self(batch)
        r = self.problem.residual(z, batch)
        e = (r.to(torch.float32) @ self.z_map.T) / self.out_scale
        return torch.log1p(e.pow(2).sum(-1) / self.delta ** 2)

    def fit(
        self,
        batch: WindowBatch,
        epochs: int = 200,
        batch_size: int = 4096,
        lr: float = 3e-3,
        val_fraction: float = 0.1,
        patience: int = 20,
        seed: int = 0,
        progress: bool = True,
    ) -> Dict[str, list]:
        """Train on unlabelled windows (with their context) by minimising the robust residual loss.

        A random ``val_fraction`` of the windows is held out; the weights of the best held-out
        epoch are kept and training stops after ``patience`` epochs without improvement. The
        learning rate decays on a cosine to 0 over ``epochs``. Same ``seed`` and data give
        identical weights. Returns ``{"train_loss", "val_loss", "best_epoch"}``.
        """
        if batch.context is None:
            raise ValueError("batch needs its controller context (InverseProblem.batch(..., with_context=True))")
        n = len(batch)
        if n < 2:
            raise ValueError(f"fit needs at least 2 windows, got {n}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(n, generator=g)
        n_val = max(1, int(round(val_fraction * n)))
        train = select_windows(_cast_batch(batch, torch.float32), perm[n_val:])
        val = select_windows(_cast_batch(batch, torch.float32), perm[:n_val])
        self.calibrate(select_windows(batch, perm[n_val:]))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for mod in self.net:
                if isinstance(mod, nn.Linear):
                    mod.reset_parameters()
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)
        opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        history: Dict[str, list] = {"train_loss": [], "val_loss": [], "best_epoch": []}
        best, best_state, since = float("inf"), copy.deepcopy(self.net.state_dict()), 0
        bar = tqdm(range(epochs), desc="amortized inverse", unit="epoch", disable=not progress)
        for epoch in bar:
            mean = train_epoch(lambda idx: self.loss(select_windows(train, idx)).mean(), torch.arange(len(train)),
                               batch_size, opt, g)
            sched.step()
            with torch.no_grad():
                v = float(torch.cat([self.loss(select_windows(val, torch.arange(i, min(i + batch_size, n_val))))
                                     for i in range(0, n_val, batch_size)]).mean())
            history["train_loss"].append(mean)
            history["val_loss"].append(v)
            if v < best:
                best, best_state, since = v, copy.deepcopy(self.net.state_dict()), 0
                history["best_epoch"] = [epoch]
            else:
                since += 1
            bar.set_postfix(train=f"{mean:.3g}", val=f"{v:.3g}")
            if since >= patience:
                break
        self.net.load_state_dict(best_state)
        self.fitted.fill_(True)
        return history

    # ------------------------------------------------------------------ solving
    def solve(self, problem: InverseProblem, batch: WindowBatch, z0: Optional[Tensor] = None) -> AmortizedResult:
        """Solver interface: network z, then ``polish`` LM iterations, then the fallback on flagged windows.

        ``z0`` is ignored (the network is its own start). The residual needs the batch context.
        """
        if problem is not self.problem and problem.controller is not self.problem.controller:
            raise ValueError("problem must use the controller this AmortizedInverse was built for")
        self._check_fitted()
        n, dev = len(batch), batch.state0.device
        with torch.no_grad():
            z = self(batch)
        if self.polish > 0:
            res = LevenbergMarquardt(max_iter=self.polish).solve(problem, batch, z)
            z, residual, iters = res.z, res.residual, res.iterations
        else:
            with torch.no_grad():
                residual = problem.residual(z, batch).norm(dim=-1)
            iters = torch.zeros(n, dtype=torch.int64, device=dev)
        flagged = ~(residual <= self.tolerance) if self.tolerance is not None else torch.zeros(n, dtype=torch.bool, device=dev)
        used = torch.zeros(n, dtype=torch.bool, device=dev)
        if self.fallback is not None and bool(flagged.any()):
            idx = flagged.nonzero().squeeze(-1)
            fb = self.fallback.solve(problem, select_windows(batch, idx), z[idx])
            better = ~(fb.residual >= residual[idx])  # NaN-safe: a finite fallback beats a NaN
            pick = idx[better]
            z, residual, iters = z.clone(), residual.clone(), iters.clone()
            z[pick], residual[pick] = fb.z[better].to(z), fb.residual[better].to(residual)
            iters[idx] += fb.iterations.to(iters)
            used[pick] = True
        converged = (residual <= self.tolerance) if self.tolerance is not None else torch.isfinite(residual)
        return AmortizedResult(z, residual, converged, iters, flagged, used)

    def inverter(self, compute_residual: bool = False, dtype: torch.dtype = torch.float64,
                 state_key: str = "states") -> "AmortizedInverter":
        """An ``Inverter`` for :func:`relabel`. ``compute_residual=False`` is the network alone: no
        context is built, the residual column is NaN and ``converged`` False (nothing was checked)."""
        return AmortizedInverter(self, compute_residual, dtype, state_key)

    def describe(self) -> str:
        """Settings and a hash of the weights (a resumed relabel never mixes chunks of two networks)."""
        fb = type(self.fallback).__name__ if self.fallback is not None else None
        # a function by its name (its repr holds an address), a features object by its repr (its settings)
        feats = getattr(self.custom_features, "__qualname__", None) or repr(self.custom_features)
        h = hashlib.sha256(b"".join(t.detach().cpu().numpy().tobytes() for t in self.state_dict().values())).hexdigest()[:16]
        return (f"AmortizedInverse(hidden={list(self.hidden)}, polish={self.polish}, tolerance={self.tolerance}, "
                f"fallback={fb}, match={self.problem.match}, features={feats}, weights={h})")

    def _check_fitted(self) -> None:
        if not bool(self.fitted):
            raise RuntimeError("AmortizedInverse is not trained: call fit() or load()")

    # ------------------------------------------------------------------ persistence
    def config(self) -> Dict[str, Any]:
        return {"hidden": list(self.hidden), "drop_dims": list(self.drop_dims), "delta": self.delta,
                "in_dim": self.in_dim, "z_dim": self.problem.controller.z_dim, "match": self.problem.match,
                "steps": self.problem.steps}

    def save(self, path: PathLike) -> None:
        """Write weights, normalisation and settings (atomically); read back with :meth:`load`."""
        buf = io.BytesIO()
        torch.save({"config": self.config(), "state_dict": self.state_dict()}, buf)
        atomic_write_bytes(Path(path), buf.getvalue())

    @classmethod
    def load(cls, path: PathLike, problem: InverseProblem, features: Optional[Features] = None,
             **solve_options: Any) -> "AmortizedInverse":
        """Rebuild a saved network for ``problem`` (``torch.load(weights_only=True)``).

        ``solve_options``: ``tolerance``, ``polish``, ``fallback`` (not saved: they are run settings).
        """
        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
        cfg = blob["config"]
        inv = cls(problem, hidden=cfg["hidden"], drop_dims=cfg["drop_dims"], features=features, delta=cfg["delta"],
                  **solve_options)
        mine = inv.config()
        for key in ("in_dim", "z_dim", "match", "steps"):
            if mine[key] != cfg[key]:
                raise ValueError(f"{path} was trained for {key}={cfg[key]!r}, this problem has {mine[key]!r}")
        inv.load_state_dict(blob["state_dict"])
        return inv


@dataclass
class AmortizedInverter:
    """``(dataset, starts) -> InverseResult`` for :func:`~ohio_layers.inverse.relabel` with an amortised inverse.

    ``compute_residual=True`` builds the context and runs :meth:`AmortizedInverse.solve` (polish,
    flags, fallback); ``False`` evaluates the network alone on the observed data.
    """

    inverse: AmortizedInverse
    compute_residual: bool = False
    dtype: torch.dtype = torch.float64
    state_key: str = "states"

    def __call__(self, dataset: Dataset, starts: np.ndarray) -> InverseResult:
        p = self.inverse.problem
        batch = p.batch_from_dataset(dataset, starts, self.dtype, self.state_key, with_context=self.compute_residual)
        if self.compute_residual:
            return self.inverse.solve(p, batch)
        self.inverse._check_fitted()
        with torch.no_grad():
            z = self.inverse(batch)
        n = len(batch)
        return InverseResult(z, torch.full((n,), math.nan, dtype=z.dtype, device=z.device),
                             torch.zeros(n, dtype=torch.bool, device=z.device),
                             torch.zeros(n, dtype=torch.int64, device=z.device))

    def describe(self) -> str:
        return f"{self.inverse.describe()}+residual={self.compute_residual}"
