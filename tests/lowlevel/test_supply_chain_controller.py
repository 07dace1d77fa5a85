"""SupplyChainController: closed form vs the HiGHS lexicographic LP, integrality, gradients, flagged inputs."""
import numpy as np
import pytest
import torch

from ohio_layers.lowlevel.supply_chain import SupplyChainController, SupplyChainInputError, SupplyStatus


def _instances(B, S, seed, cap_f=80.0, C=60.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    I = torch.randint(0, 25, (B, S), generator=g).to(dtype)
    D = torch.rand(B, S, generator=g, dtype=dtype) * 30
    A = torch.randint(0, 10, (B, S), generator=g).to(dtype)
    If = torch.randint(0, int(cap_f) // 2 + 1, (B,), generator=g).to(dtype)
    Af = torch.minimum(torch.randint(0, int(C) + 1, (B,), generator=g).to(dtype), cap_f - If)
    u = torch.distributions.Dirichlet(torch.full((S + 1,), 0.7)).sample((B,)).to(dtype)
    u[::7] = torch.nn.functional.one_hot(torch.randint(0, S + 1, (u[::7].shape[0],), generator=g), S + 1).to(dtype)  # vertices
    q = torch.rand(B, 1, generator=g, dtype=dtype) * C
    q[::5] = C  # targets at the bound: the factory capacity binds often
    return torch.cat([I, D, A, If[:, None], Af[:, None]], 1), torch.cat([u, q], 1)


@pytest.mark.parametrize("integer", [True, False])
@pytest.mark.parametrize("S", [3, 10])
def test_closed_form_equals_highs_lexicographic_lp(integer, S):
    c = SupplyChainController([15.0] * S, 80.0, 60.0)
    state, z = _instances(300, S, seed=S)
    cf, lp = c.solve(state, z, "closed_form", integer), c.solve(state, z, "highs", integer)
    assert bool(cf.ok.all()) and bool(lp.ok.all())
    assert torch.allclose(cf.stage1, lp.stage1, atol=1e-9, rtol=0)
    assert torch.allclose(cf.stage2, lp.stage2, atol=1e-9, rtol=0)
    assert torch.allclose(cf.stage1, torch.relu(-cf.room).sum(1), atol=1e-12)  # stage 1 = unavoidable slack
    assert (cf.stage1 > 0).any() and (cf.stage2 > 0).any()  # both stages bind on some instances
    # the batched HiGHS LP equals per-sample solves
    one = torch.stack([c.solve(state[i:i + 1], z[i:i + 1], "highs", integer).stage2[0] for i in range(5)])
    assert torch.allclose(one, lp.stage2[:5], atol=1e-9, rtol=0)


def test_integer_shipments_preserve_stock_and_room():
    S = 10
    c = SupplyChainController([15.0] * S, 80.0, 60.0)
    state, z = _instances(2000, S, seed=1)
    sol = c.solve(state, z)
    x, p = sol.shipments, sol.production
    avail = state[:, 3 * S] + state[:, 3 * S + 1]
    assert torch.equal(x, x.round()) and torch.equal(p, p.round())
    assert bool((x >= 0).all()) and bool((x.sum(1) <= avail).all())
    assert bool((x <= torch.relu(c.room(state))).all())  # room with the exact (unfloored) forecast
    assert bool((avail - x.sum(1) + p <= 80.0).all()) and bool(((p >= 0) & (p <= 60.0)).all())
    assert torch.equal(sol.targets.sum(1) <= avail, torch.ones(2000, dtype=torch.bool))


def test_integer_production_target_is_rounded_to_nearest():
    # the deployed production target of a learned policy is a real number near an integer label: truncation would
    # under-produce by half a unit on average where the end-to-end path (env rounding) does not
    c = SupplyChainController([15.0] * 3, 50.0, 25.0)
    state = torch.tensor([[2.0, 3.0, 4.0, 9.0, 9.0, 9.0, 0.0, 0.0, 0.0, 10.0, 0.0]] * 4, dtype=torch.float64)
    u = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64).expand(4, 4)
    z = torch.cat([u, torch.tensor([[9.7], [9.2], [24.6], [0.4]], dtype=torch.float64)], 1)
    for method in ("closed_form", "highs"):
        assert c.solve(state, z, method).production.tolist() == [10.0, 9.0, 25.0, 0.0]


def test_gradients_finite_difference_and_straight_through():
    S = 3
    c = SupplyChainController([15.0] * S, 50.0, 25.0)
    state, z = _instances(40, S, seed=2, cap_f=50.0, C=25.0)
    z[:, :S + 1] = torch.distributions.Dirichlet(torch.full((S + 1,), 2.0)).sample((40,)).double()
    z[:, S + 1] = 7.3
    sol = c.solve(state, z, integer=False)
    head = 50.0 - state[:, 3 * S] - state[:, 3 * S + 1] + sol.shipments.sum(1)
    away = ((sol.targets - torch.relu(sol.room)).abs() > 1e-3).all(1) & (sol.room.abs() > 1e-3).all(1) & ((head - 7.3).abs() > 1e-3)
    state, z = state[away][:6], z[away][:6]  # away from the min/relu kinks of the piecewise-linear solution
    assert len(z) == 6

    def f(zz):
        return c.solve(state, zz, "closed_form", integer=False).action

    torch.autograd.gradcheck(f, (z.clone().requires_grad_(True),), eps=1e-6, atol=1e-6)
    zi = z.clone().requires_grad_(True)
    c.solve(state, zi, integer=True).action.sum().backward()
    zc = z.clone().requires_grad_(True)
    f(zc).sum().backward()
    assert torch.allclose(zi.grad, zc.grad) and zi.grad.abs().sum() > 0


def test_bad_inputs_are_flagged_never_silent():
    S = 3
    c = SupplyChainController([15.0] * S, 50.0, 25.0)
    state, z = _instances(7, S, seed=3, cap_f=50.0, C=25.0)
    state[1, 0] = float("nan")
    state[2, 3 * S] = -1.0
    z[3, :S + 1] = torch.tensor([0.5, 0.5, 0.5, 0.0])
    z[4, S + 1] = 30.0
    state[5, 0] = 2.5
    state[6, 3 * S], state[6, 3 * S + 1] = 40.0, 20.0
    sol = c.solve(state, z)
    expected = [SupplyStatus.OK, SupplyStatus.NON_FINITE, SupplyStatus.NEGATIVE_STOCK, SupplyStatus.OFF_SIMPLEX,
                SupplyStatus.PRODUCTION_OUT_OF_RANGE, SupplyStatus.NON_INTEGER_STOCK, SupplyStatus.FACTORY_OVERFULL]
    assert sol.status.tolist() == [int(e) for e in expected]
    assert torch.isnan(sol.action[1:]).all() and torch.isfinite(sol.action[0]).all()
    assert c.solve(state, z, "highs").status.tolist() == sol.status.tolist()
    with pytest.raises(SupplyChainInputError, match="OFF_SIMPLEX"):
        c(state, z)
    assert c(state[:1], z[:1]).shape == (1, S + 1)
    out32 = c(state[:1].float(), z[:1].float())
    assert out32.dtype == torch.float32
    with pytest.raises(ValueError, match="state must have shape"):
        c(state[:, :-1], z)
