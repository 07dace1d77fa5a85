"""MemoizedLinearization: one simulator call per batch of states, and identification through it stays exact."""
import numpy as np
import pytest
import torch

from helpers import NumpyLinearization, reacher_like_linearization
from ohio_layers.inverse.identify import Identifier, diagonal_unknown
from ohio_layers.lowlevel import LQRGoalController, MemoizedLinearization


def test_memo_calls_the_linearization_once_per_batch_and_returns_its_values():
    sim = NumpyLinearization()
    lin = MemoizedLinearization(sim, max_entries=2)
    x = torch.randn(5, 4, dtype=torch.float64)
    A, B = lin(x)
    A2, B2 = lin(x.clone())
    assert sim.calls == 1 and torch.equal(A, A2) and torch.equal(B, B2)
    lin(x + 1)
    lin(x + 2)  # evicts x
    lin(x)
    assert sim.calls == 4
    with pytest.raises(ValueError, match="max_entries must be a positive int"):
        MemoizedLinearization(sim, max_entries=0)


def test_lqr_weights_identified_exactly_through_a_memoized_simulator_linearization():
    g = torch.Generator().manual_seed(0)
    states = torch.randn(20, 5, 4, generator=g, dtype=torch.float64) * torch.tensor([1.0, 1.0, 0.5, 0.5], dtype=torch.float64)
    z = 0.3 * torch.randn(20, 4, generator=g, dtype=torch.float64)
    true = LQRGoalController(reacher_like_linearization(), relative_dims=(0, 1), Q=(30.0, 5.0, 0.5, 2.0), R=0.1)
    ctx = true.context(states[:, 0])
    with torch.no_grad():
        a = torch.stack([true.act(states[:, j], z, ctx, j) for j in range(5)], 1)
    sim = NumpyLinearization()
    start = LQRGoalController(MemoizedLinearization(sim), relative_dims=(0, 1), Q=(3.0, 3.0, 3.0, 3.0), R=0.1)
    res = Identifier().identify(start, states, a, [diagonal_unknown("Q", 4)])
    assert res.all_identifiable
    np.testing.assert_allclose(res.estimate, [30.0, 5.0, 0.5, 2.0], rtol=1e-8)
    assert sim.calls <= 2  # the simulator ran once for the windows, not per Jacobian column or iteration
