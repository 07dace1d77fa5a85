"""The batched differentiable QP layer: exactness, gradients, batching rules, status, errors."""
import numpy as np
import pytest
import torch

from ohio_layers.lowlevel.qp import QPStatus, solve_qp



def osc_like(B, n=7, bound=1.5, seed=0, dtype=torch.float64):
    """OSC-shaped box QPs: Q = M^{-1} + 1e-3 I for a random SPD M, p = -Q tau, |x| <= bound."""
    g = torch.Generator().manual_seed(seed)
    R = torch.linalg.qr(torch.randn(B, n, n, generator=g, dtype=torch.float64))[0]
    eig = 0.05 + 2.95 * torch.rand(B, n, generator=g, dtype=torch.float64)
    M = R @ torch.diag_embed(eig) @ R.transpose(1, 2)
    Q = torch.linalg.inv(M) + 1e-3 * torch.eye(n, dtype=torch.float64)
    Q = 0.5 * (Q + Q.transpose(1, 2))
    tau = 2.0 * torch.randn(B, n, generator=g, dtype=torch.float64)
    p = -(Q @ tau.unsqueeze(-1)).squeeze(-1)
    lim = torch.full((n,), bound, dtype=torch.float64)
    return Q.to(dtype), p.to(dtype), (-lim).to(dtype), lim.to(dtype)


def reference(Q, p, lower=None, upper=None, G=None, h=None, A=None, b=None):
    """cvxpy + Clarabel at tight tolerances, one problem (numpy arrays); skips without cvxpy."""
    cp = pytest.importorskip("cvxpy")
    x = cp.Variable(p.shape[0])
    cons = []
    for bound, sign in ((lower, 1.0), (upper, -1.0)):
        if bound is not None:
            finite = np.flatnonzero(np.isfinite(bound))
            cons.append(sign * x[finite] >= sign * bound[finite])
    if G is not None:
        cons.append(G @ x <= h)
    if A is not None:
        cons.append(A @ x == b)
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, cp.psd_wrap(Q)) + p @ x), cons)
    for tol in (1e-12, 1e-11, 1e-10):  # Clarabel occasionally stalls at the tightest setting
        try:
            prob.solve(solver=cp.CLARABEL, tol_gap_abs=tol, tol_gap_rel=tol, tol_feas=tol, tol_ktratio=100 * tol, max_iter=500)
            return x.value, prob.status
        except cp.error.SolverError:
            continue
    raise AssertionError("the reference solver failed")


