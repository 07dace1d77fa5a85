"""Behaviour policies for :class:`~ohio_layers.envs.reacher.GoalReacherEnv` that need no training.

Every policy has the same small interface (:class:`ReacherPolicy`)::

    policy.reset(seed)                       # start of an episode: seeds its noise, clears its state
    action = policy.act(observation, state)  # observation (10,), controller state x (4,) -> torque (2,)
    policy.config()                          # JSON-able description, stored in dataset metadata

* :class:`ExpertPolicy` -- flat expert: analytic IK (elbow branch and 2*pi winding of q1 nearest
  the current state, |q2| <= 2.95) + joint PD (kp 6, kd 0.3) on torques, clipped to [-1, 1];
  optional Gaussian noise sigma, re-clipped. (kd 0.5 chatters: kd * B_vel ~ 2 puts a closed-loop
  eigenvalue at -1.)
* :class:`LQRHierarchicalPolicy` -- a high level chooses ``z`` every k steps; the low level is
  :class:`~ohio_layers.lowlevel.LQRGoalController` (gains from the window-start state, z positions
  relative to it), so the true z of every step is known (``current_z``). The high level is any
  callable ``(observation, state) -> z (4,)``: the :class:`LeadOracle` heuristic, or a trained
  actor through :meth:`LQRHierarchicalPolicy.from_torch_actor`.
* :class:`RandomPolicy` -- uniform torques in [-1, 1]^2 (the "0" of the normalised score).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Protocol, Sequence, Union, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from ...lowlevel.dynamics import Linearization
from ...lowlevel.lqr import LQRGoalController
from .settings import LINK_LENGTHS, OBS_TARGET
from .linearization import ReacherFDLinearization

#: IK clip of |q2| (joint1 is limited to +-3 rad; the FD Jacobian degrades near the limit).
Q2_MAX = 2.95
#: Reference LQR weights (kept deliberately: stiffer weights make the naive z = s' relabelling
#: almost as good as a real inverse, see shared/reference/reacher-on-this-machine.md section 3).
LQR_Q = (10.0, 10.0, 1.0, 1.0)
LQR_R = 0.1
#: z bounds: >= 8*pi, since inverted expert z reach |z| ~ 25 on multi-goal data.
Z_BOUND = 8 * math.pi
_POLICY_STREAM = 0x0A11  # separates policy noise from the env's own seed stream


def _rng(seed: Optional[int]) -> np.random.Generator:
    """Policy noise generator; for an int seed it differs from the env's ``np_random(seed)`` stream."""
    return np.random.default_rng(None if seed is None else [_POLICY_STREAM, int(seed)])


def _as_vector(name: str, value: Any, dim: int) -> np.ndarray:
    v = np.asarray(value, dtype=np.float64)
    if v.shape != (dim,):
        raise ValueError(f"{name} must have shape ({dim},), got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or inf")
    return v


@runtime_checkable
class ReacherPolicy(Protocol):
    """The behaviour-policy interface used by :func:`ohio_layers.envs.reacher_data.collect`."""

    def reset(self, seed: Optional[int] = None) -> None: ...

    def act(self, observation: np.ndarray, state: np.ndarray) -> np.ndarray: ...

    def config(self) -> Dict[str, Any]: ...


