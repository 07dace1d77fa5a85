"""The autograd-free updates (ohio_layers.rl.fused) against the autograd path they replace."""
import copy

import pytest
import torch
from torch import nn

from helpers import random_transitions
from ohio_layers.rl import BC, IQL, MLP, fused_kernels
from ohio_layers.rl.fused import (ReluMLPKernel, actor_nll_backward, expectile_loss_grad, fused_disabled,
                                  fused_enabled, set_fused, squared_error_grad)

OBS, ACT = 6, 3


@pytest.fixture(scope="module")
def data():
    return random_transitions(600, OBS, ACT, 0, episodes=6, terminal_rate=0.02, action_bound=0.99)


@pytest.fixture(params=[False, True], ids=["torch-losses", "compiled-losses"])
def compiled(request, monkeypatch):
    """Both versions of the losses' element-wise part: torch ops (autograd's values bit for bit) and the
    numba loops of rl.fused_kernels (float64 accumulation: equal to float32 rounding)."""
    if request.param and not fused_kernels.available():
        pytest.skip("numba is not installed (extra fastqp)")
    monkeypatch.setattr(fused_kernels, "_ENABLED", [request.param])
    assert fused_kernels.compiled_enabled() == request.param
    return request.param


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("hidden", [(16,), (32, 16), (8, 8, 8)])
@pytest.mark.parametrize("input_grad", [False, True])
def test_kernel_gradients_equal_autograd(hidden, input_grad):
    torch.manual_seed(0)
    mlp = MLP(5, 4, hidden)
    x = torch.randn(37, 5, requires_grad=input_grad)
    g = torch.randn(37, 4)
    kernel = ReluMLPKernel(mlp)
    out = kernel.forward(x.detach(), keep=True).clone()
    dx = kernel.backward(g, input_grad=input_grad)
    fused = [p.grad.clone() for p in mlp.parameters()]
    mlp.zero_grad(set_to_none=True)
    ref = mlp(x)
    ref.backward(g)
    assert rel_err(out, ref.detach()) < 1e-6
    for p, f in zip(mlp.parameters(), fused):
        assert rel_err(f, p.grad) < 1e-5
    assert (dx is None) == (not input_grad)
    if input_grad:
        assert rel_err(dx, x.grad) < 1e-5


def test_kernel_overwrites_stale_gradients_and_refuses_backward_before_forward():
    mlp = MLP(3, 2, (4,))
    kernel = ReluMLPKernel(mlp)
    with pytest.raises(RuntimeError, match="forward"):
        kernel.backward(torch.ones(2, 2))
    for p in mlp.parameters():
        p.grad = torch.full_like(p, 1e6)
    x, g = torch.randn(5, 3), torch.randn(5, 2)
    kernel.forward(x, keep=True)
    kernel.backward(g)
    fused = [p.grad.clone() for p in mlp.parameters()]
    mlp.zero_grad(set_to_none=True)
    mlp(x).backward(g)
    for p, f in zip(mlp.parameters(), fused):
        assert rel_err(f, p.grad) < 1e-6


@pytest.mark.parametrize("mlp", [MLP(3, 2, (4,), activation=nn.Tanh), MLP(3, 2, (4,), layer_norm=True),
                                 nn.Sequential(nn.Linear(3, 2))])
def test_kernel_refuses_networks_that_are_not_plain_relu_mlps(mlp):
    assert not ReluMLPKernel.supports(mlp)
    with pytest.raises(ValueError, match="ReLU"):
        ReluMLPKernel(mlp)


def test_kernel_refuses_frozen_parameters_for_training_but_not_for_forward():
    mlp = MLP(3, 2, (4,)).requires_grad_(False)
    assert not ReluMLPKernel.supports(mlp) and ReluMLPKernel.supports(mlp, trainable=False)


def test_closed_form_loss_gradients_equal_autograd():
    torch.manual_seed(1)
    target, pred = torch.randn(50), torch.randn(50, requires_grad=True)
    loss, grad = expectile_loss_grad(target, pred.detach(), 0.7)
    diff = target - pred
    ref = (torch.where(diff < 0, 0.3, 0.7) * diff.pow(2)).mean()
    ref.backward()
    assert torch.allclose(loss, ref.detach()) and rel_err(grad, pred.grad) < 1e-6
    pred.grad = None
    loss, grad = squared_error_grad(pred.detach(), target)
    ref = (pred - target).pow(2).mean()
    ref.backward()
    assert torch.allclose(loss, ref.detach()) and rel_err(grad, pred.grad) < 1e-6


