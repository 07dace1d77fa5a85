"""Item 9 of issue 15 (rl part): agent caller errors get named errors."""
import numpy as np
import pytest
import torch

from helpers import reacher_like_lqr
from ohio_layers.data import Dataset
from ohio_layers.rl import BC
from ohio_layers.rl.agent import HierarchicalAgent


def test_from_dataset_on_an_empty_dataset():
    empty = Dataset({"observations": np.zeros((0, 3), np.float32), "actions": np.zeros((0, 2), np.float32)})
    with pytest.raises(ValueError, match="dataset is empty"):
        BC.from_dataset(empty)


def test_hierarchical_agent_checks_obs_against_the_agent_and_the_state_batch():
    agent = BC(10, 4, -1.0, 1.0)
    h = HierarchicalAgent(agent, reacher_like_lqr())
    with pytest.raises(ValueError, match=r"obs must have shape \(B, 10\) for this agent, got \(1, 7\)"):
        h.act(np.zeros(7, np.float32), np.zeros(4))
    with pytest.raises(ValueError, match=r"obs and state0 must hold the same batch, got 2 and 3 rows"):
        h.begin(torch.zeros(2, 10), torch.zeros(3, 4, dtype=torch.float64))
    a, _ = h.act(np.zeros(10, np.float32), np.zeros(4))
    assert a.shape == (2,)