# ---------------------------------------------------------------------------- kinematics
def inverse_kinematics(target: np.ndarray, q_current: np.ndarray, q2_max: float = Q2_MAX) -> np.ndarray:
    """Joint angles ``(..., 2)`` putting the fingertip on ``target (..., 2)``.

    Of the two elbow branches, and of the 2*pi windings of the unlimited q1, picks the solution
    nearest ``q_current (..., 2)`` (Euclidean in joint space). ``|q2|`` is clipped to ``q2_max``
    (targets closer than ~0.018 m to the base need |q2| >= 3, beyond joint1's limit); q1 is then
    chosen for the clipped q2 so the fingertip points at the target. Unreachable far targets
    give the stretched arm pointing at them.
    """
    g = np.asarray(target, dtype=np.float64)
    qc = np.asarray(q_current, dtype=np.float64)
    if g.shape[-1] != 2 or qc.shape[-1] != 2:
        raise ValueError(f"target and q_current must end in a dimension of 2, got {g.shape} and {qc.shape}")
    l1, l2 = LINK_LENGTHS
    r2 = np.sum(g**2, axis=-1)
    c2 = np.clip((r2 - l1**2 - l2**2) / (2 * l1 * l2), -1.0, 1.0)
    base = np.arccos(c2)
    heading = np.arctan2(g[..., 1], g[..., 0])
    best_q, best_d = None, None
    for sign in (1.0, -1.0):
        q2 = np.clip(sign * base, -q2_max, q2_max)
        q1 = heading - np.arctan2(l2 * np.sin(q2), l1 + l2 * np.cos(q2))
        q1 = qc[..., 0] + (q1 - qc[..., 0] + np.pi) % (2 * np.pi) - np.pi  # nearest winding
        d = (q1 - qc[..., 0]) ** 2 + (q2 - qc[..., 1]) ** 2
        q = np.stack([q1, q2], -1)
        if best_q is None:
            best_q, best_d = q, d
        else:
            take = d < best_d
            best_q = np.where(take[..., None], q, best_q)
            best_d = np.where(take, d, best_d)
    assert best_q is not None
    return best_q