@pytest.mark.parametrize("state_dependent_std", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_actor_nll_gradients_equal_autograd_including_the_clamped_log_std(data, state_dependent_std, weighted,
                                                                         compiled):
    agent = BC(OBS, ACT, -1.0, 1.0, {"state_dependent_std": state_dependent_std, "hidden": (32, 32),
                                     "log_std_min": -0.05, "log_std_max": 0.05})  # the clamp is active in places
    actor = agent.actor
    if not state_dependent_std:
        with torch.no_grad():
            actor.log_std.copy_(torch.tensor([-1.0, 0.0, 1.0]))  # below, inside, above the clamp
    obs, act = torch.as_tensor(data["observations"][:64]), torch.as_tensor(data["actions"][:64]).clone()
    act[:3, 0], act[3:6, 1] = 1.0, -1.0  # on the bounds: the atanh clamp is active there
    weights = torch.rand(64) * 3 if weighted else None
    loss = actor_nll_backward(actor, ReluMLPKernel(actor.net), obs, act, weights)
    fused = [p.grad.clone() for p in actor.parameters()]
    actor.zero_grad(set_to_none=True)
    logp = actor.log_prob(obs, act)
    ref = -(logp if weights is None else weights * logp).mean()
    ref.backward()
    assert abs(float(loss) - ref.item()) <= 1e-6 * abs(ref.item())
    for (name, p), f in zip(actor.named_parameters(), fused):
        assert rel_err(f, p.grad) < 1e-5, name


def run_updates(agent, data, steps, fused: bool):
    sampler = agent.make_sampler(data)
    metrics = []
    with agent.rng_scope():
        for _ in range(steps):
            if fused:
                metrics.append(agent.update_tensors(sampler.sample(agent.config.batch_size)))
            else:
                with fused_disabled():
                    metrics.append(agent.update_tensors(sampler.sample(agent.config.batch_size)))
    return metrics


def grads_after_one_update(agent, data, fused):
    run_updates(agent, data, 1, fused)
    return {n: p.grad.clone() for n, p in agent.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("cls,cfg", [(BC, {}), (BC, {"state_dependent_std": False}), (BC, {"grad_clip": 0.1}),
                                     (IQL, {}), (IQL, {"state_dependent_std": True}), (IQL, {"grad_clip": 0.1}),
                                     (IQL, {"obs_norm": True, "discount": 0.9, "max_weight": 1.5})])
def test_update_takes_the_fused_path_and_equals_the_autograd_update(data, cls, cfg, compiled):
    base = cls(OBS, ACT, -1.0, 1.0, {"batch_size": 32, "hidden": (32, 32), **cfg})
    if base.config.obs_norm:
        base.set_obs_stats_from(data)
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    ga, gb = grads_after_one_update(a, data, True), grads_after_one_update(b, data, False)
    assert a.__dict__.get("_fused_cache", (None, None))[1] is not None  # the fused path was taken
    assert "_fused_cache" not in b.__dict__
    assert ga.keys() == gb.keys() and ga
    for k in ga:
        assert rel_err(ga[k], gb[k]) < 1e-5, k
    ma, mb = run_updates(a, data, 3, True), run_updates(b, data, 3, False)
    for x, y in zip(ma, mb):
        for k in y:
            assert abs(float(x[k]) - float(y[k])) <= 1e-4 * max(1.0, abs(float(y[k]))), k
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-5), n


def test_fallback_for_unsupported_settings(data):
    mse = BC(OBS, ACT, -1.0, 1.0, {"batch_size": 16, "hidden": (8,), "loss": "mse"})
    run_updates(mse, data, 1, True)
    assert "_fused_cache" not in mse.__dict__
    tanh = BC(OBS, ACT, -1.0, 1.0, {"batch_size": 16, "hidden": (8,)})
    tanh.actor.net = MLP(OBS, 2 * ACT, (8,), activation=nn.Tanh)
    tanh.optimizers["actor"] = torch.optim.Adam(tanh.actor.parameters())
    run_updates(tanh, data, 1, True)
    assert tanh.__dict__["_fused_cache"][1] is None
    frozen = BC(OBS, ACT, -1.0, 1.0, {"batch_size": 16, "hidden": (8,)})
    run_updates(frozen, data, 1, True)
    frozen.actor.net.net[0].requires_grad_(False)
    w = frozen.actor.net.net[0].weight.clone()
    run_updates(frozen, data, 1, True)  # frozen layer: the autograd path, which leaves it alone
    assert torch.equal(frozen.actor.net.net[0].weight, w)


def test_set_compiled_switches_the_compiled_losses_off_and_on():
    fused_kernels.set_compiled(False)
    try:
        assert not fused_kernels.compiled_enabled()
    finally:
        fused_kernels.set_compiled(True)
    assert fused_kernels.compiled_enabled() == fused_kernels.available()


def test_set_fused_switches_the_path_off_and_on(data):
    assert fused_enabled()
    set_fused(False)
    try:
        agent = BC(OBS, ACT, -1.0, 1.0, {"batch_size": 16, "hidden": (8,)})
        run_updates(agent, data, 1, True)
        assert "_fused_cache" not in agent.__dict__
    finally:
        set_fused(True)
    with fused_disabled():
        assert not fused_enabled()
    assert fused_enabled()


@pytest.mark.parametrize("cls", [BC, IQL])
def test_fused_training_is_seeded_and_resumes_bit_for_bit(data, cls, tmp_path, compiled):
    cfg = {"batch_size": 32, "hidden": (16, 16), "seed": 3}
    a, b = cls(OBS, ACT, -1.0, 1.0, cfg), cls(OBS, ACT, -1.0, 1.0, cfg)
    a.fit(data, 6, show_progress=False, log_every=2)
    b.fit(data, 3, show_progress=False, log_every=2)
    b.save(tmp_path / "agent.pt")
    c = cls.load(tmp_path / "agent.pt")
    c.fit(data, 3, show_progress=False, log_every=2)
    for (n, p), q in zip(a.named_parameters(), c.parameters()):
        assert torch.equal(p, q), n


def test_iql_fallback_for_layer_norm_critics_and_a_replaced_network(data):
    agent = IQL(OBS, ACT, -1.0, 1.0, {"batch_size": 16, "hidden": (8,)})
    assert agent._iql_kernels() is not None
    agent.q.q1 = MLP(OBS + ACT, 1, (8,), layer_norm=True)
    agent.target_q = copy.deepcopy(agent.q).requires_grad_(False)
    agent.optimizers["q"] = torch.optim.Adam(agent.q.parameters())
    assert agent._iql_kernels() is None  # the cache follows the modules in place
    run_updates(agent, data, 1, True)
    assert all(p.grad is not None for p in agent.q.q1.parameters())


@pytest.mark.parametrize("cls", [BC, IQL])
def test_bf16_kernels_round_like_autocast(data, cls, compiled):
    base = cls(OBS, ACT, -1.0, 1.0, {"batch_size": 32, "hidden": (32, 32), "mixed_precision": "bf16"})
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    ga, gb = grads_after_one_update(a, data, True), grads_after_one_update(b, data, False)
    kernels = a.__dict__["_fused_cache"][1]
    assert kernels and all(k.dtype == torch.bfloat16 for k in kernels.values())
    for k in gb:  # measured equal; the bound allows bf16 kernels that accumulate in another order
        assert rel_err(ga[k], gb[k]) < 2e-2, k
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in a.parameters() if p.grad is not None)


