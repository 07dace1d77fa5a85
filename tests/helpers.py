"""Small systems shared by the tests."""
import torch

from ohio_layers.lowlevel import ConstantLinearization, LQRGoalController

DT = 0.02


def reacher_like_linearization(dtype=torch.float64) -> ConstantLinearization:
    """A 2-joint double integrator with the reacher's measured input gains (B_vel ~ 3.96)."""
    A = torch.tensor([[1, 0, DT, 0.001], [0, 1, 0.002, DT], [0, 0, 0.98, 0.01], [0, 0, 0.02, 0.97]], dtype=dtype)
    B = torch.tensor([[0.0397, 0.001], [0.002, 0.0397], [3.96, 0.1], [-0.2, 3.9]], dtype=dtype)
    return ConstantLinearization(A, B)


def reacher_like_lqr(action_bound=1.0) -> LQRGoalController:
    return LQRGoalController(reacher_like_linearization(), relative_dims=(0, 1), action_bound=action_bound)


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
