"""Minari export/import: bit-exact round trips of low-level and relabelled datasets, metadata, alignment errors."""
import json

import numpy as np
import pytest

pytest.importorskip("minari")
pytest.importorskip("h5py")

from helpers import lqr_dataset, reacher_like_lqr  # noqa: E402
from ohio_layers.data import Dataset  # noqa: E402
from ohio_layers.data.minari import MisalignedEpisodeError, export_minari, import_minari  # noqa: E402


@pytest.fixture(autouse=True)
def minari_root(tmp_path, monkeypatch):
    """Never touch the user's ~/.minari: every test gets its own datasets root."""
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def assert_same(a: Dataset, b: Dataset) -> None:
    assert sorted(a.keys()) == sorted(b.keys())
    for k in a.keys():
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert np.array_equal(a[k], b[k]), k
    for ra, rb in zip(a.episodes(), b.episodes()):
        assert np.array_equal(ra, rb)
    assert len(list(a.episodes())) == len(list(b.episodes()))


def test_low_level_round_trip_every_array_and_metadata(tmp_path):
    low = lqr_dataset(episodes=4)
    folder = export_minari(low, "ohio/test/low-v0")
    assert (folder / "data" / "main_data.hdf5").exists()
    back = import_minari("ohio/test/low-v0")
    assert_same(low, back)
    assert back.metadata == json.loads(json.dumps(low.metadata))
    assert back["terminals"].sum() == 2 and back["timeouts"].sum() == 2  # terminations vs truncations kept apart
    # by path too (the dataset folder or its data/ folder)
    assert_same(low, import_minari(folder))
    assert_same(low, import_minari(folder / "data"))


def test_minari_sees_t_plus_one_observations():
    import minari

    low = lqr_dataset(episodes=2, decisions=2)
    export_minari(low, "ohio/test/plain-v0")
    eps = list(minari.load_dataset("ohio/test/plain-v0").iterate_episodes())
    assert [len(e.actions) for e in eps] == [10, 10]
    rows = list(low.episodes())
    for e, r in zip(eps, rows):
        assert np.array_equal(e.observations[:-1], low["observations"][r])
        assert np.array_equal(e.observations[-1], low["next_observations"][r[-1]])
        assert np.array_equal(e.terminations, low["terminals"][r]) and np.array_equal(e.truncations, low["timeouts"][r])


def test_relabelled_round_trip_keeps_report(tmp_path):
    from ohio_layers.inverse import AnalyticSolver, InverseProblem, ProblemInverter, relabel
    from ohio_layers.lowlevel import LinearizedDynamics

    low = lqr_dataset(episodes=3)
    inv = ProblemInverter(InverseProblem(reacher_like_lqr(), LinearizedDynamics()), AnalyticSolver())
    high, report = relabel(low, inv, 5, tmp_path / "high.npz", progress=False, extra_keys=("z_true",))
    assert "report" in high.metadata and high.metadata["source"]["behaviour"] == "lqr_random_z"
    export_minari(high, "ohio/test/high-v0")
    back = import_minari("ohio/test/high-v0")
    assert_same(high, back)
    assert back.metadata == json.loads(json.dumps(high.metadata))
    assert back.metadata["report"]["windows"] == report.windows


def test_misaligned_dataset_is_refused_by_name(tmp_path):
    low = lqr_dataset(episodes=2)
    bad = low.arrays.copy()
    bad["next_states"] = bad["next_states"].copy()
    bad["next_states"][3, 0] += 1e-9
    with pytest.raises(MisalignedEpisodeError, match=r"episode 10: next_states\[3\] != states\[4\]"):
        export_minari(Dataset(bad, low.metadata), "ohio/test/bad-v0")
    # overlapping windows (stride < k) of a relabelled dataset are never aligned
    from ohio_layers.inverse import AnalyticSolver, InverseProblem, ProblemInverter, relabel
    from ohio_layers.lowlevel import LinearizedDynamics

    inv = ProblemInverter(InverseProblem(reacher_like_lqr(), LinearizedDynamics()), AnalyticSolver())
    high, _ = relabel(low, inv, 5, tmp_path / "high.npz", stride=1, progress=False)
    with pytest.raises(MisalignedEpisodeError, match="stride = k"):
        export_minari(high, "ohio/test/bad-v0")