def test_bf16_kernel_gradients_are_close_to_float32():
    torch.manual_seed(2)
    mlp = MLP(5, 4, (64, 64))
    x, g = torch.randn(128, 5), torch.randn(128, 4)
    k32, k16 = ReluMLPKernel(mlp), ReluMLPKernel(mlp, dtype=torch.bfloat16)
    out32 = k32.forward(x, keep=True).clone()
    k32.backward(g)
    g32 = [p.grad.clone() for p in mlp.parameters()]
    out16 = k16.forward(x, keep=True)
    k16.backward(g)
    assert out16.dtype == torch.float32 and rel_err(out16, out32) < 3e-2
    # bf16 rounding through cancelling dot products: up to ~4e-2 in norm measured (a missing ReLU mask is O(1))
    for p, ref in zip(mlp.parameters(), g32):
        assert float((p.grad - ref).norm() / ref.norm()) < 1e-1
    with pytest.raises(ValueError, match="dtype"):
        ReluMLPKernel(mlp, dtype=torch.float16)


def test_bf16_fused_onednn_linear_equals_the_addmm_path(monkeypatch):
    from ohio_layers.rl import fused
    if not fused._dnn_linear_available():
        pytest.skip("oneDNN's fused linear is not available in this torch build (the addmm path runs)")
    torch.manual_seed(3)
    mlp = MLP(5, 4, (64, 64))
    x, g = torch.randn(128, 5), torch.randn(128, 4)
    results = []
    for dnn in (True, False):  # False: addmm + relu_, the path of builds without oneDNN
        monkeypatch.setattr(fused, "_DNN_OK", [dnn])
        kernel = ReluMLPKernel(mlp, dtype=torch.bfloat16)
        out = kernel.forward(x, keep=True).clone()
        dx = kernel.backward(g, input_grad=True)
        results.append([out, dx] + [p.grad.clone() for p in mlp.parameters()])
    for a, b in zip(*results):  # the same rounded values, not only close ones
        assert torch.equal(a, b)