def general_problem(B, seed=1):
    Q, p, lo, hi = osc_like(B, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    G = torch.randn(B, 4, 7, generator=g, dtype=torch.float64)
    h = 0.5 + torch.rand(B, 4, generator=g, dtype=torch.float64)
    A = torch.randn(B, 2, 7, generator=g, dtype=torch.float64)
    b = 0.2 * torch.randn(B, 2, generator=g, dtype=torch.float64)
    return Q, p, lo, hi, G, h, A, b


# ------------------------------------------------------------------ exactness
def test_box_qp_equals_clarabel_reference():
    Q, p, lo, hi = osc_like(24)
    sol = solve_qp(Q, p, lo, hi)
    assert bool(sol.ok.all())
    active = ((sol.x - hi).abs() < 1e-12) | ((sol.x - lo).abs() < 1e-12)
    assert int(active.any(-1).sum()) > 12, "the test problems should mostly have active bounds"
    for i in range(24):
        x_ref, status = reference(Q[i].numpy(), p[i].numpy(), lo.numpy(), hi.numpy())
        assert status == "optimal"
        np.testing.assert_allclose(sol.x[i].numpy(), x_ref, atol=1e-8, rtol=0)


def test_general_qp_with_bounds_inequalities_and_equalities_equals_reference():
    Q, p, lo, hi, G, h, A, b = general_problem(16)
    sol = solve_qp(Q, p, lo, hi, G, h, A, b)
    assert bool(sol.ok.all())
    for i in range(16):
        x_ref, status = reference(*(t[i].numpy() if t.dim() > 1 else t.numpy() for t in (Q, p, lo, hi, G, h, A, b)))
        assert status == "optimal"
        np.testing.assert_allclose(sol.x[i].numpy(), x_ref, atol=1e-8, rtol=0)


def test_box_written_as_inequalities_gives_the_box_solution():
    """The interior-point + polish path (used as the box fallback) agrees with the active-set path."""
    Q, p, lo, hi = osc_like(64, seed=3)
    G = torch.cat([torch.eye(7), -torch.eye(7)]).double()
    h = torch.cat([hi, -lo])
    box, general = solve_qp(Q, p, lo, hi), solve_qp(Q, p, G=G, h=h)
    assert bool(general.ok.all())
    torch.testing.assert_close(general.x, box.x, atol=1e-12, rtol=0)


def test_partially_infinite_bounds():
    Q, p, lo, hi = osc_like(8, seed=4)
    lo = lo.clone().expand(8, -1).clone()
    lo[:, :3] = -float("inf")
    sol = solve_qp(Q, p, lo, float("inf"))
    for i in range(8):
        x_ref, _ = reference(Q[i].numpy(), p[i].numpy(), lower=lo[i].numpy())
        np.testing.assert_allclose(sol.x[i].numpy(), x_ref, atol=1e-8, rtol=0)


def test_qpth_backend_agrees():
    pytest.importorskip("qpth")
    Q, p, lo, hi = osc_like(16, seed=5)
    Q.requires_grad_(True)
    p.requires_grad_(True)
    ours, theirs = solve_qp(Q, p, lo, hi), solve_qp(Q, p, lo, hi, backend="qpth")
    torch.testing.assert_close(ours.x, theirs.x, atol=1e-8, rtol=0)
    w = torch.randn(16, 7, dtype=torch.float64)
    g_ours = torch.autograd.grad((ours.x * w).sum(), (Q, p))
    g_theirs = torch.autograd.grad((theirs.x * w).sum(), (Q, p))
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)  # qpth's own gradient accuracy


def test_float32_inputs_give_float32_solutions_close_to_float64():
    Q, p, lo, hi = osc_like(32, seed=6)
    x64 = solve_qp(Q, p, lo, hi).x
    sol32 = solve_qp(Q.float(), p.float(), lo.float(), hi.float())
    assert sol32.x.dtype == torch.float32 and bool(sol32.ok.all())
    torch.testing.assert_close(sol32.x.double(), x64, atol=1e-4, rtol=0)


# ------------------------------------------------------------------ gradients
def test_gradcheck_box_qp_all_arguments():
    Q, p, lo, hi = osc_like(3, n=4, bound=1.0, seed=7)
    lo, hi = lo.expand(3, -1).clone(), hi.expand(3, -1).clone()
    x = solve_qp(Q, p, lo, hi).x
    assert bool(((x - hi).abs() < 1e-12).any() or ((x - lo).abs() < 1e-12).any())
    args = tuple(t.clone().requires_grad_(True) for t in (Q, p, lo, hi))
    assert torch.autograd.gradcheck(lambda *a: solve_qp(*a).x, args, eps=1e-6, atol=1e-6)


def test_gradcheck_general_qp_all_arguments():
    Q, p, lo, hi, G, h, A, b = general_problem(2, seed=8)
    Q, p = Q[:, :4, :4].contiguous(), p[:, :4].contiguous()
    G, A = G[:, :, :4].contiguous(), A[:, :1, :4].contiguous()
    b = b[:, :1].contiguous()
    lo, hi = lo[:4] * 0.5, hi[:4] * 0.5
    sol = solve_qp(Q, p, lo, hi, G, h, A, b)
    assert bool(sol.ok.all())
    args = tuple(t.clone().requires_grad_(True) for t in (Q, p, lo, hi, G, h, A, b))
    assert torch.autograd.gradcheck(lambda *a: solve_qp(*a).x, args, eps=1e-6, atol=1e-6)


