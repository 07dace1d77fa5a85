"""Autograd-free updates of plain ReLU MLPs: hand-written forward/backward and closed-form loss gradients.

At the offline agents' sizes (2x256 MLPs, batch 256, one CPU thread) an update is a few ms, and
autograd's bookkeeping (graph nodes, saved tensors, the engine's scheduling, gradient
accumulation, the elementwise ops of the losses and their backward) costs about as much as the
GEMMs besides the matrix products themselves. For networks that are plain
``Linear -> ReLU -> ... -> Linear`` MLPs this module does the same arithmetic directly:

* :class:`ReluMLPKernel`: forward with ``torch.addmm`` into preallocated buffers (ReLU in place; in
  bfloat16 oneDNN's linear with the bias and ReLU fused, same values) and backward with ``torch.mm``
  into the parameters' ``.grad`` (``dW = g^T h``, ``db = sum g``, ``g <- (g W) * 1(h > 0)``), so the
  agents' optimizers step as usual;
* closed-form gradients of the losses with respect to the networks' outputs
  (:func:`expectile_loss_grad`, :func:`squared_error_grad`, :func:`gaussian_nll_grad`); with numba
  installed (extra ``fastqp``) the actor's likelihood and IQL's value, weight/target and critic
  terms run as compiled loops instead (:mod:`~ohio_layers.rl.fused_kernels`: equal to float32
  rounding, not bit for bit; ``fused_kernels.set_compiled(False)`` or no numba: the torch ops);
* :func:`step_optimizer`: :class:`~ohio_layers.rl.optim.LeanAdam`'s step without the hook wrapper
  ``torch.optim`` puts around every ``step`` (taken only when no step hooks are registered).

The BC and IQL updates use it on CPU when every network is a plain ReLU MLP (the default ones)
and fall back to autograd otherwise (another device, layer norm, another activation or network
class, frozen parameters, a module or gradient hook: :func:`hooks_present`). In float32 the
arithmetic is autograd's, the compiled loss loops' to float32 rounding (``tests/rl/test_fused.py``
checks that both paths give the same gradients and updates); with ``mixed_precision="bf16"`` the
kernels compute in bfloat16, rounding where ``torch.autocast`` does (the gradients match the autocast
path's to bfloat16 rounding). :func:`set_fused` /
:func:`fused_disabled` switch the fused path off (e.g. to compare).

Buffers are reused (float32): a kernel's forward output is valid until its next forward with the
same row count and ``keep`` flag; callers inside this package consume it before that.
"""
from __future__ import annotations

import contextlib
import math
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn.modules import module as _module_hooks

from .networks import MLP, ActionScaler, ObsNormalizer, TanhGaussianActor, _log1m_tanh_sq
from . import fused_kernels
from .optim import LeanAdam

__all__ = ["ReluMLPKernel", "set_fused", "fused_enabled", "fused_disabled", "expectile_loss_grad",
           "squared_error_grad", "gaussian_nll_grad", "iql_value_grad", "iql_weights_and_targets",
           "twin_squared_error_grad", "step_optimizer",
           "actor_nll_backward", "actor_supported", "hooks_present",
           "float32_inputs"]

_ENABLED = [True]
_LOG_2PI = math.log(2 * math.pi)


def set_fused(enabled: bool) -> None:
    """Use (``True``, the default) or never use (``False``) the fused updates of BC and IQL."""
    _ENABLED[0] = bool(enabled)


def fused_enabled() -> bool:
    """Whether the fused updates may be used (see :func:`set_fused`)."""
    return _ENABLED[0]


@contextlib.contextmanager
def fused_disabled() -> Iterator[None]:
    """Block in which the BC and IQL updates take the autograd path."""
    old = _ENABLED[0]
    _ENABLED[0] = False
    try:
        yield
    finally:
        _ENABLED[0] = old