def test_a_replaced_parameter_rebuilds_the_kernels(data):
    agent = BC(OBS, ACT, -1.0, 1.0, {"batch_size": 16, "hidden": (8,)})
    run_updates(agent, data, 1, True)
    old = agent.__dict__["_fused_cache"][1]["actor"]
    layer = agent.actor.net.net[0]
    layer.weight = nn.Parameter(torch.zeros_like(layer.weight))
    agent.optimizers["actor"] = torch.optim.Adam(agent.actor.parameters())
    run_updates(agent, data, 1, True)
    new = agent.__dict__["_fused_cache"][1]["actor"]
    assert new is not old and new.params[0][0] is layer.weight and layer.weight.grad is not None


# ------------------------------------------------------------------ the cache against run-time changes
def _batch(agent, n, seed):
    """``n`` rows of ``data`` drawn with ``seed`` (the same batch for both paths)."""
    cols = agent.make_sampler(_batch.data).columns
    idx = torch.randint(0, len(next(iter(cols.values()))), (n,), generator=torch.Generator().manual_seed(seed))
    return {k: v[idx] for k, v in cols.items()}


def assert_fused_equals_autograd_after(agent, mutate, sizes=(32, 32), batch_fn=None):
    """Apply ``mutate`` to ``agent`` (which holds a fused cache) and to a copy of it, then update both on the
    same batches, ``agent`` fused and the copy through autograd: metrics and parameters agree to ~1e-6."""
    ref = copy.deepcopy(agent)
    ref.__dict__.pop("_fused_cache", None)
    for a in (agent, ref):
        torch.manual_seed(7)
        mutate(a)
    for i, n in enumerate(sizes):
        batch = _batch(agent, n, i) if batch_fn is None else batch_fn(agent, n, i)
        ma = agent.update_tensors(batch)
        with fused_disabled():
            mb = ref.update_tensors(batch)
        assert ma.keys() == mb.keys()
        for k in mb:
            assert abs(float(ma[k]) - float(mb[k])) <= 1e-6 * max(1.0, abs(float(mb[k]))), (k, i)
    for (n, p), q in zip(agent.named_parameters(), ref.parameters()):
        assert rel_err(p.detach(), q.detach()) < 1e-6, n


def _trained(cls, data, **cfg):
    """An agent after one fused update (its kernels cached)."""
    _batch.data = data
    agent = cls(OBS, ACT, -1.0, 1.0, {"batch_size": 32, "hidden": (16, 16), **cfg})
    agent.update_tensors(_batch(agent, 32, 99))
    assert agent.__dict__["_fused_cache"][1] is not None
    return agent


