"""Analytic supply-chain inverse on MPC data: exact replay, capacity clipping counted, relabel integration."""
import numpy as np
import pytest
import torch

from ohio_layers.envs.supply_chain import SupplyChainEnv, collect
from ohio_layers.inverse import SupplyChainInverter, relabel, replay_supply, shipments_to_z
from ohio_layers.lowlevel import SupplyChainController


@pytest.fixture(scope="module")
def mpc_1w10s():
    return collect("mpc", 2, seed=11, scenario="1w10s", progress=False)


def test_replay_reproduces_mpc_data_and_z_is_valid(mpc_1w10s):
    d = mpc_1w10s
    c = SupplyChainEnv("1w10s").controller
    st, a = torch.as_tensor(d["states"]), torch.as_tensor(d["actions"])
    z = shipments_to_z(c, st, a, eps=1e-5)
    assert torch.allclose(z[:, :11].sum(1), torch.ones(len(z), dtype=z.dtype)) and bool((z[:, :11] > 0).all())
    assert torch.equal(z[:, 11], a[:, 10])  # identity for production
    s = replay_supply(c, st, a, z).summary()
    assert s == {"rows": 60, "reproduced": 60, "capacity_clipped": 0, "factory_clipped": 0, "invalid": 0, "unexplained": 0}


def test_capacity_clipping_is_counted_when_capacities_shrink(mpc_1w10s):
    d = mpc_1w10s
    tight = SupplyChainController([6.0] * 10, 80.0, 60.0)  # MPC shipped for capacity 15
    st, a = torch.as_tensor(d["states"]), torch.as_tensor(d["actions"])
    rep = replay_supply(tight, st, a, shipments_to_z(tight, st, a))
    s = rep.summary()
    assert s["capacity_clipped"] > 0 and s["unexplained"] == 0 and s["reproduced"] + s["capacity_clipped"] + s["factory_clipped"] == 60
    # clipped rows ship less than observed, never more
    sol = tight.solve(st, shipments_to_z(tight, st, a))
    assert bool((sol.shipments <= a[:, :10]).all())
    assert bool((sol.shipments[rep.capacity_clipped] < a[rep.capacity_clipped, :10]).any(1).all())


def test_relabel_with_inverter(mpc_1w10s, tmp_path):
    c = SupplyChainEnv("1w10s").controller
    high, report = relabel(mpc_1w10s, SupplyChainInverter(c, eps=1e-5), 1, tmp_path / "h.npz", progress=False)
    assert high["z"].shape == (60, 12) and report.reproduced_share == 1.0
    assert np.array_equal(high["observations"], mpc_1w10s["observations"])
