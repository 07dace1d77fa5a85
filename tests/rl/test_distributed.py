"""Data-parallel training: sharding, seeded resume, and torchrun with 2 gloo ranks on loopback."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ohio_layers.data import Dataset
from ohio_layers.rl import IQL, Agent
from ohio_layers.rl.distributed import fit_distributed, init_distributed, parameter_digest, rank_seed, shard_dataset

ROOT = Path(__file__).resolve().parents[2]
CONFIG = {"hidden": [32, 32], "batch_size": 32, "seed": 3}


def toy_dataset(episodes=8, length=25, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    n = episodes * length
    obs = rng.normal(size=(n, 3))
    act = np.tanh(obs[:, :2] + 0.1 * rng.normal(size=(n, 2)))
    return Dataset({"observations": obs, "actions": act, "rewards": -np.abs(obs[:, 0] - act[:, 0]),
                    "next_observations": obs + 0.1, "terminals": np.zeros(n, bool),
                    "episode_ids": np.repeat(np.arange(episodes), length)})


def test_shards_are_whole_episodes_covering_every_row_once():
    data = toy_dataset(episodes=7)
    shards = [shard_dataset(data, r, 3) for r in range(3)]
    assert [len(np.unique(s["episode_ids"])) for s in shards] == [2, 3, 2]
    np.testing.assert_array_equal(np.concatenate([s["episode_ids"] for s in shards]), data["episode_ids"])
    with pytest.raises(ValueError, match="cannot shard 7 episodes over 8 ranks"):
        shard_dataset(data, 0, 8)
    with pytest.raises(ValueError, match=r"rank must be in \[0, 3\)"):
        shard_dataset(data, 3, 3)
    assert rank_seed(0, 0, 0) != rank_seed(0, 1, 0) != rank_seed(0, 0, 100)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_request_without_gpu_is_refused_by_name(tmp_path):
    with pytest.raises(RuntimeError, match="device='cuda' was requested"):
        init_distributed("cuda")
    data = toy_dataset()
    with pytest.raises(ValueError, match="checkpoint_every must be >= 1"):
        fit_distributed(IQL.from_dataset(data, CONFIG), data, 10, tmp_path / "x.pt", checkpoint_every=0)


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    data = toy_dataset()
    straight = fit_distributed(IQL.from_dataset(data, CONFIG), data, 60, tmp_path / "a.pt", checkpoint_every=30,
                               show_progress=False)
    fit_distributed(IQL.from_dataset(data, CONFIG), data, 30, tmp_path / "b.pt", checkpoint_every=30, show_progress=False)
    resumed = fit_distributed(IQL.from_dataset(data, CONFIG), data, 60, tmp_path / "b.pt", checkpoint_every=30,
                              show_progress=False)
    assert resumed.step == straight.step == 60
    assert parameter_digest(resumed) == parameter_digest(straight)
    assert parameter_digest(Agent.load(tmp_path / "b.pt")) == parameter_digest(straight)


def torchrun(args, timeout=120):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ohio_layers.train",
           *args, "--no-progress", "--set", "hidden=[32,32]", "--set", "batch_size=32", "--set", "seed=3"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


@pytest.mark.slow  # two torchrun launches: ~15 s idle, mostly 3 processes importing torch each time
def test_torchrun_two_ranks_train_iql_agree_and_resume(tmp_path):
    data = toy_dataset()
    data.save(tmp_path / "data.npz")
    base = ["--data", str(tmp_path / "data.npz"), "--agent", "IQL", "--out", str(tmp_path / "run"), "--checkpoint-every", "150"]
    torchrun(base + ["--steps", "150"])
    first = json.loads((tmp_path / "run" / "ranks.json").read_text())
    assert first["world_size"] == 2 and first["step"] == 150 and len(set(first["digests"])) == 1
    assert len(first["train_cpu_seconds"]) == 2 and all(0 < c for c in first["train_cpu_seconds"])  # one per rank
    at_150 = Agent.load(tmp_path / "run" / "agent.pt")
    assert at_150.step == 150 and parameter_digest(at_150) == first["digests"][0]

    torchrun(base + ["--steps", "300"])  # resumes from agent.pt
    second = json.loads((tmp_path / "run" / "ranks.json").read_text())
    assert second["step"] == 300 and len(set(second["digests"])) == 1 and second["digests"] != first["digests"]
    final = Agent.load(tmp_path / "run" / "agent.pt")
    assert final.step == 300 and [h["step"] for h in final.history][:2] == [100.0, 150.0]  # history kept across the resume
    # the ranks sampled different episodes with different noise: only the gradient all-reduce keeps them equal
    assert torch.isfinite(torch.cat([p.flatten() for p in final.parameters()])).all()
