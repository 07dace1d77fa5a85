"""OHIO relabelling of recorded manipulation data for a controller setting, and its verification.

One high-level decision per policy step (k = 1; z is held over the 5 torque sub-steps),
``z (7,) = (OSCInverse z* (6), recorded gripper)`` for the controller of the given setting, found
by matching the recorded torques on the recorded sub-step states (teacher forcing, no dynamics
model). :func:`verify_relabelling` replays z* through the controller on those states and reports
how well it reproduces the recorded torques.

*De-saturation.* The recorded torques are clipped (robosuite clips to the actuator limits; the
Panda's wrist joints saturate on 30-60 % of scripted transitions). Under the recording controller
that is harmless (clipped equations are inequalities), but for a controller with *other* gains a
saturated transition leaves z weakly determined, and the inverse trades orientation against
position (Door, damping ratio 3: 44 % of saturated transitions got an orientation label > 0.1 rad
off, although the orientation gains were unchanged; replaying such labels fails to open the door).
When the recording controller is known (``source``), its exact inverse recovers the commanded
z and with it the *unclipped* torques ``law(z_src)``; the target controller is then inverted
against those, all joints, all sub-steps (2 % off). Transitions the source inverse does not
reproduce keep the direct (clipped-torque) inverse.

A controller is given as a *setting*: any object with ``name``, ``make_controller(**kwargs)``
returning an :class:`~ohio_layers.lowlevel.osc.OperationalSpaceController` and ``to_dict()``
(:class:`ControllerFactory`; e.g. :class:`ohio_layers.envs.manipulation.ControllerSetting`), so
this module needs no simulator and no env.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Protocol, Tuple, Union

import numpy as np
import torch

from ..data.dataset import Dataset
from ..data.io import PathLike
from .osc_inverse import OSCInverse
from .relabel import relabel
from .result import InverseResult

__all__ = ["ControllerFactory", "OSCRelabeler", "relabel_manipulation", "verify_relabelling"]


class ControllerFactory(Protocol):
    """What the relabeller needs of a controller setting (gains known, controller built on demand)."""

    name: str

    def make_controller(self, **kwargs: Any) -> Any:
        """A fresh :class:`~ohio_layers.lowlevel.osc.OperationalSpaceController` with these gains."""

    def to_dict(self) -> Dict[str, Any]:
        """The setting as plain data (for provenance)."""



class OSCRelabeler:
    """Inverter ``(dataset, starts) -> InverseResult`` for :func:`ohio_layers.inverse.relabel` with k = 1.

    z ``(B, 7)`` = the OSC inverse's pose delta (6, for ``setting``'s gains) and the recorded
    gripper command; the residual is that of the 35 sub-step (clipped) torques.

    Args:
        setting: the controller to relabel for.
        inverse: the OSC inverse (default :class:`~ohio_layers.inverse.osc_inverse.OSCInverse`).
        source: the controller that recorded the data, if known: de-saturate through it (module
            docstring). ``None`` inverts against the recorded, clipped torques directly.
        source_tol: a transition counts as reproduced by the source inverse when its torque
            residual is ``<= source_tol (1 + |tau|)``.
        device: where the controllers are built and each chunk's windows go (the dataset is numpy:
            one copy of each chunk to the device, the labels come back once per chunk in ``relabel``).
    """

    def __init__(self, setting: ControllerFactory, inverse: Any = None, source: Optional[ControllerFactory] = None,
                 source_tol: float = 1e-6, device: Union[str, torch.device] = "cpu") -> None:
        self.setting, self.source, self.source_tol = setting, source, float(source_tol)
        self.device = torch.device(device)
        self.controller = setting.make_controller().to(self.device)
        self.inverse = inverse if inverse is not None else OSCInverse()

    def __call__(self, dataset: Dataset, starts: np.ndarray) -> InverseResult:
        dev = self.device
        states = torch.as_tensor(dataset["substep_states"][starts], dtype=torch.float64, device=dev)
        torques = torch.as_tensor(dataset["substep_torques"][starts], dtype=torch.float64, device=dev)
        B = len(starts)
        z = states.new_zeros(B, 6)
        converged, iters = torch.zeros(B, dtype=torch.bool, device=dev), torch.zeros(B, dtype=torch.int64, device=dev)
        ok = torch.zeros(B, dtype=torch.bool, device=dev)
        if self.source is not None:
            unclipped, ok = self.unclipped_torques(states, torques)
            if bool(ok.any()):
                free = self.setting.make_controller(saturation="none").to(dev)
                de = OSCInverse(max_iter=self.inverse.max_iter, refine=False).invert(free, states[ok], unclipped[ok])
                z[ok], converged[ok], iters[ok] = de.z, de.converged, de.iterations
        rest = ~ok
        if bool(rest.any()):
            direct = self.inverse.invert(self.controller, states[rest], torques[rest])
            z[rest], converged[rest], iters[rest] = direct.z, direct.converged, direct.iterations
        residual = OSCInverse.residual(self.controller, z, states, torques).norm(dim=-1)
        grip = torch.as_tensor(dataset["actions"][starts, 6:7], dtype=torch.float64, device=dev)
        return InverseResult(torch.cat([z, grip], -1), residual, converged, iters)

    def unclipped_torques(self, states: torch.Tensor, torques: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(tau (B, k, n), reproduced (B,))``: the source controller's unclipped torques at its recovered z."""
        if self.source is None:
            raise ValueError("unclipped_torques needs the recording controller: construct with source=...")
        src = self.source.make_controller().to(self.device)
        z_src = self.inverse.invert(src, states, torques)
        scale = 1.0 + torques.reshape(len(torques), -1).norm(dim=-1)
        ok = z_src.residual <= self.source_tol * scale
        ctx = src.context(states[:, 0])
        with torch.no_grad():
            tau = torch.stack([src.law(states[:, j], z_src.z, ctx, j) for j in range(states.shape[1])], 1)
        return tau, ok

    def describe(self) -> str:
        source = None if self.source is None else self.source.to_dict()
        device = f"|device={self.device}" if self.device.type != "cpu" else ""  # a GPU may differ bitwise: another key
        return (f"OSCInverse{self.inverse}|setting={self.setting.to_dict()}|source={source}|source_tol={self.source_tol}"
                f"{device}")


