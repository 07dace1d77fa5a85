"""The compiled (numba) Goldfarb-Idnani path of solve_qp against the torch paths, its KKT check and gradients."""
import numpy as np
import pytest
import torch

from ohio_layers.lowlevel.qp import QPStatus, solve_qp
from ohio_layers.lowlevel.qp import active_set_kernels, dual_active_set as das
from ohio_layers.lowlevel.qp.certify import kkt_residual
from ohio_layers.lowlevel.qp.problem import QPProblem

pytestmark = pytest.mark.skipif(not das.available(), reason="numba is not installed (extra fastqp)")
F = torch.float64
DUALS = ("lower_dual", "upper_dual", "ineq_dual", "eq_dual")


def random_problems(B, n=6, m=5, me=2, seed=0):
    """Positive definite Q, some infinite bounds, inequalities with about a third active, equalities."""
    g = torch.Generator().manual_seed(seed)
    L = torch.randn(B, n, n, generator=g, dtype=F)
    Q = L @ L.transpose(1, 2) / n + 0.1 * torch.eye(n, dtype=F)
    p = 3.0 * torch.randn(B, n, generator=g, dtype=F)
    lo, hi = torch.full((B, n), -1.0, dtype=F), torch.full((B, n), 1.0, dtype=F)
    lo[:, 0], hi[:, 1] = -float("inf"), float("inf")
    G = torch.randn(B, m, n, generator=g, dtype=F)
    h = 0.5 + torch.rand(B, m, generator=g, dtype=F)
    A = torch.randn(B, me, n, generator=g, dtype=F)
    b = 0.2 * torch.randn(B, me, generator=g, dtype=F)
    return Q, p, lo, hi, G, h, A, b


def torch_path(monkeypatch, *args):
    with monkeypatch.context() as mp:
        mp.setattr(das, "_AVAILABLE", False)
        return solve_qp(*args)


@pytest.mark.parametrize("B", [3, 40])  # the lean entry (no torch op) and the validated one
def test_compiled_path_matches_the_torch_path(monkeypatch, B):
    args = random_problems(B, seed=B)
    sol = solve_qp(*args)
    ref = torch_path(monkeypatch, *args)
    assert bool(sol.ok.all()) and bool(ref.ok.all())
    assert float(sol.kkt_residual.max()) <= 1e-12
    torch.testing.assert_close(sol.x, ref.x, atol=1e-9, rtol=0)
    for name in DUALS:
        torch.testing.assert_close(getattr(sol, name), getattr(ref, name), atol=1e-7, rtol=0)


def test_box_problems_match_the_numpy_box_search(monkeypatch):
    Q, p, lo, hi = random_problems(3, seed=7)[:4]
    args = [t.clone().requires_grad_(True) for t in (Q, p, lo, hi)]
    sol = solve_qp(*args)
    with monkeypatch.context() as mp:
        mp.setattr(das, "_AVAILABLE", False)
        ref = solve_qp(*args)
    torch.testing.assert_close(sol.x, ref.x, atol=1e-12, rtol=0)
    w = torch.randn(3, 6, dtype=F, generator=torch.Generator().manual_seed(1))
    for a, b in zip(torch.autograd.grad((sol.x * w).sum(), args), torch.autograd.grad((ref.x * w).sum(), args)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-9)


def test_gradcheck_with_shared_and_batched_arguments():
    Q, p, lo, hi, G, h, A, b = random_problems(2, n=4, m=3, me=1, seed=3)
    lo, hi = lo[0].clone(), hi[0].clone()
    lo[0] = -0.6  # an active lower bound
    args = (Q[0].clone(), p, torch.tensor(-0.6, dtype=F), hi, G, h[0].clone(), A[0].clone(), b)
    args = tuple(t.clone().requires_grad_(True) for t in args)
    sol = solve_qp(*args)
    assert bool(sol.ok.all()) and int((sol.ineq_dual > 0).sum() + (sol.lower_dual > 0).sum()) >= 2
    assert torch.autograd.gradcheck(lambda *a: solve_qp(*a).x, args, eps=1e-6, atol=1e-6)