def relu_mlp_layers(mlp: nn.Module, trainable: bool = True) -> Optional[List[nn.Linear]]:
    """The linear layers of ``mlp`` if it is an :class:`MLP` of the form ``Linear (ReLU Linear)*`` with
    float32 CPU parameters (all requiring gradients if ``trainable``), else ``None``."""
    if type(mlp) is not MLP:
        return None
    mods = list(mlp.net)
    if len(mods) % 2 != 1:
        return None
    linears = mods[0::2]
    if any(type(m) is not nn.Linear or m.bias is None for m in linears):
        return None
    if any(type(m) is not nn.ReLU for m in mods[1::2]):
        return None
    for lin in linears:
        for p in (lin.weight, lin.bias):
            if not isinstance(p, nn.Parameter):  # e.g. a weight computed by a hook (old-style spectral_norm)
                return None
            if p.device.type != "cpu" or p.dtype != torch.float32 or (trainable and not p.requires_grad):
                return None
    return linears


def hooks_present(modules: Sequence[nn.Module], params: Sequence[Tensor]) -> bool:
    """Whether a module hook (global, or on one of ``modules``) or a gradient hook on one of ``params`` is
    registered: the kernels and closed-form gradients would bypass it, autograd runs it."""
    g = _module_hooks
    if (g._global_forward_hooks or g._global_forward_pre_hooks or g._global_backward_hooks
            or g._global_backward_pre_hooks):
        return True
    for m in modules:
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
            return True
    for p in params:
        if p._backward_hooks or p._post_accumulate_grad_hooks:
            return True
    return False


def float32_inputs(*tensors: Tensor) -> bool:
    """Whether every tensor is float32 on the CPU: the kernels would cast others silently, where the autograd
    path raises (a float64 batch for a float32 network), so the update takes that path."""
    return all(t.dtype is torch.float32 and t.is_cpu for t in tensors)


_NO_SCALARS: List[Optional[float]] = []
_DNN_LINEAR = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
_DNN_OK: List[Optional[bool]] = [None]


def _dnn_linear_available() -> bool:
    """Whether oneDNN's fused linear (``torch.ops.mkldnn._linear_pointwise``, the op ``torch.compile`` emits for
    CPU linear layers) runs here in bfloat16 and gives addmm's values (checked once; else addmm + relu_)."""
    if _DNN_OK[0] is None:
        ok = False
        if _DNN_LINEAR is not None and torch.backends.mkldnn.is_available():
            try:
                gen = torch.Generator().manual_seed(0)
                x, w, b = (torch.randn(s, generator=gen).to(torch.bfloat16) for s in ((5, 9), (3, 9), (3,)))
                ref = torch.addmm(b, x, w.t()).relu_()
                ok = bool(torch.equal(_DNN_LINEAR(x, w, b, "relu", _NO_SCALARS, ""), ref))
            except (RuntimeError, NotImplementedError):
                ok = False
        _DNN_OK[0] = ok
    return bool(_DNN_OK[0])


def _grad_of(p: Tensor) -> Tensor:
    """``p.grad``, created (uninitialised) when missing; it is overwritten, not accumulated into."""
    if p.grad is None:
        p.grad = torch.empty_like(p)
    return p.grad