def _reset_last_actor_layer(agent):
    seq = agent.actor.net.net
    seq[-1] = nn.Linear(seq[-1].in_features, seq[-1].out_features)  # a "reset the head" intervention
    agent.optimizers["actor"] = type(agent.optimizers["actor"])(agent.actor.parameters(), lr=1e-3)


def _replace_critic_hidden_layer(agent):
    agent.q.q1.net[2] = nn.Linear(16, 16)
    agent.optimizers["q"] = type(agent.optimizers["q"])(agent.q.parameters(), lr=3e-4)


def _tanh_activation(agent):
    agent.actor.net.net[1] = nn.Tanh()


def _new_sequential(agent):
    agent.actor.net.net = copy.deepcopy(agent.actor.net.net)
    agent.optimizers["actor"] = type(agent.optimizers["actor"])(agent.actor.parameters(), lr=1e-3)


@pytest.mark.parametrize("cls", [BC, IQL])
@pytest.mark.parametrize("mutate", [_reset_last_actor_layer, _tanh_activation, _new_sequential])
def test_a_layer_replaced_inside_an_mlp_rebuilds_the_kernels(data, cls, mutate):
    # the kernels held the old Linear modules: their parameters were never replaced, so the per-parameter
    # check passed and the update silently trained the detached old layer
    assert_fused_equals_autograd_after(_trained(cls, data), mutate)


def test_a_critic_layer_replaced_rebuilds_the_kernels(data):
    assert_fused_equals_autograd_after(_trained(IQL, data), _replace_critic_hidden_layer)


def _grad_hook(agent):
    for p in agent.actor.parameters():
        p.register_hook(lambda g: g.clamp(-1e-3, 1e-3))  # per-element gradient clipping


def _forward_hook(agent):
    agent.actor.net.register_forward_hook(lambda m, i, o: o * 0.5)


def _pre_hook_on_linear(agent):
    agent.actor.net.net[0].register_forward_pre_hook(lambda m, i: (i[0] * 2.0,))


def _normalizer_hook(agent):
    agent.actor.normalizer.register_forward_hook(lambda m, i, o: o.clamp(-0.5, 0.5))


def _hooked_normalizer_swapped_in(agent):
    # a module assigned after the kernels were cached (not inside an MLP) must still have its hooks seen
    fresh = copy.deepcopy(agent.actor.normalizer)
    fresh.register_forward_hook(lambda m, i, o: o.clamp(-0.5, 0.5))
    agent.actor.normalizer = fresh


def _spectral_norm(agent):
    nn.utils.spectral_norm(agent.actor.net.net[0])  # old-style: a forward pre-hook recomputes .weight


@pytest.mark.parametrize("cls", [BC, IQL])
@pytest.mark.parametrize("mutate", [_grad_hook, _forward_hook, _pre_hook_on_linear, _normalizer_hook,
                                    _hooked_normalizer_swapped_in, _spectral_norm])
def test_hooks_send_the_update_to_autograd(data, cls, mutate):
    # the kernels and closed-form gradients bypass module and tensor hooks, which autograd runs
    assert_fused_equals_autograd_after(_trained(cls, data), mutate)


def test_a_global_module_hook_sends_the_update_to_autograd(data):
    agent = _trained(BC, data)
    handle = nn.modules.module.register_module_forward_hook(
        lambda m, i, o: o * 0.5 if isinstance(m, nn.Linear) else None)
    try:
        assert_fused_equals_autograd_after(agent, lambda a: None)
    finally:
        handle.remove()


def _bounds_via_data(agent):
    agent.actor.scaler.low.data.copy_(torch.full((ACT,), -2.0))  # .data: no version bump
    if hasattr(agent, "q"):
        agent.q.scaler.low.data.copy_(torch.full((ACT,), -2.0))
        agent.target_q.scaler.low.data.copy_(torch.full((ACT,), -2.0))


def _bounds_via_numpy(agent):
    for m in agent.modules():
        if type(m).__name__ == "ActionScaler":
            m.high.numpy()[:] = 3.0  # numpy writes bump no version either


def _bounds_via_copy(agent):
    with torch.no_grad():
        for m in agent.modules():
            if type(m).__name__ == "ActionScaler":
                m.high.copy_(torch.full((ACT,), 3.0))