def test_kernel_residual_is_the_kkt_residual():
    """The compiled KKT check equals certify.kkt_residual at arbitrary points and multipliers."""
    rng = np.random.default_rng(0)
    n, m, me = 5, 4, 2
    for trial in range(20):
        Q, p, lo, hi, G, h, A, b = (t[0].numpy() for t in random_problems(1, n, m, me, seed=trial))
        x = rng.standard_normal(n)
        zl, zu, mu, y = (rng.standard_normal(k) * (rng.random(k) < 0.6) for k in (n, n, m, me))
        C = np.concatenate([A, G, np.eye(n), -np.eye(n)])
        d = np.concatenate([b, h, hi, -lo])
        lam = np.concatenate([y, mu, zu, zl])
        ours = active_set_kernels.kkt_residual_one(Q, p, C, d, me, m, x, lam)
        prob = QPProblem(*(torch.from_numpy(a)[None] for a in (Q, p, lo, hi, G, h, A, b)))
        ref = kkt_residual(prob, torch.from_numpy(x)[None], tuple(torch.from_numpy(a)[None] for a in (zl, zu, mu, y)))
        assert ours == pytest.approx(float(ref[0]), rel=1e-12, abs=1e-15), trial


def test_second_backward_raises_instead_of_returning_zeros():
    Q, p, lo, hi, G, h = random_problems(1)[:6]
    p = p.clone().requires_grad_(True)
    x = solve_qp(Q, p, lo, hi, G, h).x
    (gp,) = torch.autograd.grad(x.sum(), p, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(gp.sum(), p)


def test_members_it_cannot_solve_go_to_the_torch_path_alone():
    """A singular Q and an infeasible member in a batch: flagged or solved by the torch path, the rest compiled."""
    Q, p, lo, hi, G, h, A, b = random_problems(4, seed=11)
    Q[1] = torch.diag(torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 2.0], dtype=F))  # PSD, bounded by the box
    lo[1, 3:5], hi[1, 3:5] = -1.0, 1.0
    G[2, 1], h[2, 1] = -G[2, 0], -h[2, 0] - 1.0  # G_0 x <= h_0 and -G_0 x <= -h_0 - 1
    sol = solve_qp(Q, p, lo, hi, G, h, A, b)
    assert sol.status.tolist() == [0, 0, int(QPStatus.INFEASIBLE), 0]
    for i in (0, 1, 3):
        alone = solve_qp(Q[i], p[i], lo[i], hi[i], G[i], h[i], A[i], b[i])
        torch.testing.assert_close(sol.x[i], alone.x[0], atol=1e-9, rtol=0)
    assert int(sol.iterations[1]) > 0 and float(sol.kkt_residual[1]) <= 1e-9


@pytest.mark.parametrize("backend", ["piqp", "proxqp"])
def test_external_forward_backends_give_the_native_solution_status_and_gradient(backend):
    """PIQP / ProxQP as the first phase, our polish, certificate and implicit backward."""
    pytest.importorskip("piqp" if backend == "piqp" else "proxsuite")
    Q, p, lo, hi, G, h, A, b = random_problems(4, seed=21)
    G[3, 1], h[3, 1] = -G[3, 0], -h[3, 0] - 1.0  # an infeasible member
    w = torch.randn(4, 6, dtype=F, generator=torch.Generator().manual_seed(2))
    results = {}
    for name in ("native", backend):
        pp = p.clone().requires_grad_(True)
        sol = solve_qp(Q, pp, lo, hi, G, h, A, b, backend=name)
        (grad,) = torch.autograd.grad((sol.x * w).sum(), pp)
        results[name] = (sol, grad)
    (ours, g_ours), (theirs, g_theirs) = results["native"], results[backend]
    assert ours.status.tolist() == theirs.status.tolist() == [0, 0, 0, int(QPStatus.INFEASIBLE)]
    assert float(theirs.kkt_residual[:3].max()) <= 1e-9
    torch.testing.assert_close(theirs.x[:3], ours.x[:3], atol=1e-9, rtol=0)
    torch.testing.assert_close(g_theirs, g_ours, atol=1e-8, rtol=0)