def relabel_manipulation(dataset: Dataset, setting: ControllerFactory, out_path: PathLike, *, chunk_size: int = 2048,
                         tolerance: float = 1e-4, progress: bool = True,
                         source: Optional[ControllerFactory] = None, inverter: Any = None) -> Tuple[Dataset, Any]:
    """OHIO relabelling of every step for ``setting``; returns ``(high-level Dataset, RelabelReport)``.

    The high-level dataset holds ``z (N, 7)``, ``z_executed`` (for comparison with the original
    setting) and the usual columns. ``tolerance`` (N m, Euclidean over the 35 torques) decides
    "reproduced" in the report; ``source`` is the recording controller (see :class:`OSCRelabeler`).
    ``inverter`` replaces the exact ``OSCRelabeler(setting, source=source)`` (e.g. an
    :class:`~ohio_layers.inverse.osc_amortized.AmortizedOSCRelabeler`; ``setting`` and ``source`` are then unused).
    """
    dataset.require(["substep_states", "substep_torques", "actions", "z_executed"])
    inverter = inverter if inverter is not None else OSCRelabeler(setting, source=source)
    return relabel(dataset, inverter, 1, out_path, chunk_size=chunk_size, tolerance=tolerance,
                   progress=progress, extra_keys=("z_executed", "success"))


def verify_relabelling(dataset: Dataset, z: np.ndarray, setting: ControllerFactory, *, tolerance: float = 1e-4,
                       max_windows: Optional[int] = None, seed: int = 0) -> Dict[str, Any]:
    """Dynamics-free check: replay ``z (N, >=6)`` through the controller on the recorded sub-step states.

    Returns statistics of the torque error ``|tau(z; s_j) - tau_j|`` (N m): per-window max over the
    35 torques (median, p90, p99, max), the share of windows reproduced within ``tolerance``, the
    share of recorded sub-step torques at a limit, and -- when ``z_executed`` exists -- the error
    of z against the executed delta (meaningful for the original setting only).
    """
    n = len(dataset)
    rows = np.arange(n)
    if max_windows is not None and n > max_windows:
        rows = np.sort(np.random.default_rng(seed).choice(n, max_windows, replace=False))
    c = setting.make_controller()
    states = torch.as_tensor(dataset["substep_states"][rows], dtype=torch.float64)
    torques = torch.as_tensor(dataset["substep_torques"][rows], dtype=torch.float64)
    zz = torch.as_tensor(np.asarray(z)[rows, :6], dtype=torch.float64)
    with torch.no_grad():
        err = OSCInverse.residual(c, zz, states, torques).abs().amax(-1).numpy()
    limit = c.action_high.numpy()
    saturated = (np.abs(dataset["substep_torques"][rows]) >= limit - 1e-9)
    q = np.quantile(err, [0.5, 0.9, 0.99])
    out: Dict[str, Any] = {"setting": setting.name, "windows": int(rows.size), "tolerance": tolerance,
                           "reproduced_share": float((err <= tolerance).mean()), "torque_error_median": float(q[0]),
                           "torque_error_p90": float(q[1]), "torque_error_p99": float(q[2]), "torque_error_max": float(err.max()),
                           "saturated_torque_share": float(saturated.mean()),
                           "windows_with_saturation": float(saturated.any((1, 2)).mean())}
    zr = np.asarray(z)[rows, :6]
    out["z_abs_max"] = np.abs(zr).max(0).tolist()
    out["z_beyond_original_range"] = float((np.abs(zr) > np.r_[[0.05] * 3, [0.5] * 3] + 1e-9).any(1).mean())
    if "z_executed" in dataset:
        dz = np.abs(zr - dataset["z_executed"][rows]).max(1)
        out.update({"z_error_vs_executed_median": float(np.median(dz)), "z_error_vs_executed_p99": float(np.quantile(dz, 0.99)),
                    "z_share_within_1e-4_of_executed": float((dz <= 1e-4).mean())})
    return out