class ReluMLPKernel:
    """Forward and backward of a plain ReLU :class:`~ohio_layers.rl.networks.MLP` without autograd.

    Args:
        mlp: the network; its parameters are used (and their ``.grad`` written) in place.
        trainable: whether :meth:`backward` will be used (then every parameter must require gradients).
        dtype: ``torch.float32`` (exact: the autograd arithmetic) or ``torch.bfloat16`` (mixed
            precision: inputs, weights, activations and their gradients in bfloat16, as under
            ``torch.autocast``; the output and the parameters' ``.grad`` are float32).
    Raises:
        ValueError: ``mlp`` is not a plain ReLU MLP with float32 CPU parameters (trainable ones if
            ``trainable``; check with :meth:`supports`), or another ``dtype``.
    """

    def __init__(self, mlp: nn.Module, trainable: bool = True, dtype: torch.dtype = torch.float32) -> None:
        linears = relu_mlp_layers(mlp, trainable)
        if linears is None:
            raise ValueError(f"ReluMLPKernel needs a plain Linear-ReLU-...-Linear MLP with float32 CPU parameters"
                             f"{' that require gradients' if trainable else ''}, got {mlp!r}")
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"dtype must be torch.float32 or torch.bfloat16, got {dtype}")
        self.module, self.dtype = mlp, dtype
        self.seq = mlp.net
        self.mods = tuple(mlp.net._modules.values())  # the layers and activations the kernel stands for
        self.linears = linears
        self.params: List[Tuple[Tensor, Tensor]] = [(lin.weight, lin.bias) for lin in linears]
        self._acts: Dict[Tuple[int, bool], List[Tensor]] = {}
        self._grads: Dict[int, List[Tensor]] = {}
        self._kept: Optional[Tuple[Tensor, List[Tensor], List[Tuple[Tensor, Tensor]]]] = None
        self._cast: Optional[List[Tuple[Tensor, Tensor]]] = None  # bf16 copies of the parameters
        self._cast_flat: Tuple[List[Tensor], List[Tensor]] = ([], [])  # (the copies, the parameters), flattened
        self._wgrad: Optional[List[Tensor]] = None  # bf16 gradients [dW0, db0, dW1, ...] before their float32 copy

    @staticmethod
    def supports(mlp: nn.Module, trainable: bool = True) -> bool:
        """Whether ``mlp`` can be run by a kernel."""
        return relu_mlp_layers(mlp, trainable) is not None

    def current(self) -> bool:
        """Whether the MLP still holds the modules (its ``Sequential``, every layer and activation) and the
        layers the parameters the kernel was built with: none was replaced (e.g. a layer reset by assigning
        a new ``nn.Linear``, which leaves the old layer's parameters in place and the kernel on them)."""
        if self.module._modules.get("net") is not self.seq:
            return False
        mods = self.seq._modules
        if len(mods) != len(self.mods) or any(m is not k for m, k in zip(mods.values(), self.mods)):
            return False
        for lin, (w, b) in zip(self.linears, self.params):
            ps = lin._parameters
            if ps.get("weight") is not w or ps.get("bias") is not b:
                return False
        return True

    def _buffers(self, rows: int, keep: bool) -> List[Tensor]:
        bufs = self._acts.get((rows, keep))
        if bufs is None:
            bufs = [torch.empty(rows, w.shape[0], dtype=self.dtype) for w, _ in self.params]
            self._acts[(rows, keep)] = bufs
        return bufs

    def _weights(self) -> List[Tuple[Tensor, Tensor]]:
        """The parameters in the compute dtype (bf16 copies are made at every forward: the optimizer
        changes the weights in place without a version bump, so no cache could tell)."""
        if self.dtype == torch.float32:
            return self.params
        if self._cast is None:
            self._cast = [(torch.empty_like(w, dtype=self.dtype), torch.empty_like(b, dtype=self.dtype))
                          for w, b in self.params]
            self._cast_flat = ([t for pair in self._cast for t in pair], [t for pair in self.params for t in pair])
        torch._foreach_copy_(*self._cast_flat)  # one call for every layer's weight and bias
        return self._cast

    @torch.no_grad()
    def forward(self, x: Tensor, keep: bool = False) -> Tensor:
        """Output ``(B, out)`` float32 of ``x (B, in)`` (a reused buffer in float32 mode); ``keep`` saves the
        activations for :meth:`backward`."""
        weights = self._weights()
        x = x.to(self.dtype)
        last = len(weights) - 1
        if self.dtype != torch.float32 and _dnn_linear_available():
            # bfloat16: oneDNN's linear with the bias and the ReLU fused into the matrix product (one call
            # per layer instead of addmm + relu_, the same rounded values: tests/rl/test_fused.py)
            acts = []
            h = x
            for i, (w, b) in enumerate(weights):
                h = _DNN_LINEAR(h, w, b, "relu" if i < last else "none", _NO_SCALARS, "")
                acts.append(h)
        else:
            acts = self._buffers(x.shape[0], keep)
            h = x
            for i, (w, b) in enumerate(weights):
                out = torch.addmm(b, h, w.t(), out=acts[i])
                if i < last:
                    out.relu_()
                h = out
        if keep:
            self._kept = (x, acts, weights)
        return h.float()

    @torch.no_grad()
    def backward(self, grad_out: Tensor, input_grad: bool = False) -> Optional[Tensor]:
        """Write the parameters' ``.grad`` for the loss gradient ``grad_out (B, out)`` at the last kept forward.

        Returns the gradient with respect to the input ``(B, in)`` (float32) if ``input_grad``, else
        ``None``. The gradients overwrite ``.grad`` (as after ``zero_grad`` and one backward pass).
        """
        if self._kept is None:
            raise RuntimeError("ReluMLPKernel.backward needs a forward(x, keep=True) first")
        x, acts, weights = self._kept
        rows = x.shape[0]
        gbufs = self._grads.get(rows)
        if gbufs is None:
            gbufs = [torch.empty(rows, w.shape[1], dtype=self.dtype) for w, _ in self.params]
            self._grads[rows] = gbufs
        exact = self.dtype == torch.float32
        g = grad_out.to(self.dtype)
        out: Optional[Tensor] = None
        if not exact and self._wgrad is None:  # bf16 gradients, copied to the float32 .grad in one call at the end
            self._wgrad = [t for w, b in self.params for t in (torch.empty_like(w, dtype=self.dtype),
                                                                  torch.empty_like(b, dtype=self.dtype))]
        for i in range(len(self.params) - 1, -1, -1):
            (w, b), w_c = self.params[i], weights[i][0]
            inp = x if i == 0 else acts[i - 1]
            if exact:
                torch.mm(g.t(), inp, out=_grad_of(w))
                torch.sum(g, 0, out=_grad_of(b))
            else:
                torch.mm(g.t(), inp, out=self._wgrad[2 * i])
                torch.sum(g, 0, out=self._wgrad[2 * i + 1])
            if i > 0:
                gi = torch.mm(g, w_c, out=gbufs[i])
                g = torch.ops.aten.threshold_backward.grad_input(gi, inp, 0, grad_input=gi)
            elif input_grad:
                out = torch.mm(g, w_c).float()
        if not exact:
            torch._foreach_copy_([_grad_of(p) for pair in self.params for p in pair], self._wgrad)
        return out


