"""Small systems shared by the tests."""
import numpy as np
import torch

from ohio_layers.data import Dataset, EpisodeRecorder
from ohio_layers.inverse import AnalyticSolver, InverseProblem, LevenbergMarquardt, ProblemInverter
from ohio_layers.lowlevel import ConstantLinearization, LinearizedDynamics, LQRGoalController
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


def replace_zip_member(path, name: str, data: bytes) -> None:
    """Rewrite the ``.npz`` (zip) file ``path`` with member ``name`` replaced by ``data`` (corrupt-file tests)."""
    import zipfile

    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members[name] = data
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