@pytest.mark.parametrize("cls", [BC, IQL])
@pytest.mark.parametrize("mutate", [_bounds_via_data, _bounds_via_numpy, _bounds_via_copy])
def test_action_bounds_changed_in_place_are_seen(data, cls, mutate):
    # the center/scale cache was keyed by (data_ptr, _version), blind to writes that bump no version
    assert_fused_equals_autograd_after(_trained(cls, data), mutate)


def _noncontiguous(agent, n, seed):
    return {k: (torch.stack([v, v], -1)[..., 0]) for k, v in _batch(agent, n, seed).items()}


def _obs_stats(agent):
    agent.set_obs_stats(torch.rand(OBS) - 0.5, torch.rand(OBS) + 0.5)


def _run_time_config(agent):
    c = agent.config
    c.grad_clip, c.discount = 0.05, 0.5
    if isinstance(agent, IQL):
        c.expectile, c.temperature, c.max_weight = 0.9, 10.0, 2.0


def _load_state_in_place(agent):
    other = type(agent)(OBS, ACT, -2.0, 2.0, {"batch_size": 32, "hidden": (16, 16), "seed": 5})
    other.set_obs_stats(torch.rand(OBS), torch.rand(OBS) + 0.5)
    agent.load_state_dict(other.state_dict())


def _double_round_trip(agent):
    agent.double()
    agent.float()


def _freeze_first_layer(agent):
    agent.actor.net.net[0].requires_grad_(False)


def _new_target_critics(agent):
    if isinstance(agent, IQL):
        agent.target_q = copy.deepcopy(agent.q).requires_grad_(False)


@pytest.mark.parametrize("cls", [BC, IQL])
@pytest.mark.parametrize("mutate,sizes,batch_fn", [
    (lambda a: None, (1, 1), None), (lambda a: None, (17, 64, 17), None), (lambda a: None, (32, 32), _noncontiguous),
    (_obs_stats, (32,), None), (_run_time_config, (32,), None), (_load_state_in_place, (32,), None),
    (_double_round_trip, (32,), None), (_freeze_first_layer, (32,), None), (_new_target_critics, (32,), None)])
def test_fused_update_equals_autograd_after_run_time_changes(data, cls, mutate, sizes, batch_fn):
    # guards the cached kernels and buffers: batch size 1 and changing, strided batches, statistics, bounds,
    # config fields and weights set after the first update, a dtype round trip, frozen layers, new targets
    assert_fused_equals_autograd_after(_trained(cls, data), mutate, sizes, batch_fn)


def _new_optimizers(agent):
    for name, opt in list(agent.optimizers.items()):
        agent.optimizers[name] = type(opt)([p for g in opt.param_groups for p in g["params"]], lr=2e-3)


def _unfreeze_after_a_frozen_update(agent):
    layer = agent.actor.net.net[0]
    layer.requires_grad_(False)
    with fused_disabled():
        agent.update_tensors(_batch(agent, 32, 50))
    layer.requires_grad_(True)


def _bf16_and_back(agent):
    agent.config.mixed_precision = "bf16"
    agent.update_tensors(_batch(agent, 32, 51))  # fused in bf16 on one, autograd under autocast on the other
    agent.config.mixed_precision = None


@pytest.mark.parametrize("cls", [BC, IQL])
@pytest.mark.parametrize("mutate", [_new_optimizers, _unfreeze_after_a_frozen_update])
def test_fused_update_equals_autograd_after_optimizer_and_freezing_changes(data, cls, mutate):
    assert_fused_equals_autograd_after(_trained(cls, data), mutate)


@pytest.mark.parametrize("cls", [BC, IQL])
def test_switching_bf16_off_again_rebuilds_float32_kernels(data, cls):
    agent = _trained(cls, data)
    assert_fused_equals_autograd_after(agent, _bf16_and_back)  # to 1e-6: not bf16 arithmetic
    assert all(k.dtype == torch.float32 for k in agent.__dict__["_fused_cache"][1].values())