def test_gradients_of_shared_parameters_are_summed_over_the_batch():
    Q, p, lo, hi = osc_like(5, seed=9)
    Q0 = Q[0].clone().requires_grad_(True)  # shared (unbatched)
    hi0 = hi.clone().requires_grad_(True)   # shared bound
    w = torch.randn(5, 7, dtype=torch.float64)
    gQ, gh = torch.autograd.grad((solve_qp(Q0, p, lo, hi0).x * w).sum(), (Q0, hi0))
    per_sample = [torch.autograd.grad((solve_qp(Q0, p[i:i + 1], lo, hi0).x * w[i]).sum(), (Q0, hi0)) for i in range(5)]
    torch.testing.assert_close(gQ, sum(g[0] for g in per_sample), atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(gh, sum(g[1] for g in per_sample), atol=1e-12, rtol=1e-10)


def test_batch_of_one_and_unbatched_shapes():
    Q, p, lo, hi = osc_like(1, seed=10)
    batched = solve_qp(Q, p, lo, hi)
    unbatched = solve_qp(Q[0], p[0], lo, hi)
    assert batched.x.shape == unbatched.x.shape == (1, 7)
    assert batched.status.shape == unbatched.status.shape == (1,)
    torch.testing.assert_close(batched.x, unbatched.x, atol=0, rtol=0)
    mixed = solve_qp(Q[0], p.expand(3, -1), lo, hi)  # shared Q, batched p
    assert mixed.x.shape == (3, 7)
    torch.testing.assert_close(mixed.x, batched.x.expand(3, -1), atol=0, rtol=0)


# ------------------------------------------------------------------ status
def test_infeasible_member_is_flagged_while_the_rest_solve():
    Q, p, lo, hi = osc_like(6, seed=11)
    G = torch.zeros(6, 2, 7, dtype=torch.float64)
    G[:, 0, 0], G[:, 1, 0] = 1.0, -1.0
    h = torch.full((6, 2), 1.0, dtype=torch.float64)
    h[2] = -1.0  # x0 <= -1 and -x0 <= -1: empty
    p = p.clone().requires_grad_(True)
    sol = solve_qp(Q, p, lo, hi, G, h)
    assert sol.status.tolist() == [0, 0, int(QPStatus.INFEASIBLE), 0, 0, 0]
    assert sol.ok.tolist() == [True, True, False, True, True, True]
    for i in (0, 1, 3, 4, 5):
        x_ref, _ = reference(Q[i].numpy(), p[i].detach().numpy(), lo.numpy(), hi.numpy(), G[i].numpy(), h[i].numpy())
        np.testing.assert_allclose(sol.x[i].detach().numpy(), x_ref, atol=1e-8, rtol=0)
    (grad,) = torch.autograd.grad(sol.x.sum(), p)
    assert bool(torch.isfinite(grad).all())
    assert bool((grad[2] == 0).all()) and bool((grad[[0, 1, 3, 4, 5]] != 0).any())


def test_unbounded_member_is_reported_as_unbounded():
    """Q = diag(1, 1, 0), p = (0, 0, 1): member 1 lacks the row bounding x3 from below."""
    Q = torch.diag(torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64))
    p = torch.tensor([0.3, -0.2, 1.0], dtype=torch.float64).expand(2, -1).clone().requires_grad_(True)
    G = torch.tensor([[[1.0, 0, 0], [0, 0, -1]], [[1.0, 0, 0], [0, 0, 0]]], dtype=torch.float64)
    h = torch.tensor([[1.0, 5.0], [1.0, 1.0]], dtype=torch.float64)
    sol = solve_qp(Q, p, G=G, h=h, max_iter=30)
    assert sol.status.tolist() == [int(QPStatus.OPTIMAL), int(QPStatus.UNBOUNDED)]
    torch.testing.assert_close(sol.x[0], torch.tensor([-0.3, 0.2, -5.0], dtype=torch.float64), atol=1e-10, rtol=0)
    (grad,) = torch.autograd.grad(sol.x.sum(), p)
    assert bool((grad[1] == 0).all())  # an unsolved member carries no gradient
    assert int(sol.iterations[1]) >= 30


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "change, name",
    [
        (lambda a: {**a, "p": a["p"][:, :5]}, "p"),
        (lambda a: {**a, "Q": a["Q"][:, :5]}, "Q"),
        (lambda a: {**a, "p": torch.full_like(a["p"], float("nan"))}, "p"),
        (lambda a: {**a, "lower": torch.zeros(4, 5, dtype=torch.float64)}, "lower"),
        (lambda a: {**a, "upper": a["upper"][:3]}, "upper"),
        (lambda a: {**a, "Q": a["Q"] - 5.0 * torch.eye(7, dtype=torch.float64)}, "Q"),
        (lambda a: {**a, "p": a["p"][:2]}, "batch"),
        (lambda a: {**a, "p": a["p"].float()}, "dtype"),
        (lambda a: {**a, "G": torch.ones(2, 7, dtype=torch.float64)}, "h"),
    ],
)
def test_bad_inputs_raise_errors_naming_the_argument(change, name):
    Q, p, lo, hi = osc_like(4, seed=13)
    args = change({"Q": Q, "p": p, "lower": lo, "upper": hi})
    with pytest.raises((ValueError, TypeError), match=name):
        solve_qp(**args)