# ------------------------------------------------------------------------------------ inputs
# ------------------------------------------------------------------------------------ loss gradients
def expectile_loss_grad(target: Tensor, pred: Tensor, expectile: float) -> Tuple[Tensor, Tensor]:
    """``(loss, d loss / d pred (B,))`` of ``mean |tau - 1(u < 0)| u^2`` with ``u = target - pred (B,)``."""
    diff = target - pred
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    wd = weight * diff
    loss = (wd * diff).mean()
    return loss, wd.mul_(-2.0 / diff.shape[0])


def squared_error_grad(pred: Tensor, target: Tensor) -> Tuple[Tensor, Tensor]:
    """``(loss, d loss / d pred (B,))`` of ``mean (pred - target)^2`` over ``pred, target (B,)``."""
    diff = pred - target
    return diff.pow(2).mean(), diff.mul_(2.0 / diff.shape[0])


def iql_value_grad(q1: Tensor, q2: Tensor, v: Tensor, expectile: float) -> Tuple[Tensor, Tensor, Tensor]:
    """IQL's value step: ``(loss, q_target (B,), d loss / d v (B, 1))`` of :func:`expectile_loss_grad` towards
    ``min(q1, q2)``; ``q1, q2, v`` are ``(B, 1)`` network outputs. One compiled loop when
    :func:`~ohio_layers.rl.fused_kernels.compiled_enabled`, else torch ops."""
    if fused_kernels.compiled_enabled():
        b = v.shape[0]
        q_target, grad = v.new_empty(b), v.new_empty(b, 1)
        loss = fused_kernels.expectile_value_grad(q1.numpy(), q2.numpy(), v.numpy(), expectile, q_target.numpy(),
                                                  grad.numpy())
        return torch.tensor(loss), q_target, grad
    q_target = torch.minimum(q1, q2).squeeze(1)
    loss, grad = expectile_loss_grad(q_target, v.squeeze(1), expectile)
    return loss, q_target, grad.unsqueeze(1)


