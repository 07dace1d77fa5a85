"""Finite-difference linearisation of the *true* Reacher-v5 env step (RK4, ``frame_skip`` 2).

``ReacherFDLinearization()(state (B, 4)) -> (A (B, 4, 4), B (B, 4, 2))`` with
``x' ~= A x + B u`` for the arm block ``x = (q1, q2, qdot1, qdot2)`` and torques ``u`` in
[-1, 1], evaluated at ``u = 0`` (the affine-free form the LQR controller uses).

How (and why this way):

* Central differences of the whole env step: ``2 * (4 + 2) = 12`` perturbed rollouts per state,
  each ``frame_skip`` RK4 sub-steps with the control held, run in one batched
  ``mujoco.rollout`` call from full-physics initial states. Measured on the 2-core CI machine:
  ~0.2 ms per state in batches, ~0.35 ms for a single state (a scratch-``MjData`` Python loop
  costs ~0.32 ms per state in every case, and gives bit-identical matrices).
* **Not** ``mjd_transitionFD`` on an Euler copy of the model: that refuses RK4, and the Euler copy's
  B has position rows 1.49x too large (see ``shared/reference/reacher-on-this-machine.md``).
* Joint limits are **disabled** (``mjDSBL_LIMIT``) on the private model copy by default: near the
  joint1 limit (|q2| -> 3 rad) the limit constraint otherwise enters the Jacobian (A entries jump
  to ~18, B_vel drops from 3.96 to 0.41) and the LQR gains / inverse blow up. The true env keeps
  its limits; the linearisation describes the free arm, which is what the controller should use.
* Targets never interact with the arm (Reacher's geoms have ``contype = 0``), so the target
  slides are left at zero.

The result is returned in the input's dtype and device; it is not differentiable in the state
(gradient consumers such as :class:`ohio_layers.lowlevel.LinearizedDynamics` detach anyway).
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import mujoco
import numpy as np
import torch
from mujoco import rollout as mj_rollout
from torch import Tensor

from ..._validate import check_tensor

STATE_DIM = 4
ACTION_DIM = 2


def reacher_xml_path() -> str:
    """Path of the ``reacher.xml`` shipped with gymnasium (the model of Reacher-v5)."""
    import gymnasium.envs.mujoco as gm

    return os.path.join(os.path.dirname(gm.__file__), "assets", "reacher.xml")


class ReacherFDLinearization:
    """Callable ``state (B, 4) -> (A (B, 4, 4), B (B, 4, 2))``: central FD of the true env step.

    Args:
        model: a Reacher ``MjModel`` (copied; the caller's model is never modified). Default:
            gymnasium's ``reacher.xml``.
        frame_skip: physics steps per env step (Reacher-v5: 2).
        eps: finite-difference step, applied to states and controls (default 1e-6).
        disable_limits: linearise with joint limits disabled (``mjDSBL_LIMIT``; default True).
        chunk: maximum number of states per ``mujoco.rollout`` call (bounds memory).

    Example::

        lin = ReacherFDLinearization()
        A, B = lin(torch.zeros(8, 4, dtype=torch.float64))   # (8, 4, 4), (8, 4, 2)
    """

    def __init__(
        self,
        model: Optional[mujoco.MjModel] = None,
        frame_skip: int = 2,
        eps: float = 1e-6,
        disable_limits: bool = True,
        chunk: int = 4096,
    ) -> None:
        if not isinstance(frame_skip, int) or frame_skip < 1:
            raise ValueError(f"frame_skip must be a positive int, got {frame_skip!r}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        if not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be a positive int, got {chunk!r}")
        if model is None:
            self.model = mujoco.MjModel.from_xml_path(reacher_xml_path())
        else:
            if not isinstance(model, mujoco.MjModel):
                raise TypeError(f"model must be a mujoco.MjModel or None, got {type(model).__name__}")
            self.model = _copy_model(model)
        m = self.model
        if m.nu != ACTION_DIM or m.nq < 2 or m.nv < 2:
            raise ValueError(f"model must be a 2-joint, 2-actuator reacher, got nq={m.nq}, nv={m.nv}, nu={m.nu}")
        if disable_limits:
            m.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_LIMIT)
        self.frame_skip, self.eps, self.disable_limits, self.chunk = frame_skip, float(eps), disable_limits, chunk
        self._data = mujoco.MjData(m)
        self._spec = int(mujoco.mjtState.mjSTATE_FULLPHYSICS)
        self._nstate = mujoco.mj_stateSize(m, self._spec)
        # Layout of the full-physics state: [time, qpos, qvel, ...]; checked by a round trip.
        off_q = mujoco.mj_stateSize(m, int(mujoco.mjtState.mjSTATE_TIME))
        self._iq = np.array([off_q, off_q + 1])
        self._iv = np.array([off_q + m.nq, off_q + m.nq + 1])
        mujoco.mj_resetData(m, self._data)
        self._base = np.zeros(self._nstate)
        mujoco.mj_getState(m, self._data, self._base, self._spec)
        probe = self._data
        probe.qpos[:2], probe.qvel[:2] = (0.25, -0.5), (1.5, -2.5)
        s = np.zeros(self._nstate)
        mujoco.mj_getState(m, probe, s, self._spec)
        if not (np.allclose(s[self._iq], (0.25, -0.5)) and np.allclose(s[self._iv], (1.5, -2.5))):
            raise RuntimeError("unexpected mjSTATE_FULLPHYSICS layout in this MuJoCo version")
        mujoco.mj_resetData(m, self._data)
        # Perturbation pattern: rows 2i / 2i+1 = +eps / -eps on column i of [x (4), u (2)].
        P = 2 * (STATE_DIM + ACTION_DIM)
        self._dx = np.zeros((P, STATE_DIM))
        self._du = np.zeros((P, ACTION_DIM))
        for i in range(STATE_DIM + ACTION_DIM):
            for r, sign in ((2 * i, 1.0), (2 * i + 1, -1.0)):
                if i < STATE_DIM:
                    self._dx[r, i] = sign * self.eps
                else:
                    self._du[r, i - STATE_DIM] = sign * self.eps

    def __repr__(self) -> str:
        return (f"ReacherFDLinearization(frame_skip={self.frame_skip}, eps={self.eps}, "
                f"disable_limits={self.disable_limits})")

    # ------------------------------------------------------------------ numpy core
    def step(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """One env step of the (limit-disabled, if so configured) arm, batched.

        ``states (N, 4)``, ``actions (N, 2)`` (clipped to [-1, 1] by MuJoCo) ``-> next states (N, 4)``.
        """
        states = np.asarray(states, dtype=np.float64)
        actions = np.asarray(actions, dtype=np.float64)
        if states.ndim != 2 or states.shape[1] != STATE_DIM:
            raise ValueError(f"states must have shape (N, {STATE_DIM}), got {states.shape}")
        if actions.shape != (states.shape[0], ACTION_DIM):
            raise ValueError(f"actions must have shape ({states.shape[0]}, {ACTION_DIM}), got {actions.shape}")
        out = np.empty_like(states)
        for s in range(0, states.shape[0], self.chunk):
            out[s : s + self.chunk] = self._rollout(states[s : s + self.chunk], actions[s : s + self.chunk])
        return out

    def _rollout(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        init = np.tile(self._base, (n, 1))
        init[:, self._iq] = x[:, :2]
        init[:, self._iv] = x[:, 2:]
        ctrl = np.repeat(u[:, None, :], self.frame_skip, axis=1)
        states, _ = mj_rollout.rollout(self.model, self._data, init, ctrl)
        last = states[:, -1]
        return np.concatenate([last[:, self._iq], last[:, self._iv]], axis=1)

    def jacobians_numpy(self, states: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``states (B, 4) -> (A (B, 4, 4), B (B, 4, 2))`` as float64 numpy arrays."""
        x = np.asarray(states, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != STATE_DIM:
            raise ValueError(f"state must have shape (B, {STATE_DIM}), got {x.shape}")
        n, P = x.shape[0], self._dx.shape[0]
        xs = (x[:, None, :] + self._dx[None]).reshape(n * P, STATE_DIM)
        us = np.broadcast_to(self._du[None], (n, P, ACTION_DIM)).reshape(n * P, ACTION_DIM)
        nxt = self.step(xs, np.ascontiguousarray(us)).reshape(n, P, STATE_DIM)
        J = (nxt[:, 0::2] - nxt[:, 1::2]) / (2.0 * self.eps)  # (n, 6, 4): d x' / d column
        J = J.transpose(0, 2, 1)  # (n, 4, 6)
        return np.ascontiguousarray(J[:, :, :STATE_DIM]), np.ascontiguousarray(J[:, :, STATE_DIM:])

    # ------------------------------------------------------------------ torch interface
    def __call__(self, state: Tensor) -> Tuple[Tensor, Tensor]:
        """``state (B, 4) -> (A (B, 4, 4), B (B, 4, 2))`` in ``state``'s dtype and device."""
        check_tensor("state", state, ("B", STATE_DIM))
        A, B = self.jacobians_numpy(state.detach().cpu().to(torch.float64).numpy())
        return (torch.from_numpy(A).to(dtype=state.dtype, device=state.device),
                torch.from_numpy(B).to(dtype=state.dtype, device=state.device))


def _copy_model(model: mujoco.MjModel) -> mujoco.MjModel:
    import copy

    return copy.deepcopy(model)