@pytest.mark.parametrize("name, index", [("G", (0, 1, 2)), ("h", (0, 3)), ("A", (0, 0, 1)), ("b", (0, 1))])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_lean_entry_rejects_nan_and_inf_outside_the_bounds(name, index, value):
    """The lean entry leaves this check to the kernel; an infinite ``h`` would otherwise be a row that
    never enters (a silently wrong OPTIMAL): the call must raise the general path's error instead."""
    args = dict(zip(("Q", "p", "lower", "upper", "G", "h", "A", "b"), random_problems(1, seed=5)))
    args[name] = args[name].clone()
    args[name][index] = value
    with pytest.raises(ValueError, match=f"{name} contains NaN or inf"):
        solve_qp(**args)


def test_lean_entry_shared_and_scalar_arguments_match_the_batched_call():
    """Unbatched Q/G/h, 0-dim and Python-number bounds and a batched p, through the lean entry, equal
    the same problem with every argument expanded (and their gradients sum over the batch)."""
    Q, p, lo, hi, G, h, A, b = random_problems(4, seed=9)
    Q1, G1, h1 = (t[0].clone().requires_grad_(True) for t in (Q, G, h))
    lo0 = torch.tensor(-1.0, dtype=F, requires_grad=True)
    sol = solve_qp(Q1, p, lo0, 1.0, G1, h1, A, b)
    exp = [t.detach().expand(4, *t.shape).clone().requires_grad_(True) for t in (Q1, G1, h1)]
    lo_e = torch.full((4, 6), -1.0, dtype=F, requires_grad=True)
    ref = solve_qp(exp[0], p, lo_e, torch.ones(4, 6, dtype=F), exp[1], exp[2], A, b)
    assert bool(sol.ok.all()) and bool(ref.ok.all())
    torch.testing.assert_close(sol.x, ref.x, atol=1e-12, rtol=0)
    w = torch.randn(4, 6, dtype=F, generator=torch.Generator().manual_seed(2))
    got = torch.autograd.grad((sol.x * w).sum(), (Q1, G1, h1, lo0))
    want = torch.autograd.grad((ref.x * w).sum(), (*exp, lo_e))
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e.sum(0) if a.dim() else e.sum(), atol=1e-10, rtol=1e-9)


def test_empty_batch_returns_an_empty_solution_and_a_zero_batch_does_not_pass_for_a_shared_argument():
    s = solve_qp(torch.eye(3, dtype=torch.float64), torch.zeros(0, 3, dtype=torch.float64), -1.0, 1.0)
    assert s.x.shape == (0, 3) and s.status.shape == (0,)
    with pytest.raises(ValueError, match="batch size"):
        solve_qp(torch.eye(3, dtype=torch.float64).expand(0, 3, 3), torch.zeros(4, 3, dtype=torch.float64), -1.0, 1.0)


OUTPUTS = ("x", "status", "iterations", *DUALS, "kkt_residual")


def _solve_with_grads(args, wanted, w):
    """``solve_qp(**args)`` with every tensor named in ``wanted`` a fresh leaf; the solution and ``d(w.x)/d(each)``."""
    leaves = {k: args[k].detach().clone().requires_grad_(True) for k in wanted}
    sol = solve_qp(**{**args, **leaves})
    grads = torch.autograd.grad((sol.x * w).sum(), [leaves[k] for k in wanted])
    return sol, dict(zip(wanted, grads))