def test_unknown_backend_is_rejected():
    Q, p, lo, hi = osc_like(1)
    with pytest.raises(ValueError, match="backend"):
        solve_qp(Q, p, lo, hi, backend="gurobi")


# ------------------------------------------------------------------ small-batch CPU path
def _batched_path(Q, p, lo, hi, B):
    """Solve ``B`` problems inside a batch large enough for the batched (torch) search."""
    from ohio_layers.lowlevel import qp as qp_module

    reps = qp_module.SMALL_BATCH_LOOP // B + 1
    big = [t.repeat(reps, *([1] * (t.dim() - 1))) if t.dim() == 2 or (t is Q and t.dim() == 3) else t
           for t in (Q, p, lo, hi)]
    sol = solve_qp(*big)
    return sol, reps


@pytest.mark.parametrize("B", [1, 3, 8])
def test_small_batch_path_matches_the_batched_path(B):
    """Values and gradients of every argument agree with the batched search."""
    Q, p, lo, hi = osc_like(B, seed=20 + B)
    lo, hi = lo.expand(B, -1).clone(), hi.expand(B, -1).clone()
    small = [t.clone().requires_grad_(True) for t in (Q, p, lo, hi)]
    sol = solve_qp(*small)
    assert bool(sol.ok.all()) and sol.x.shape == (B, 7)
    big = [t.clone().requires_grad_(True) for t in (Q, p, lo, hi)]
    ref, reps = _batched_path(*big, B)
    assert ref.x.shape[0] > 24
    torch.testing.assert_close(sol.x, ref.x[:B], atol=1e-12, rtol=0)
    assert bool((sol.iterations <= ref.iterations[:B]).all())  # the batched search may count a repeat late
    w = torch.randn(B, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(B))
    g_small = torch.autograd.grad((sol.x * w).sum(), small)
    g_big = torch.autograd.grad((ref.x * w.repeat(reps, 1)).sum(), big)
    for a, b in zip(g_small, g_big):
        torch.testing.assert_close(a * reps, b, atol=1e-10, rtol=1e-9)


