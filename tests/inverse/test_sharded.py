"""Sharded relabelling on 2 local Ray workers: byte-identical to serial, exactly once when a worker dies."""
import hashlib
import os
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from helpers import make_inverter, reacher_like_lqr, synthetic_dataset  # noqa: E402
from ohio_layers.inverse import relabel  # noqa: E402
from ohio_layers._ray import init_ray  # noqa: E402
from ohio_layers.inverse.sharded import relabel_sharded, shard_plan  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One local 2-CPU Ray on 127.0.0.1 for the module (start-up takes seconds)."""
    assert not ray.is_initialized()
    started = init_ray(2)
    assert started
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}  # loopback only, not every interface
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def problem():
    c = reacher_like_lqr(action_bound=1.0)
    return synthetic_dataset(c, episodes=10), make_inverter(c)


class LoggedInverter:
    """Appends every chunk it solves to ``log``; on the first attempt of the shard holding ``kill_episode``,
    the worker dies (``os._exit``) at that shard's second chunk, once (``marker`` file)."""

    def __init__(self, inner, log: Path, marker: Path, kill_episode: int):
        self.inner, self.log, self.marker, self.kill_episode = inner, str(log), str(marker), kill_episode
        self.calls = 0

    def __call__(self, dataset, starts):
        first = f"{int(dataset['episode_ids'][starts[0]])}:{int(dataset['states'][starts[0]][0] * 1e6)}"
        self.calls += 1
        with open(self.log, "a") as f:
            f.write(first + "\n")
        if self.kill_episode in dataset["episode_ids"] and self.calls == 2 and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)
        return self.inner(dataset, starts)

    def describe(self):
        return self.inner.describe()


def test_shard_plan_covers_every_chunk_once():
    assert shard_plan(10, 4) == [(0, 2), (2, 5), (5, 8), (8, 10)]
    assert shard_plan(3, 8) == [(0, 1), (1, 2), (2, 3)]
    with pytest.raises(ValueError, match="shards must be >= 1"):
        shard_plan(3, 0)


def test_ray_relabel_is_byte_identical_to_serial(local_ray, problem, tmp_path):
    data, inverter = problem
    serial, _ = relabel(data, inverter, 5, tmp_path / "serial.npz", chunk_size=3, progress=False, extra_keys=("z_true",))
    # stride 3 < k: shards start mid-episode, so the windows' grid must survive the cut
    relabel(data, inverter, 5, tmp_path / "serial3.npz", chunk_size=3, stride=3, progress=False)
    sharded, report = relabel(data, inverter, 5, tmp_path / "ray.npz", chunk_size=3, progress=False,
                              extra_keys=("z_true",), engine="ray", workers=2)
    assert digest(tmp_path / "ray.npz") == digest(tmp_path / "serial.npz")
    assert len(sharded) == len(serial) == 40 and len(report.extra["shards"]) == 8  # 14 chunks, 4 * workers shards
    relabel_sharded(relabel, data, inverter, 5, tmp_path / "ray3.npz", chunk_size=3, stride=3, shards=5, progress=False)
    assert digest(tmp_path / "ray3.npz") == digest(tmp_path / "serial3.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ray.npz", "ray3.npz", "serial.npz", "serial3.npz"]


def test_worker_killed_mid_shard_gives_identical_output_exactly_once(local_ray, problem, tmp_path):
    data, inverter = problem
    relabel(data, inverter, 5, tmp_path / "serial.npz", chunk_size=2, progress=False)
    log, marker = tmp_path / "calls.log", tmp_path / "killed"
    flaky = LoggedInverter(inverter, log, marker, kill_episode=6)
    _, report = relabel_sharded(relabel, data, flaky, 5, tmp_path / "ray.npz", chunk_size=2, shards=4, progress=False)
    assert marker.exists(), "the worker was never killed: the test did not test the retry"
    assert digest(tmp_path / "ray.npz") == digest(tmp_path / "serial.npz")
    calls = log.read_text().split()
    # 40 windows / 2 = 20 chunks. Each one is solved once, plus the chunk whose worker died (solved
    # again by the retry). The retry resumed after the shard's first chunk instead of redoing it.
    assert len(calls) == 21 and len(set(calls)) == 20
    assert sum(s["windows"] for s in report.extra["shards"]) == 40 and len(report.extra["shards"]) == 4
    assert not (tmp_path / "ray.npz.shards").exists()


def test_sharded_refuses_shards_of_other_inputs(local_ray, problem, tmp_path):
    data, inverter = problem
    root = tmp_path / "x.npz.shards"
    root.mkdir()
    (root / "manifest.json").write_text('{"key": "other"}')
    with pytest.raises(RuntimeError, match="different relabelling run"):
        relabel_sharded(relabel, data, inverter, 5, tmp_path / "x.npz", progress=False)
    with pytest.warns(UserWarning, match="only 1 chunk"):  # 40 windows in one chunk: one worker idles
        relabel_sharded(relabel, data, inverter, 5, tmp_path / "one.npz", chunk_size=4096, workers=2, progress=False)
    relabel(data, inverter, 5, tmp_path / "serial.npz", chunk_size=4096, progress=False)
    assert digest(tmp_path / "one.npz") == digest(tmp_path / "serial.npz")
    with pytest.raises(ValueError, match="engine must be"):
        relabel(data, inverter, 5, tmp_path / "x.npz", engine="spark")
