"""to_d3rlpy: episode ends, every transition kept with its true next observation, and d3rlpy trains on an export."""
import numpy as np
import pytest

d3rlpy = pytest.importorskip("d3rlpy")

from helpers import lqr_dataset  # noqa: E402
from ohio_layers.data import Dataset, MisalignedEpisodeError  # noqa: E402
from ohio_layers.data.d3rlpy import to_d3rlpy  # noqa: E402


def _transitions(mdp):
    from d3rlpy.dataset import BasicTransitionPicker

    pick = BasicTransitionPicker()
    return [pick(ep, i) for ep in mdp.episodes for i in range(ep.transition_count)]


@pytest.mark.parametrize("keep_last", [True, False])
def test_episode_ends_and_next_observations(keep_last):
    low = lqr_dataset(episodes=4)  # 2 terminated, 2 timed-out episodes of 15 steps
    mdp = to_d3rlpy(low, keep_last_transition=keep_last)
    assert len(mdp.episodes) == 4
    assert [bool(e.terminated) for e in mdp.episodes] == [False, True, False, True]
    trans = _transitions(mdp)
    assert len(trans) == (len(low) if keep_last else len(low) - 2)  # d3rlpy drops a timeout episode's last step
    rows = [r for ep_rows, ep in zip(low.episodes(), mdp.episodes) for r in ep_rows[: ep.transition_count]]
    for tr, r in zip(trans, rows):
        assert np.array_equal(tr.observation, low["observations"][r])
        assert np.array_equal(tr.action, low["actions"][r].astype(np.float32))
        assert tr.reward[0] == np.float32(low["rewards"][r])
        if low["terminals"][r]:
            assert tr.terminal == 1.0
        else:
            assert tr.terminal == 0.0 and np.array_equal(tr.next_observation, low["next_observations"][r])


def test_unflagged_episode_ends_and_double_flags():
    low = lqr_dataset(episodes=2)
    arrays = dict(low.arrays)
    arrays["timeouts"] = np.zeros(len(low), bool)  # AMoD-like: no flag at the episode end
    arrays["terminals"] = np.zeros(len(low), bool)
    arrays["terminals"][14] = True
    arrays["timeouts"][14] = True  # gymnasium may set both: a termination
    mdp = to_d3rlpy(Dataset(arrays))
    assert len(mdp.episodes) == 2 and bool(mdp.episodes[0].terminated) and not bool(mdp.episodes[1].terminated)
    assert len(_transitions(mdp)) == len(low)


def test_misaligned_refused():
    low = lqr_dataset(episodes=1)
    arrays = dict(low.arrays)
    arrays["next_observations"] = arrays["next_observations"][::-1].copy()
    with pytest.raises(MisalignedEpisodeError):
        to_d3rlpy(Dataset(arrays))


def test_d3rlpy_trains_on_a_minari_export(tmp_path, monkeypatch):
    """Our dataset -> Minari -> ohio -> d3rlpy IQL: a few training steps give finite losses and actions."""
    pytest.importorskip("minari")
    from ohio_layers.data.minari import export_minari, import_minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.chdir(tmp_path)  # d3rlpy writes nothing with the no-op logger, but stay out of the repo anyway
    low = lqr_dataset(episodes=4)
    export_minari(low, "ohio/test/d3-v0")
    mdp = to_d3rlpy(import_minari("ohio/test/d3-v0"))
    algo = d3rlpy.algos.IQLConfig(batch_size=16).create(device="cpu:0")
    d3rlpy.seed(0)
    history = algo.fit(mdp, n_steps=6, n_steps_per_epoch=3, show_progress=False,
                       logger_adapter=d3rlpy.logging.NoopAdapterFactory())
    assert len(history) == 2 and all(np.isfinite(v) for _, m in history for v in m.values())
    pred = algo.predict(low["observations"][:5])
    assert pred.shape == (5, 2) and np.isfinite(pred).all()