def test_small_batch_gradcheck_shared_scalar_and_absent_bounds():
    Q, p, lo, hi = osc_like(2, n=4, bound=0.8, seed=21)
    Q0 = Q[0].clone().requires_grad_(True)               # shared Q
    p = p.clone().requires_grad_(True)                    # batched p
    lo0 = torch.tensor(-0.8, dtype=torch.float64, requires_grad=True)  # 0-dim bound
    hi0 = hi.clone().requires_grad_(True)                 # shared (n,) bound
    x = solve_qp(Q0, p, lo0, hi0).x
    assert bool(((x - hi0).abs() < 1e-12).any() or ((x - lo0).abs() < 1e-12).any())
    assert torch.autograd.gradcheck(lambda *a: solve_qp(*a).x, (Q0, p, lo0, hi0), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(lambda q, pp: solve_qp(q, pp, -0.8, None).x, (Q0, p), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(lambda q, pp: solve_qp(q, pp, None, 0.8).x, (Q0, p), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(lambda u: solve_qp(Q0.detach(), p.detach(), None, u).x, (hi0,), eps=1e-6, atol=1e-6)


def test_small_batch_float32_and_returned_tensor_is_independent():
    Q, p, lo, hi = osc_like(1, seed=22)
    x64 = solve_qp(Q, p, lo, hi).x
    Q32, p32 = Q.float().requires_grad_(True), p.float().requires_grad_(True)
    sol = solve_qp(Q32, p32, lo.float(), hi.float())
    assert sol.x.dtype == torch.float32 and bool(sol.ok.all())
    torch.testing.assert_close(sol.x.double(), x64, atol=1e-5, rtol=0)
    gQ, gp = torch.autograd.grad(sol.x.sum(), (Q32, p32))
    assert gQ.dtype == gp.dtype == torch.float32
    # editing the returned x in place must not change the saved solution the backward pass uses
    p64 = p.clone().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(solve_qp(Q, p64, lo, hi).x.sum(), p64)
    x = solve_qp(Q, p64, lo, hi).x
    x.add_(1.0)
    (g_edit,) = torch.autograd.grad(x.sum(), p64)
    torch.testing.assert_close(g_edit, g_ref, atol=0, rtol=0)


def test_small_batch_semidefinite_q_takes_the_general_route():
    """A singular (PSD) Q fails the Cholesky test of the fast path but is still solved."""
    Q = torch.diag(torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64))
    p = torch.tensor([[-4.0, 0.5, -1.0]], dtype=torch.float64)
    sol = solve_qp(Q, p, -1.0, 1.0)
    assert bool(sol.ok.all())
    torch.testing.assert_close(sol.x, torch.tensor([[1.0, -0.5, 1.0]], dtype=torch.float64), atol=1e-9, rtol=0)


@pytest.mark.parametrize(
    "change, name",
    [
        (lambda a: {**a, "Q": a["Q"].clone().fill_diagonal_(float("nan"))}, "Q contains NaN"),
        (lambda a: {**a, "p": a["p"].clone().fill_(float("inf"))}, "p contains NaN or inf"),
        (lambda a: {**a, "lower": torch.full((7,), float("nan"), dtype=torch.float64)}, "lower contains NaN"),
        (lambda a: {**a, "Q": a["Q"] - 5.0 * torch.eye(7, dtype=torch.float64)}, "positive semidefinite"),
        (lambda a: {**a, "upper": a["upper"].float()}, "upper must have the dtype"),
        (lambda a: {**a, "Q": a["Q"][:6, :6]}, "Q must have shape"),
        (lambda a: {**a, "lower": torch.zeros(2, 7, dtype=torch.float64), "p": a["p"].expand(3, -1)}, "batch size"),
    ],
)
def test_single_problem_errors_are_unchanged(change, name):
    Q, p, lo, hi = osc_like(1, seed=23)
    args = change({"Q": Q[0], "p": p[0], "lower": lo, "upper": hi})
    with pytest.raises((ValueError, TypeError), match=name):
        solve_qp(**args)
