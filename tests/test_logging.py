"""Loggers: JSONL/CSV/TensorBoard receive every averaged row of fit and fit_online; logs read back and plot."""
import gymnasium as gym
import numpy as np
import pytest

from ohio_layers.data import Dataset
from ohio_layers.logging import (CSVLogger, JSONLLogger, Logger, MultiLogger, emit, make_logger, plot_histories, plot_log,
                                 read_log)
from ohio_layers.rl.iql import IQL
from ohio_layers.rl.sac import SAC


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return Dataset({"observations": rng.normal(size=(n, 2)).astype(np.float32), "actions": rng.uniform(-1, 1, (n, 1)),
                    "rewards": rng.normal(size=n), "next_observations": rng.normal(size=(n, 2)).astype(np.float32),
                    "terminals": np.zeros(n, bool), "episode_ids": np.repeat(np.arange(4), n // 4)})


class Drift(gym.Env):
    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float64)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = np.zeros(2), 0
        return self.x.copy(), {}

    def step(self, a):
        self.x, self.t = self.x + [0.1 * float(a[0]), 0.0], self.t + 1
        return self.x.copy(), -abs(self.x[0]), False, self.t >= 5, {}


def test_fit_rows_reach_jsonl_and_csv_loggers(tmp_path):
    agent = IQL(2, 1, config={"hidden": (16, 16), "batch_size": 16})
    logger = MultiLogger(JSONLLogger(tmp_path / "fit.jsonl"), CSVLogger(tmp_path / "fit.csv"))
    assert isinstance(logger, Logger)
    history = agent.fit(_data(), 12, show_progress=False, log_every=4, logger=logger)
    logger.close()
    for name in ("fit.jsonl", "fit.csv"):
        rows = read_log(tmp_path / name)
        assert [r["step"] for r in rows] == [4, 8, 12]
        for r, h in zip(rows, history):
            assert set(r) == set(h) and all(r[k] == pytest.approx(h[k], rel=1e-12) for k in h)
    assert plot_log(tmp_path / "fit.jsonl", tmp_path / "fit.png")
    assert (tmp_path / "fit.png").stat().st_size > 1000


def test_fit_online_rows_with_returns_and_new_keys_in_csv(tmp_path):
    sac = SAC(2, 1, config={"hidden": (16, 16), "batch_size": 8, "update_after": 4, "start_steps": 4})
    logger = make_logger(tmp_path / "online.csv")
    sac.fit_online(Drift(), 20, show_progress=False, log_every=10, logger=logger)
    logger.log(21, brand_new=1.5)  # a key the header does not have goes to the extra column
    logger.close()
    rows = read_log(tmp_path / "online.csv")
    assert [r["step"] for r in rows[:2]] == [int(h["step"]) for h in sac.history]
    assert [r["env_step"] for r in rows[:2]] == [10.0, 20.0] and "episode_return" in rows[1] and "loss_actor" in rows[1]
    assert rows[2] == {"step": 21, "brand_new": 1.5}


def test_tensorboard_logger(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = make_logger(f"tb:{tmp_path / 'tb'}")
    IQL(2, 1, config={"hidden": (16, 16), "batch_size": 16}).fit(_data(), 6, show_progress=False, log_every=3, logger=logger)
    logger.close()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert "loss_q" in acc.Tags()["scalars"] or any(t.startswith("loss") for t in acc.Tags()["scalars"])
    tag = sorted(acc.Tags()["scalars"])[0]
    assert [e.step for e in acc.Scalars(tag)] == [3, 6]


def test_emit_accepts_callables_and_names_bad_loggers():
    got = []
    emit(got.append, {"step": 1.0, "loss": 2.0})
    assert got == [{"step": 1.0, "loss": 2.0}]
    emit(None, {"step": 1.0})
    with pytest.raises(TypeError, match="logger must have log"):
        emit(3, {"step": 1.0})
    with pytest.raises(ValueError, match="expected a .jsonl or .csv"):
        make_logger("curve.txt")


def test_plot_histories_of_runs_with_different_metrics(tmp_path):
    pytest.importorskip("matplotlib")
    runs = {"bc": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}],
            "iql": [{"step": 1, "loss_q": 3.0, "loss_actor": 1.0}, {"step": 2, "loss_q": 2.0, "loss_actor": None}]}
    assert plot_histories(runs, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="no scalars"):
        plot_histories({"empty": [{"step": 1}]}, tmp_path / "d.png")