# ---------------------------------------------------------------------------- flat policies
class ExpertPolicy:
    """Flat expert: ``u = clip(clip(kp (IK(target) - q) - kd qdot, +-1) + sigma * N(0, I), +-1)``.

    Args:
        noise_std: sigma of the Gaussian action noise (0, 0.1 and 0.3 are the reference levels).
        kp, kd: PD gains on the joint error (defaults 6, 0.3; kd 0.5 chatters).
        q2_max: IK clip of |q2|.
    """

    def __init__(self, noise_std: float = 0.0, kp: float = 6.0, kd: float = 0.3, q2_max: float = Q2_MAX) -> None:
        for name, v in (("noise_std", noise_std), ("kp", kp), ("kd", kd)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite float >= 0, got {v!r}")
        if not 0 < q2_max <= 3.0:
            raise ValueError(f"q2_max must be in (0, 3], got {q2_max!r}")
        self.noise_std, self.kp, self.kd, self.q2_max = float(noise_std), float(kp), float(kd), float(q2_max)
        self._rng = _rng(None)

    def reset(self, seed: Optional[int] = None) -> None:
        self._rng = _rng(seed)

    def act(self, observation: np.ndarray, state: np.ndarray) -> np.ndarray:
        """``observation (10,)``, ``state (4,)`` -> torque ``(2,)`` in [-1, 1]."""
        obs = np.asarray(observation, dtype=np.float64)
        x = _as_vector("state", state, 4)
        q_goal = inverse_kinematics(obs[OBS_TARGET], x[:2], self.q2_max)
        u = np.clip(self.kp * (q_goal - x[:2]) - self.kd * x[2:], -1.0, 1.0)
        if self.noise_std > 0:
            u = np.clip(u + self.noise_std * self._rng.standard_normal(2), -1.0, 1.0)
        return u

    def config(self) -> Dict[str, Any]:
        return {"name": "expert", "noise_std": self.noise_std, "kp": self.kp, "kd": self.kd, "q2_max": self.q2_max}


class RandomPolicy:
    """Uniform random torques in ``[-1, 1]^2``."""

    def __init__(self) -> None:
        self._rng = _rng(None)

    def reset(self, seed: Optional[int] = None) -> None:
        self._rng = _rng(seed)

    def act(self, observation: np.ndarray, state: np.ndarray) -> np.ndarray:
        return self._rng.uniform(-1.0, 1.0, size=2)

    def config(self) -> Dict[str, Any]:
        return {"name": "random"}


# ---------------------------------------------------------------------------- hierarchical
def make_reacher_lqr(
    linearization: Optional[Linearization] = None,
    horizon: int = 5,
    Q: Union[float, Sequence[float]] = LQR_Q,
    R: Union[float, Sequence[float]] = LQR_R,
    z_bound: float = Z_BOUND,
) -> LQRGoalController:
    """The reacher low level: ``LQRGoalController`` on the env-step FD linearisation, z positions
    relative to the window start (``relative_dims=(0, 1)``), |z| <= ``z_bound``, |u| <= 1."""
    lin = ReacherFDLinearization() if linearization is None else linearization
    return LQRGoalController(lin, state_dim=4, action_dim=2, horizon=horizon, Q=Q, R=R,
                             relative_dims=(0, 1), z_bound=z_bound, action_bound=1.0)


HighLevel = Callable[[np.ndarray, np.ndarray], np.ndarray]


class LeadOracle:
    """Heuristic high level: ``z = (lead * (IK(target) - q), 0, 0) + noise`` (z positions relative).

    With the reference LQR weights the controller relaxes slowly (time constant ~1 s), so
    ``z = (IK, 0)`` needs ~300 steps; leading by ``lead = 10`` reaches in ~27 steps.

    Args:
        lead: factor on the joint error.
        noise_std: Gaussian noise on z, scalar or per dimension ``(4,)``.
        q2_max: IK clip of |q2|.
    """

    def __init__(self, lead: float = 10.0, noise_std: Union[float, Sequence[float]] = 0.0, q2_max: float = Q2_MAX) -> None:
        if not (math.isfinite(lead) and lead > 0):
            raise ValueError(f"lead must be a positive float, got {lead!r}")
        ns = np.broadcast_to(np.asarray(noise_std, dtype=np.float64), (4,)).copy()
        if not np.all(np.isfinite(ns)) or np.any(ns < 0):
            raise ValueError(f"noise_std must be >= 0 (scalar or (4,)), got {noise_std!r}")
        self.lead, self.noise_std, self.q2_max = float(lead), ns, float(q2_max)
        self._rng = _rng(None)

    def reset(self, seed: Optional[int] = None) -> None:
        self._rng = _rng(seed)

    def __call__(self, observation: np.ndarray, state: np.ndarray) -> np.ndarray:
        x = _as_vector("state", state, 4)
        q_goal = inverse_kinematics(np.asarray(observation, dtype=np.float64)[OBS_TARGET], x[:2], self.q2_max)
        z = np.concatenate([self.lead * (q_goal - x[:2]), np.zeros(2)])
        if np.any(self.noise_std > 0):
            z = z + self.noise_std * self._rng.standard_normal(4)
        return z

    def config(self) -> Dict[str, Any]:
        return {"name": "lead_oracle", "lead": self.lead, "noise_std": self.noise_std.tolist(), "q2_max": self.q2_max}


class LQRHierarchicalPolicy:
    """High level every k steps + LQR low level, stepping a single env.

    At window starts (every ``k = controller.horizon`` calls of :meth:`act` since :meth:`reset`)
    the high level gives ``z`` (4,), which is projected on the controller's z bounds, and the
    controller context (FD linearisation + Riccati gains) is computed at the current state. Within
    the window ``u_l = controller.act(x_l, z, context, step=l)``. ``current_z`` is the z behind the
    last returned action (what datasets record as ``z_true``); ``window_step`` its step in the window.

    Args:
        high_level: ``(observation (10,), state (4,)) -> z (4,)``; if it has ``reset(seed)``, it is
            reset with the policy.
        controller: default :func:`make_reacher_lqr`.
        dtype: torch dtype the controller runs in (float64 default).
    """

    def __init__(self, high_level: HighLevel, controller: Optional[LQRGoalController] = None,
                 dtype: torch.dtype = torch.float64) -> None:
        if not callable(high_level):
            raise TypeError(f"high_level must be callable (observation, state) -> z, got {type(high_level).__name__}")
        self.high_level = high_level
        self.controller = make_reacher_lqr() if controller is None else controller
        if self.controller.state_dim != 4 or self.controller.action_dim != 2 or self.controller.z_dim != 4:
            raise ValueError("controller must map state (4,) and z (4,) to action (2,)")
        self.dtype = dtype
        self.k = int(self.controller.horizon)
        self._count = 0
        self._ctx: Optional[Dict[str, Tensor]] = None
        self._z: Optional[Tensor] = None
        self.current_z: Optional[np.ndarray] = None
        self.window_step = -1

    @classmethod
    def from_torch_actor(cls, actor: Callable[[Tensor], Tensor], controller: Optional[LQRGoalController] = None,
                         obs_dtype: torch.dtype = torch.float32, use_state: bool = False) -> "LQRHierarchicalPolicy":
        """Wrap a trained actor ``(1, d) tensor -> z (1, 4)`` (or ``(4,)``) as the high level.

        The actor sees the observation (default) or, with ``use_state``, the controller state. It is
        called under ``torch.no_grad()``; pass e.g. ``lambda o: agent.actor.act(o, deterministic=True)``.
        """
        def high_level(observation: np.ndarray, state: np.ndarray) -> np.ndarray:
            inp = torch.as_tensor(np.asarray(state if use_state else observation), dtype=obs_dtype).unsqueeze(0)
            with torch.no_grad():
                z = actor(inp)
            return np.asarray(z.detach().cpu().to(torch.float64).numpy(), dtype=np.float64).reshape(4)

        return cls(high_level, controller)

    def reset(self, seed: Optional[int] = None) -> None:
        self._count, self._ctx, self._z, self.current_z, self.window_step = 0, None, None, None, -1
        reset = getattr(self.high_level, "reset", None)
        if callable(reset):
            reset(seed)

    def act(self, observation: np.ndarray, state: np.ndarray) -> np.ndarray:
        """``observation (10,)``, ``state (4,)`` -> torque ``(2,)`` in [-1, 1]."""
        x = torch.as_tensor(_as_vector("state", state, 4), dtype=self.dtype).unsqueeze(0)
        step = self._count % self.k
        if step == 0 or self._ctx is None:
            z = torch.as_tensor(_as_vector("z", self.high_level(observation, state), 4), dtype=self.dtype).unsqueeze(0)
            self._z = self.controller.clamp_z(z)
            with torch.no_grad():
                self._ctx = self.controller.context(x)
            self.current_z = self._z[0].numpy().copy()
        assert self._z is not None
        with torch.no_grad():
            u = self.controller.act(x, self._z, self._ctx, step=step)
        self.window_step = step
        self._count += 1
        return u[0].to(torch.float64).numpy().copy()

    def config(self) -> Dict[str, Any]:
        hl = self.high_level
        hl_cfg = hl.config() if callable(getattr(hl, "config", None)) else {"name": type(hl).__name__}
        c = self.controller
        return {"name": "lqr_hierarchical", "k": self.k, "high_level": hl_cfg,
                "controller": {"type": type(c).__name__, "Q": c.Q.diagonal().tolist() if hasattr(c, "Q") else None,
                               "R": c.R.diagonal().tolist() if hasattr(c, "R") else None,
                               "z_high": c.z_high.tolist()}}


def heuristic_hierarchical_policy(lead: float = 10.0, noise_std: Union[float, Sequence[float]] = 0.0,
                                  controller: Optional[LQRGoalController] = None) -> LQRHierarchicalPolicy:
    """The lead-oracle high level on the reacher LQR (:class:`LeadOracle` + :func:`make_reacher_lqr`)."""
    return LQRHierarchicalPolicy(LeadOracle(lead=lead, noise_std=noise_std), controller)


__all__ = [
    "ReacherPolicy", "inverse_kinematics", "ExpertPolicy", "RandomPolicy", "make_reacher_lqr",
    "LeadOracle", "LQRHierarchicalPolicy", "heuristic_hierarchical_policy", "Q2_MAX", "Z_BOUND",
]
