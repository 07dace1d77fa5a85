"""Analytic flow inverse: z* from observed flows, verified by replaying through the controller."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ohio_layers.envs.amod import AMoDEnv, synthetic_city
from ohio_layers.envs.amod import collect
from ohio_layers.inverse.flow_inverse import (
    FlowInverter, counts_after_flows, flows_to_distribution, invert_flows, replay_flows,
)
from ohio_layers.inverse.result import InverseResult


@pytest.fixture(scope="module")
def city():
    return synthetic_city(nlat=2, nlon=3, seed=11)


@pytest.fixture(scope="module")
def controller(city):
    return AMoDEnv(city).controller


def tensors(ds):
    return torch.as_tensor(ds["states"]), torch.as_tensor(ds["actions"])


@pytest.mark.parametrize("policy", ["random", "proportional", "equal"])
def test_hierarchical_data_is_reproduced_exactly(city, controller, policy):
    ds = collect(policy, episodes=2, seed=1, scenario=city, progress=False)
    idle, flows = tensors(ds)
    res, replay = invert_flows(controller, idle, flows)
    assert isinstance(res, InverseResult) and res.z.shape == idle.shape
    torch.testing.assert_close(res.z.sum(1), torch.ones(len(idle), dtype=torch.float64))
    assert bool(res.converged.all()) and bool((res.residual == 0).all()) and bool((res.iterations == 0).all())
    assert bool(replay.counts_reproduced.all()) and bool(replay.flows_reproduced.all())
    # the behaviour's own z rounds to the same counts the flows reach
    z_true = torch.as_tensor(ds["z_true"])
    after = counts_after_flows(idle, flows, controller.edge_index)
    assert torch.equal(controller.targets(idle, z_true), after)


def test_non_hierarchical_data_reproduces_counts_at_no_higher_cost(city, controller):
    ds = collect("dispatch", episodes=2, seed=2, scenario=city, progress=False)
    idle, flows = tensors(ds)
    res, replay = invert_flows(controller, idle, flows)
    assert bool(replay.counts_reproduced.all()) and bool((res.residual == 0).all())
    assert bool((replay.replay_cost <= replay.observed_cost + 1e-9).all())
    assert "counts reproduced 100.0%" in replay.summary()


def test_rounding_mismatch_is_zero_below_half_a_vehicle_and_reported_above(city, controller):
    ds = collect("random", episodes=1, seed=3, scenario=city, progress=False)
    idle, flows = tensors(ds)
    N = idle.sum(1, keepdim=True)
    n = idle.shape[1]
    # float32 storage and reference-style smoothing keep |N z - after| < 1/2: exact
    z32 = flows_to_distribution(idle, flows, controller.edge_index)[0].float().double()
    assert bool(replay_flows(controller, idle, flows, z32 / z32.sum(1, keepdim=True)).counts_reproduced.all())
    eps = 0.4 / (float(N.max()) * n)
    res_eps, rep_eps = invert_flows(controller, idle, flows, eps=eps)
    assert bool((res_eps.z > 0).all()) and bool(rep_eps.counts_reproduced.all())
    # a perturbation of up to 1.5 vehicles per region: the mismatch is reported and bounded
    z = flows_to_distribution(idle, flows, controller.edge_index)[0]
    g = torch.Generator().manual_seed(0)
    noise = (torch.rand(z.shape, generator=g, dtype=torch.float64) - 0.5) * 3.0 / N
    zp = (z + noise).clamp_min(0)
    zp = zp / zp.sum(1, keepdim=True)
    rep = replay_flows(controller, idle, flows, zp)
    after = counts_after_flows(idle, flows, controller.edge_index)
    delta = (N * zp - after).abs()
    per_region = (controller.targets(idle, zp) - after).abs()
    assert bool((per_region <= delta.floor() + 1).all())
    assert torch.equal(rep.counts_l1, per_region.sum(1))
    assert bool((rep.counts_l1[(delta < 0.5).all(1)] == 0).all())
    assert float(rep.counts_l1.sum()) > 0


def test_invalid_inputs(controller):
    n, E = controller.num_nodes, controller.num_edges
    idle = torch.full((2, n), 3.0, dtype=torch.float64)
    flows = torch.zeros(2, E, dtype=torch.float64)
    with pytest.raises(ValueError, match="flows"):
        flows_to_distribution(idle, flows[:, :-1], controller.edge_index)
    with pytest.raises(ValueError, match="flows"):
        flows_to_distribution(idle, -torch.ones_like(flows), controller.edge_index)
    with pytest.raises(ValueError, match="idle"):
        flows_to_distribution(-idle, flows, controller.edge_index)
    # moving more vehicles out of a region than it has is not executable: flagged, not raised
    bad = flows.clone()
    bad[1, 0] = 10.0
    res, _ = invert_flows(controller, idle, bad)
    assert res.converged.tolist() == [True, False]
    # no idle vehicle: uniform
    z, valid = flows_to_distribution(torch.zeros(1, n, dtype=torch.float64), flows[:1], controller.edge_index)
    torch.testing.assert_close(z, torch.full((1, n), 1.0 / n, dtype=torch.float64))


def test_flow_inverter_relabels_a_dataset(city, controller, tmp_path):
    from ohio_layers.inverse import relabel

    ds = collect("proportional", episodes=2, seed=4, scenario=city, progress=False)
    inv = FlowInverter(controller)
    direct = inv(ds, np.arange(len(ds)))
    high, report = relabel(ds, inv, k=1, out_path=tmp_path / "high.npz", progress=False, extra_keys=("z_true",))
    assert len(high) == len(ds) and report.reproduced_share == 1.0
    np.testing.assert_array_equal(high["z"], direct.z.numpy())
    np.testing.assert_array_equal(high["rewards"], ds["rewards"])
