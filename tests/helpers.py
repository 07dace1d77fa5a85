"""Small systems shared by the tests."""
import torch

from ohio_layers.lowlevel import ConstantLinearization, LowLevelController, LQRGoalController

DT = 0.02


def reacher_like_linearization(dtype=torch.float64) -> ConstantLinearization:
    """A 2-joint double integrator with the reacher's measured input gains (B_vel ~ 3.96)."""
    A = torch.tensor([[1, 0, DT, 0.001], [0, 1, 0.002, DT], [0, 0, 0.98, 0.01], [0, 0, 0.02, 0.97]], dtype=dtype)
    B = torch.tensor([[0.0397, 0.001], [0.002, 0.0397], [3.96, 0.1], [-0.2, 3.9]], dtype=dtype)
    return ConstantLinearization(A, B)


def reacher_like_lqr(action_bound=1.0) -> LQRGoalController:
    return LQRGoalController(reacher_like_linearization(), relative_dims=(0, 1), action_bound=action_bound)


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
