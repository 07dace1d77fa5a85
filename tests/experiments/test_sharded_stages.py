"""Collection and evaluation stages as jobs: the artefacts are byte-identical to one in-process call,
whatever the engine (local process, 2 Ray workers on loopback) or the number of shards."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from ohio_layers.data import Dataset
from ohio_layers.experiments.common import Stages
from ohio_layers.experiments.shards import collect_episodes, episode_ranges, merge_episodes


def test_episode_ranges_cover_every_episode_once():
    for episodes in (1, 2, 7, 10):
        for shards in (1, 3, 4, 20):
            r = episode_ranges(episodes, shards)
            assert r[0][0] == 0 and r[-1][1] == episodes and len(r) == min(shards, episodes)
            assert all(a < b and b == c for (a, b), (c, _) in zip(r, r[1:] + [(r[-1][1], None)]))
    with pytest.raises(ValueError, match="episodes and shards must be >= 1"):
        episode_ranges(0, 2)


def test_merge_renumbers_episode_ids_in_order():
    parts = [Dataset({"episode_ids": np.array([3, 3, 4], np.int64), "x": np.arange(3.0)}, {}),
             Dataset({"episode_ids": np.array([0, 0, 0, 1], np.int64), "x": np.arange(4.0)}, {})]
    data = merge_episodes(parts, {"episodes": 4})
    assert data["episode_ids"].tolist() == [0, 0, 1, 2, 2, 2, 3] and data["episode_ids"].dtype == np.int64
    assert data["x"].tolist() == [0, 1, 2, 0, 1, 2, 3]


# ------------------------------------------------------------------------------ domains, local processes
def test_amod_collection_in_shards_equals_one_call(tmp_path):
    from ohio_layers.envs.amod import collect
    from ohio_layers.experiments import amod

    cfg = amod.AMoDExperimentConfig(out_dir=str(tmp_path / "run"), episodes=3, workers=1)
    path = amod.collect_dataset("random", cfg, Stages(tmp_path / "run", cfg, verbose=False))
    seed = cfg.data_seed + 100_000 * amod.BEHAVIOURS.index("random")
    collect("random", 3, seed, env=amod.make_env(cfg.city, "flows"), progress=False).save(tmp_path / "one.npz")
    assert path.read_bytes() == (tmp_path / "one.npz").read_bytes()
    assert not path.with_name(path.name + ".shards").exists()


def test_supply_chain_collection_in_shards_equals_one_call(tmp_path):
    from ohio_layers.envs.supply_chain import collect
    from ohio_layers.experiments import supply_chain

    cfg = supply_chain.SupplyChainExperimentConfig(out_dir=str(tmp_path / "run"), episodes=3, workers=1)
    path = tmp_path / "run" / "data" / "s_type.npz"
    supply_chain.collect_dataset(cfg, "s_type", path)
    seed = cfg.data_seed + 100_000 * supply_chain.DATASETS.index("s_type")
    collect("s_type", 3, seed, cfg.scenario, progress=False).save(tmp_path / "one.npz")
    assert path.read_bytes() == (tmp_path / "one.npz").read_bytes()


# ------------------------------------------------------------------------------ reacher on 2 Ray workers
try:
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
except ImportError:  # pragma: no cover - the local_ray fixture skips those tests
    pass


def _reacher_stages(tmp: Path, engine: str, workers: int):
    from ohio_layers.experiments import reacher

    cfg = reacher.ReacherExperimentConfig(out_dir=str(tmp), episodes=3, eval_episodes=2, workers=workers,
                                          engine=engine)
    stages = Stages(tmp, cfg, verbose=False)
    return reacher.collect_dataset("hierarchical", cfg, stages), reacher.reference_returns(cfg, stages), cfg


def test_reacher_collection_and_reference_on_ray_equal_the_serial_path(local_ray, tmp_path):
    pytest.importorskip("mujoco")
    from ohio_layers.envs import collect
    from ohio_layers.experiments import reacher

    serial_data, serial_ref, cfg = _reacher_stages(tmp_path / "serial", "process", 1)
    ray_data, ray_ref, _ = _reacher_stages(tmp_path / "ray", "ray", 2)
    assert ray_data.read_bytes() == serial_data.read_bytes()
    assert (tmp_path / "ray" / "reference.json").read_bytes() == (tmp_path / "serial" / "reference.json").read_bytes()
    assert ray_ref == serial_ref and set(ray_ref) == {"random", "expert", "hierarchical"}
    # ... and both equal one in-process collect() call of all episodes (the code path before sharding)
    one = collect(reacher.behaviour_policy("hierarchical", cfg), 3, cfg.data_seed + 100_000, progress=False)
    one.save(tmp_path / "one.npz")
    assert ray_data.read_bytes() == (tmp_path / "one.npz").read_bytes()
    assert len(json.loads(json.dumps(Dataset.load(ray_data).metadata))["returns"]) == 3


def killed_once(job):
    """Collect a range of reacher episodes; the worker dies in the first attempt of shard 1 (marker file)."""
    from ohio_layers.experiments import reacher

    with open(job["log"], "a") as f:
        f.write(job["name"] + "\n")
    if job["name"] == "shard_0001" and not os.path.exists(job["marker"]):
        Path(job["marker"]).write_text("killed")
        os._exit(1)
    return reacher._collect_range(job)


def test_a_worker_killed_mid_shard_still_gives_every_episode_once(local_ray, tmp_path):
    pytest.importorskip("mujoco")
    from ohio_layers.envs import collect
    from ohio_layers.experiments import reacher

    log, marker = tmp_path / "log", tmp_path / "killed"
    job = {"dataset": "expert", "seed": 5, "expert_noise": 0.1, "hierarchical_noise": [0.05], "log": str(log),
           "marker": str(marker)}
    data = collect_episodes(killed_once, job, 4, tmp_path / "expert.npz", stage_key={"test": 1}, workers=2,
                            engine="ray", shards=3, per_episode=("returns",))
    assert marker.exists(), "the worker was never killed: the retry was not tested"
    assert sorted(log.read_text().split()) == ["shard_0000", "shard_0001", "shard_0001", "shard_0002"]
    collect(reacher.behaviour_policy("expert", reacher.ReacherExperimentConfig()), 4, 5,
            progress=False).save(tmp_path / "one.npz")
    assert (tmp_path / "expert.npz").read_bytes() == (tmp_path / "one.npz").read_bytes()
    assert np.unique(data["episode_ids"]).tolist() == [0, 1, 2, 3]


@pytest.mark.slow  # ~30 s: robosuite starts in each Ray worker
def test_manipulation_episodes_on_ray_equal_one_process(local_ray, tmp_path):
    pytest.importorskip("robosuite")
    from ohio_layers.envs.manipulation.data import collect_manipulation

    serial = collect_manipulation("lift", 2, tmp_path / "serial", horizon=10, workers=1, progress=False)
    on_ray = collect_manipulation("lift", 2, tmp_path / "ray", horizon=10, workers=2, progress=False, engine="ray")
    assert sorted(serial.arrays) == sorted(on_ray.arrays)
    for key in serial.arrays:  # the episode files differ only in their measured seconds
        assert serial[key].tobytes() == on_ray[key].tobytes(), key
    assert serial.metadata == on_ray.metadata


def test_metadata_that_differs_between_shards_must_be_named(tmp_path):
    pytest.importorskip("mujoco")
    from ohio_layers.experiments import reacher

    job = {"dataset": "expert", "seed": 3, "expert_noise": 0.1, "hierarchical_noise": [0.05]}
    with pytest.raises(RuntimeError, match=r"metadata \['returns'\] differ between the shards"):
        collect_episodes(reacher._collect_range, job, 2, tmp_path / "x.npz", stage_key={}, workers=1, shards=2)
    assert not (tmp_path / "x.npz").exists()