@pytest.mark.parametrize("cls", [BC, IQL])
def test_returned_metrics_are_not_overwritten_by_later_updates(data, cls):
    agent = _trained(cls, data)
    first = agent.update_tensors(_batch(agent, 32, 0))
    kept = {k: v.clone() for k, v in first.items()}
    for i, n in enumerate((32, 64, 32)):  # same and other row counts: the kernels' buffers are reused
        agent.update_tensors(_batch(agent, n, i + 1))
    for k in kept:
        assert torch.equal(first[k], kept[k]), k


@pytest.mark.parametrize("cls", [BC, IQL])
def test_a_float64_batch_fails_on_both_paths(data, cls):
    # the kernels cast the inputs to float32 and returned a float64 loss where autograd raises
    agent = _trained(cls, data)
    batch = {k: v.double() for k, v in _batch(agent, 8, 0).items()}
    with pytest.raises(RuntimeError, match="dtype"):
        agent.update_tensors(batch)
    with fused_disabled(), pytest.raises(RuntimeError, match="dtype"):
        agent.update_tensors(batch)


def test_a_computed_weight_is_not_run_by_a_kernel():
    mlp = MLP(3, 2, (4,))
    nn.utils.spectral_norm(mlp.net[0])  # .weight: a plain tensor recomputed from weight_orig
    assert not ReluMLPKernel.supports(mlp)


@pytest.mark.parametrize("cls", [BC, IQL])
def test_a_frozen_log_std_vector_sends_the_update_to_autograd(data, cls):
    agent = _trained(cls, data, state_dependent_std=False)
    before = agent.actor.log_std.detach().clone()
    assert_fused_equals_autograd_after(agent, lambda a: a.actor.log_std.requires_grad_(False))
    assert torch.equal(agent.actor.log_std.detach(), before)  # frozen: left alone


def test_without_numba_the_fused_updates_run_the_torch_losses_bit_for_bit(data, tmp_path, monkeypatch):
    import subprocess
    import sys
    from pathlib import Path

    script = f"""
import sys
sys.modules["numba"] = None  # as if the fastqp extra were not installed
import torch
from helpers import random_transitions
from ohio_layers.rl import IQL, fused_kernels
assert not fused_kernels.available() and not fused_kernels.compiled_enabled()
agent = IQL({OBS}, {ACT}, -1.0, 1.0, {{"batch_size": 32, "hidden": (16, 16), "seed": 5}})
agent.fit(random_transitions(600, {OBS}, {ACT}, 0, episodes=6, terminal_rate=0.02, action_bound=0.99), 4,
          show_progress=False)
assert agent.__dict__["_fused_cache"][1] is not None
torch.save(agent.state_dict(), sys.argv[1])
"""
    root = Path(__file__).resolve().parents[2]
    env = {**__import__("os").environ, "PYTHONPATH": f"{root}:{root / 'tests'}"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "sd.pt")], check=True, env=env, cwd=root)
    monkeypatch.setattr(fused_kernels, "_ENABLED", [False])
    agent = IQL(OBS, ACT, -1.0, 1.0, {"batch_size": 32, "hidden": (16, 16), "seed": 5})
    agent.fit(data, 4, show_progress=False)
    ref = torch.load(tmp_path / "sd.pt")
    for k, v in agent.state_dict().items():
        assert torch.equal(v, ref[k]), k


def test_compiled_value_loss_propagates_a_nan_of_either_target_critic_like_torch_minimum():
    if not fused_kernels.available():
        pytest.skip("numba is not installed (extra fastqp)")
    import numpy as np

    q1 = np.array([[1.0], [np.nan], [3.0]], dtype=np.float32)
    q2 = np.array([[np.nan], [2.0], [0.5]], dtype=np.float32)
    v = np.zeros((3, 1), dtype=np.float32)
    q_target, grad = np.empty(3, dtype=np.float32), np.empty((3, 1), dtype=np.float32)
    loss = fused_kernels.expectile_value_grad(q1, q2, v, 0.7, q_target, grad)
    expected = torch.minimum(torch.from_numpy(q1), torch.from_numpy(q2)).squeeze(1).numpy()
    np.testing.assert_array_equal(q_target, expected)  # [nan, nan, 0.5]: a diverged critic is not hidden
    assert np.isnan(loss) and np.isnan(grad[:2]).all() and np.isfinite(grad[2]).all()