@pytest.mark.parametrize("B", [1, 5])
def test_lean_entry_equals_the_validated_compiled_route_bitwise(B):
    """The lean entry (no torch op, gradients written in the caller's layout by the kernel) and the
    validated entry (make_problem, then the same kernel) give identical bits: x, status, duals,
    residual and the gradient of every argument."""
    from ohio_layers.lowlevel.qp.problem import make_problem

    names = ("Q", "p", "lower", "upper", "G", "h", "A", "b")
    args = dict(zip(names, random_problems(B, seed=11)))
    assert das.solve_lean(*args.values(), 1e-9) is not None  # the lean entry takes this call
    w = torch.randn(B, 6, dtype=F, generator=torch.Generator().manual_seed(3))
    lean, g_lean = _solve_with_grads(args, names, w)
    leaves = {k: args[k].detach().clone().requires_grad_(True) for k in names}
    ref, solved = das.solve_compiled(make_problem(*leaves.values()), 1e-9)
    assert bool(solved.all()) and bool(lean.ok.all())
    g_ref = dict(zip(names, torch.autograd.grad((ref.x * w).sum(), list(leaves.values()))))
    for k in OUTPUTS:
        assert torch.equal(getattr(lean, k), getattr(ref, k)), k
    for k in names:
        assert g_lean[k].shape == args[k].shape and torch.equal(g_lean[k], g_ref[k]), k


@pytest.mark.parametrize("B", [1, 3])
def test_transposed_q_and_a_and_a_shared_g_give_the_same_results(B):
    """``Q`` and ``A`` given as transposed (non-contiguous) views and ``G`` shared by the batch: the same
    x, status and duals as contiguous batched copies, the same gradients of ``Q`` and ``A`` (bitwise),
    and the gradient of the shared ``G`` is the batched one summed over the batch."""
    Q, p, lo, hi, G, h, A, b = random_problems(B, seed=12)
    G[:] = G[0]  # one G for every member
    base = dict(Q=Q, p=p, lower=lo, upper=hi, G=G, h=h, A=A, b=b)
    odd = dict(base, Q=Q.transpose(1, 2).contiguous().transpose(1, 2), A=A.transpose(1, 2).contiguous().transpose(1, 2),
               G=G[0].clone())
    assert not odd["Q"].is_contiguous() and not odd["A"].is_contiguous()
    w = torch.randn(B, 6, dtype=F, generator=torch.Generator().manual_seed(4))
    got, g_got = _solve_with_grads(odd, ("Q", "p", "G", "h", "A"), w)
    want, g_want = _solve_with_grads(base, ("Q", "p", "G", "h", "A"), w)
    assert bool(want.ok.all())
    for k in OUTPUTS:
        assert torch.equal(getattr(got, k), getattr(want, k)), k
    for k in ("Q", "p", "h", "A"):
        assert torch.equal(g_got[k], g_want[k]), k
    assert g_got["G"].shape == (5, 6)
    if B == 1:
        assert torch.equal(g_got["G"], g_want["G"][0])
    else:
        torch.testing.assert_close(g_got["G"], g_want["G"].sum(0), atol=1e-14, rtol=1e-14)


def test_function_apply_uses_the_c_entry_and_falls_back_to_the_plain_apply(monkeypatch):
    """The C entry gives what ``Function.apply`` gives (value and gradient); without the private entry,
    or for a class with ``setup_context``, ``function_apply`` is the plain ``apply``."""

    class Twice(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            return 2 * a

        @staticmethod
        def backward(ctx, g):
            return 2 * g

    a = torch.arange(3.0, requires_grad=True)
    direct = das.function_apply(Twice)
    assert direct is not Twice.apply
    out = direct(a)
    out.sum().backward()
    assert torch.equal(out, Twice.apply(a)) and torch.equal(a.grad, torch.full((3,), 2.0))

    class WithSetup(Twice):
        @staticmethod
        def forward(a):
            return 2 * a

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

    assert das.function_apply(WithSetup) == WithSetup.apply
    monkeypatch.setattr(torch._C, "_FunctionBase", object)
    assert das.function_apply(Twice) == Twice.apply