def test_import_refuses_t_observations(minari_root):
    """A foreign Minari dataset storing T (not T+1) observations is refused, not shifted."""
    import gymnasium as gym
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
    buf = EpisodeBuffer(id=0, observations=np.zeros((3, 2)), actions=np.zeros((3, 2)), rewards=np.zeros(3),
                        terminations=np.zeros(3, bool), truncations=np.r_[False, False, True])
    minari.create_dataset_from_buffers("other/t-obs-v0", [buf], observation_space=space, action_space=space,
                                       algorithm_name="x", author="x", author_email="x", code_permalink="x")
    with pytest.raises(MisalignedEpisodeError, match="need T\\+1 = 4"):
        import_minari("other/t-obs-v0")


def test_missing_dataset_and_existing_id_errors():
    with pytest.raises(FileNotFoundError, match="never downloads"):
        import_minari("nobody/nothing-v0")
    low = lqr_dataset(episodes=1, decisions=1)
    export_minari(low, "ohio/test/dup-v0")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_minari(low, "ohio/test/dup-v0")
    export_minari(low, "ohio/test/dup-v0", overwrite=True)
    with pytest.raises(ValueError, match="-v<version>"):
        export_minari(low, "ohio/test/noversion")


def test_without_the_extras_the_error_names_them():
    import os
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    code = textwrap.dedent("""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {"minari", "d3rlpy", "h5py"}:
                    raise ImportError(f"No module named {name!r}")
        sys.meta_path.insert(0, Block())
        from helpers import lqr_dataset
        from ohio_layers.data.minari import export_minari
        from ohio_layers.data.d3rlpy import to_d3rlpy
        for f, a in ((export_minari, ("x/y-v0",)), (to_d3rlpy, ())):
            try:
                f(lqr_dataset(1, 1), *a)
            except ImportError as err:
                print(err)
    """)
    tests = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), str(tests.parent), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert "pip install 'ohio_layers[minari]'" in out.stdout and "pip install 'ohio_layers[d3rlpy]'" in out.stdout


def test_foreign_minari_dataset_is_imported_with_gymnasium_flags():
    """A Minari dataset not written by ohio: T+1 observations split into obs/next-obs, truncation only if not terminated."""
    import gymnasium as gym
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    rng = np.random.default_rng(0)
    space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    obs = [rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(3, 3)).astype(np.float32)]
    bufs = [EpisodeBuffer(id=0, observations=obs[0], actions=np.ones((4, 3), np.float32), rewards=np.arange(4.0),
                          terminations=np.r_[False, False, False, True], truncations=np.r_[False, False, False, True]),
            EpisodeBuffer(id=1, observations=obs[1], actions=np.zeros((2, 3), np.float32), rewards=np.ones(2),
                          terminations=np.zeros(2, bool), truncations=np.r_[False, True])]
    minari.create_dataset_from_buffers("other/foreign-v0", bufs, observation_space=space, action_space=space,
                                       algorithm_name="x", author="x", author_email="x", code_permalink="x")
    data = import_minari("other/foreign-v0")
    assert len(data) == 6 and data["episode_ids"].tolist() == [0, 0, 0, 0, 1, 1]
    assert np.array_equal(data["observations"][:4], obs[0][:-1]) and np.array_equal(data["next_observations"][:4], obs[0][1:])
    assert data["terminals"].tolist() == [False, False, False, True, False, False]
    assert data["timeouts"].tolist() == [False, False, False, False, False, True]  # both set -> a termination
    assert data.metadata["minari"]["dataset_id"] == "other/foreign-v0"
