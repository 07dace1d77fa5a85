"""Small systems shared by the tests."""
import numpy as np
import torch

from ohio_layers.data import Dataset, EpisodeRecorder
from ohio_layers.inverse import AnalyticSolver, InverseProblem, LevenbergMarquardt, ProblemInverter
from ohio_layers.lowlevel import ConstantLinearization, LinearizedDynamics, LowLevelController, LQRGoalController
from ohio_layers.lowlevel.osc import OSCStateLayout
from ohio_layers.lowlevel.rotations import axis_angle_to_matrix

DT = 0.02


def reacher_like_linearization(dtype=torch.float64) -> ConstantLinearization:
    """A 2-joint double integrator with the reacher's measured input gains (B_vel ~ 3.96)."""
    A = torch.tensor([[1, 0, DT, 0.001], [0, 1, 0.002, DT], [0, 0, 0.98, 0.01], [0, 0, 0.02, 0.97]], dtype=dtype)
    B = torch.tensor([[0.0397, 0.001], [0.002, 0.0397], [3.96, 0.1], [-0.2, 3.9]], dtype=dtype)
    return ConstantLinearization(A, B)


def reacher_like_lqr(action_bound=1.0) -> LQRGoalController:
    return LQRGoalController(reacher_like_linearization(), relative_dims=(0, 1), action_bound=action_bound)


# ------------------------------------------------------------------ synthetic OSC robot states
LAYOUT = OSCStateLayout(7)
F64 = torch.float64