def iql_weights_and_targets(q_target: Tensor, values: Tensor, batch: Mapping[str, Tensor], temperature: float,
                            max_weight: float) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(weights (B,), td_target (B,), mean advantage, mean weight)``: the advantage weights
    ``min(exp(beta (q_target - V(s))), w_max)`` and ``r + gamma (1 - d) V(s')`` from ``values (2B, 1)`` =
    ``[V(s); V(s')]`` and the batch's ``rewards, discounts, terminals (B,)``."""
    b = q_target.shape[0]
    if fused_kernels.compiled_enabled():
        weights, target = q_target.new_empty(b), q_target.new_empty(b)
        adv, weight = fused_kernels.iql_weights_and_targets(
            q_target.numpy(), values.numpy(), batch["rewards"].detach().numpy(), batch["discounts"].detach().numpy(),
            batch["terminals"].detach().numpy(), temperature, max_weight, weights.numpy(), target.numpy())
        return weights, target, torch.tensor(adv), torch.tensor(weight)
    values = values.squeeze(1)
    adv = q_target - values[:b]
    weights = torch.exp(temperature * adv).clamp_(max=max_weight)
    target = batch["rewards"] + batch["discounts"] * (1.0 - batch["terminals"]) * values[b:]
    return weights, target, adv.mean(), weights.mean()


def twin_squared_error_grad(p1: Tensor, p2: Tensor, target: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """``(loss, g1, g2)``: the sum of both critics' :func:`squared_error_grad` losses and their gradients
    ``(B, 1)``, for outputs ``p1, p2 (B, 1)`` towards ``target (B,)`` (compiled loop or torch ops)."""
    if fused_kernels.compiled_enabled():
        g1, g2 = p1.new_empty(p1.shape), p2.new_empty(p2.shape)
        loss = fused_kernels.twin_squared_error_grad(p1.numpy(), p2.numpy(), target.numpy(), g1.numpy(), g2.numpy())
        return torch.tensor(loss), g1, g2
    l1, g1 = squared_error_grad(p1.squeeze(1), target)
    l2, g2 = squared_error_grad(p2.squeeze(1), target)
    return l1 + l2, g1.unsqueeze(1), g2.unsqueeze(1)


def gaussian_nll_grad(mean: Tensor, log_std_raw: Tensor, x: Tensor, log_std_min: float, log_std_max: float,
                      const: Tensor, weights: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """Weighted negative log-likelihood of pre-tanh ``x`` under ``N(mean, exp(clamp(log_std_raw))^2)``.

    ``loss = -mean_b w_b [sum_j (-0.5 ((x - mean) / sigma)^2 - log sigma - 0.5 log 2 pi) - const_b]``,
    the loss of :meth:`TanhGaussianActor.log_prob` (``const (B,)``: its terms free of the network,
    ``sum log(1 - tanh(x)^2) + sum log(scale)``).

    Args:
        mean, log_std_raw: ``(B, da)`` (``log_std_raw`` before the clamp; may be an expanded vector).
        x: pre-tanh dataset actions ``(B, da)``.
        weights: ``(B,)`` or ``None`` (all ones).
    Returns:
        ``(loss, d loss / d mean (B, da), d loss / d log_std_raw (B, da))`` (zero where the clamp is active).
    """
    b = mean.shape[0]
    log_std = log_std_raw.clamp(log_std_min, log_std_max)
    inv_std = torch.exp(-log_std)
    z = (x - mean) * inv_std
    z2 = z * z
    logp = (-0.5 * z2 - log_std).sum(-1) - (0.5 * _LOG_2PI * mean.shape[1]) - const
    scale = (-1.0 / b) if weights is None else weights.unsqueeze(-1) * (-1.0 / b)
    loss = -(logp.mean() if weights is None else (weights * logp).mean())
    g_mean = (z * inv_std).mul_(scale)
    inside = (log_std_raw >= log_std_min) & (log_std_raw <= log_std_max)
    g_log_std = (z2 - 1.0).mul_(scale).mul_(inside)
    return loss, g_mean, g_log_std


def actor_nll_backward(actor: TanhGaussianActor, kernel: ReluMLPKernel, obs: Tensor, action: Tensor,
                       weights: Optional[Tensor] = None) -> Tensor:
    """``-mean_b w_b log pi(a_b | s_b)`` of the actor at ``obs (B, do)``, ``action (B, da)`` (env scale),
    with its gradients written to the actor's ``.grad`` (the trunk through ``kernel``, the learned
    ``log_std`` vector directly). Returns the loss (0-dim). ``weights (B,)``: ``None`` for all ones."""
    with torch.no_grad():
        out = kernel.forward(actor.normalizer.forward(obs), keep=True)
        if fused_kernels.compiled_enabled():  # one compiled loop for the element-wise part
            sdep = actor.state_dependent_std
            grad = torch.empty_like(out)
            log_std = actor.log_std.detach() if not sdep else out.new_empty(0)
            g_log_std = _grad_of(actor.log_std) if not sdep else log_std
            loss = fused_kernels.tanh_gaussian_nll_grad(
                out.numpy(), action.detach().numpy(), actor.scaler.low.numpy(), actor.scaler.high.numpy(),
                (out.new_empty(0) if weights is None else weights.detach()).numpy(), log_std.numpy(), sdep,
                actor.atanh_eps, actor.log_std_min, actor.log_std_max, grad.numpy(), g_log_std.numpy())
            kernel.backward(grad)
            return torch.tensor(loss, dtype=out.dtype)
        eps = actor.atanh_eps
        x = torch.atanh(actor.scaler.to_unit(action).clamp_(-1.0 + eps, 1.0 - eps))
        const = _log1m_tanh_sq(x).sum(-1) + actor.scaler.log_abs_det()
        da = actor.action_dim
        if actor.state_dependent_std:
            mean, raw = out[:, :da], out[:, da:]
        else:
            mean, raw = out, actor.log_std.expand_as(out)
        loss, g_mean, g_log_std = gaussian_nll_grad(mean, raw, x, actor.log_std_min, actor.log_std_max, const, weights)
        if actor.state_dependent_std:
            kernel.backward(torch.cat([g_mean, g_log_std], 1))
        else:
            kernel.backward(g_mean)
            torch.sum(g_log_std, 0, out=_grad_of(actor.log_std))
    return loss


def actor_supported(actor: nn.Module) -> bool:
    """Whether :func:`actor_nll_backward` applies to ``actor``'s class and ``log_std`` (its trunk is checked
    when its kernel is built)."""
    return (type(actor) is TanhGaussianActor and type(actor.normalizer) is ObsNormalizer
            and type(actor.scaler) is ActionScaler
            and (actor.state_dependent_std or actor.log_std.requires_grad))  # the trunk: Agent._fused_kernels


# ------------------------------------------------------------------------------------ optimizer
def step_optimizer(opt: torch.optim.Optimizer) -> None:
    """``opt.step()``; a :class:`LeanAdam` without step hooks skips ``torch.optim``'s hook/profiler wrapper."""
    from torch.optim import optimizer as _opt

    step = type(opt).step
    if (type(opt) is LeanAdam and getattr(step, "hooked", False) and not opt._optimizer_step_pre_hooks
            and not opt._optimizer_step_post_hooks and not _opt._global_optimizer_pre_hooks
            and not _opt._global_optimizer_post_hooks):
        step.__wrapped__(opt)
    else:
        opt.step()