def robot_quantities(B, seed=0):
    """Random but well-conditioned arm quantities (dict of (B, ...) float64 tensors)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    A = r(B, 7, 7)
    return dict(
        q=r(B, 7), qdot=0.3 * r(B, 7), q0=r(B, 7), pos=r(B, 3), rot=axis_angle_to_matrix(2.0 * r(B, 3)),
        lin_vel=0.1 * r(B, 3), ang_vel=0.3 * r(B, 3),
        mass=0.05 * A @ A.transpose(1, 2) + 0.3 * torch.eye(7, dtype=F64),
        jac_pos=0.5 * r(B, 3, 7), jac_ori=r(B, 3, 7), bias=5.0 * r(B, 7),
    )


def substep_states(N, k=5, seed=0):
    """``(N, k, ds)`` sub-step states drifting smoothly from a random start."""
    g = torch.Generator().manual_seed(seed + 1000)
    base = robot_quantities(N, seed)
    steps = []
    for j in range(k):
        s = dict(base)
        drift = lambda t, scale: t + j * scale * torch.randn(t.shape, generator=g, dtype=F64)  # noqa: E731
        s.update(q=drift(base["q"], 0.002), qdot=drift(base["qdot"], 0.05), pos=drift(base["pos"], 0.001),
                 rot=axis_angle_to_matrix(0.003 * j * torch.randn(N, 3, generator=g, dtype=F64)) @ base["rot"],
                 lin_vel=drift(base["lin_vel"], 0.01), ang_vel=drift(base["ang_vel"], 0.02),
                 mass=base["mass"] + j * 1e-3 * torch.eye(7, dtype=F64), jac_pos=drift(base["jac_pos"], 0.002),
                 jac_ori=drift(base["jac_ori"], 0.002), bias=drift(base["bias"], 0.05))
        steps.append(LAYOUT.pack(s))
    return torch.stack(steps, 1)


# ------------------------------------------------------------------ relabelling data
def synthetic_dataset(controller, episodes=6, length=23, seed=0) -> Dataset:
    """Low-level data generated through the controller with a known z per 5-step window."""
    g = torch.Generator().manual_seed(seed)
    dyn, rec = LinearizedDynamics(), EpisodeRecorder()
    for _ in range(episodes):
        x = torch.randn(1, 4, generator=g, dtype=torch.float64)
        for t in range(length):
            if t % controller.horizon == 0:
                z = 2 * torch.randn(1, 4, generator=g, dtype=torch.float64)
                ctx = controller.context(x)
            u = controller.act(x, z, ctx, t % controller.horizon)
            x1 = dyn(x, u, ctx)
            rec.add(observations=x[0].numpy(), states=x[0].numpy(), actions=u[0].numpy(), rewards=float(-x1.norm()),
                    next_observations=x1[0].numpy(), next_states=x1[0].numpy(), terminals=False,
                    timeouts=t == length - 1, z_true=z[0].numpy())
            x = x1
        rec.end_episode()
    return rec.to_dataset({"generator": "test"})


def make_inverter(controller):
    return ProblemInverter(InverseProblem(controller, LinearizedDynamics()), LevenbergMarquardt(), init=AnalyticSolver())


def robosuite_equations_numpy(s, goal_pos, goal_rot, kp, kd, kn=10.0):
    """The OSC_POSE law as robosuite writes it (inv / pinv, numpy), one sample, unclipped."""
    M, Jp, Jo = s["mass"], s["jac_pos"], s["jac_ori"]
    J = np.vstack([Jp, Jo])
    Minv = np.linalg.inv(M)
    lam_full = np.linalg.pinv(J @ Minv @ J.T)
    lam_pos, lam_ori = np.linalg.pinv(Jp @ Minv @ Jp.T), np.linalg.pinv(Jo @ Minv @ Jo.T)
    R = s["rot"]
    e_o = 0.5 * sum(np.cross(R[:, i], goal_rot[:, i]) for i in range(3))
    force = kp[:3] * (goal_pos - s["pos"]) - kd[:3] * s["lin_vel"]
    torque = kp[3:] * e_o - kd[3:] * s["ang_vel"]
    tau = J.T @ np.concatenate([lam_pos @ force, lam_ori @ torque]) + s["bias"]
    null = np.eye(7) - Minv @ J.T @ lam_full @ J
    return tau + null.T @ (M @ (kn * (s["q0"] - s["q"]) - 2 * np.sqrt(kn) * s["qdot"]))


def random_transitions(n: int = 256, do: int = 5, da: int = 3, seed: int = 0, episodes: int = 8, obs_loc: float = 0.0,
                       obs_scale: float = 1.0, terminal_rate: float = 0.1, action_bound: float = 0.9):
    """A random transition :class:`~ohio_layers.data.Dataset` (float32 columns, ``episodes`` equal episodes)."""
    import numpy as np

    from ohio_layers.data import Dataset

    rng = np.random.default_rng(seed)
    return Dataset({
        "observations": (obs_loc + obs_scale * rng.normal(size=(n, do))).astype(np.float32),
        "actions": rng.uniform(-action_bound, action_bound, size=(n, da)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "next_observations": rng.normal(size=(n, do)).astype(np.float32),
        "terminals": (rng.random(n) < terminal_rate).astype(np.float32),
        "episode_ids": np.repeat(np.arange(episodes), n // episodes),
    })


def lqr_dataset(episodes: int = 4, decisions: int = 3, seed: int = 0, terminal_last: bool = True):
    """A low-level dataset from the reacher-like LQR on its own linear model (hierarchical behaviour).

    Each episode has ``decisions`` windows of k = 5 steps with a random small z; odd episodes end
    with a termination, even ones with a timeout; ids are deliberately not 0..N-1; ``observations``
    are float32 (states are float64) and ``z_true`` is recorded.
    """
    import numpy as np

    from ohio_layers.data import EpisodeRecorder
    from ohio_layers.lowlevel import LinearizedDynamics, rollout

    g = torch.Generator().manual_seed(seed)
    ctrl, dyn = reacher_like_lqr(), LinearizedDynamics()
    rec = EpisodeRecorder()
    rec._episode = 10  # ids 10, 11, ...: not Minari's 0..N-1
    for e in range(episodes):
        x = 0.3 * torch.randn(1, 4, generator=g, dtype=torch.float64)
        for d in range(decisions):
            z = 0.3 * torch.randn(1, 4, generator=g, dtype=torch.float64)
            traj, acts = rollout(ctrl, dyn, x, z)
            for l in range(ctrl.horizon):
                last = d == decisions - 1 and l == ctrl.horizon - 1
                s, s1 = traj[0, l].numpy(), traj[0, l + 1].numpy()
                rec.add(observations=s.astype(np.float32), states=s, actions=acts[0, l].numpy(), rewards=-float(s1 @ s1),
                        next_observations=s1.astype(np.float32), next_states=s1,
                        terminals=bool(last and terminal_last and e % 2 == 1), timeouts=bool(last and not (terminal_last and e % 2 == 1)),
                        z_true=z[0].numpy())
            x = traj[:, -1]
        rec.end_episode()
    return rec.to_dataset({"behaviour": "lqr_random_z", "controller": {"name": "lqr", "horizon": 5}, "seed": seed})


class NumpyLinearization:
    """A simulator-like linearisation (through numpy: no autograd or forward-mode AD) that counts its calls."""

    def __init__(self):
        self.inner, self.calls = reacher_like_linearization(), 0

    def __call__(self, state):
        self.calls += 1
        A, B = self.inner(torch.as_tensor(state.detach().numpy()))
        return torch.as_tensor(A.numpy()), torch.as_tensor(B.numpy())


class ReacherLikeLQR(LQRGoalController):
    """:func:`reacher_like_lqr` with its cost weights as arguments, for ``ohio relabel --controller helpers:ReacherLikeLQR``;
    ``simulator=True`` linearises through :class:`NumpyLinearization` (like the reacher's MuJoCo finite differences)."""

    def __init__(self, Q=(10.0, 10.0, 1.0, 1.0), R=0.1, horizon: int = 5, simulator: bool = False) -> None:
        lin = NumpyLinearization() if simulator else reacher_like_linearization()
        super().__init__(lin, relative_dims=(0, 1), Q=Q, R=R, horizon=horizon)


class PDController(LowLevelController):
    """A user's own controller, as ``ohio relabel --controller helpers:PDController:kp=..`` loads it.

    Joint-space PD on the reacher state ``(q1, q2, qd1, qd2)``: ``u_l = kp (z + q_0 - q_l) - kd qd_l``,
    clipped to +-1, with ``z (2,)`` the joint target relative to the window-start positions ``q_0``.
    """

    def __init__(self, kp: float = 0.5, kd: float = 0.05, horizon: int = 5) -> None:
        super().__init__(4, 2, 2, horizon, z_low=-3.0, z_high=3.0, action_low=-1.0, action_high=1.0)
        self.kp, self.kd = float(kp), float(kd)

    def law(self, state, z, context, step):
        return self.kp * (z + context["state0"][:, :2] - state[:, :2]) - self.kd * state[:, 2:]

    def affine(self, state, context, step):
        G = self.kp * torch.eye(2, dtype=state.dtype, device=state.device).expand(state.shape[0], 2, 2)
        return G, self.kp * (context["state0"][:, :2] - state[:, :2]) - self.kd * state[:, 2:]


class RandomZPolicy:
    """Hierarchical reacher behaviour: a random z every ``controller.horizon`` steps, then ``controller``."""

    def __init__(self, controller: LowLevelController, scale: float = 0.4) -> None:
        import numpy as np

        self.controller, self.scale, self.k = controller, scale, controller.horizon
        self.current_z = None
        self._rng, self._count, self._ctx = np.random.default_rng(0), 0, None

    def reset(self, seed=None):
        import numpy as np

        self._rng, self._count, self.current_z = np.random.default_rng(seed), 0, None

    def act(self, observation, state):
        x = torch.as_tensor(state, dtype=torch.float64)[None]
        step = self._count % self.k
        if step == 0:
            self.current_z = self.scale * self._rng.standard_normal(self.controller.z_dim)
            self._ctx = self.controller.context(x)
        self._count += 1
        with torch.no_grad():
            return self.controller.act(x, torch.as_tensor(self.current_z)[None], self._ctx, step)[0].numpy()

    def config(self):
        return {"name": "random_z", "controller": type(self.controller).__name__, "scale": self.scale}


def replace_zip_member(path, name: str, data: bytes) -> None:
    """Rewrite the ``.npz`` (zip) file ``path`` with member ``name`` replaced by ``data`` (corrupt-file tests)."""
    import zipfile

    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members[name] = data
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
