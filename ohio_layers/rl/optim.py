"""The agents' optimizer: fused Adam with the per-call Python overhead of ``torch.optim`` removed.

The networks of the offline-RL agents are small (2x256 MLPs at batch 256), so an update is a few
ms and ``torch.optim.Adam.step`` spends about as long in Python (hooks, profiler labels, regrouping
the tensors by device and dtype, per-parameter state look-ups) as in its one fused kernel.
:class:`LeanAdam` is ``torch.optim.Adam(fused=True)``; its :meth:`LeanAdam.step` makes the same
two kernel calls as the library (an add on the step counters, which it keeps as views of one tensor, and
``_fused_adam_`` per parameter group) on tensor lists cached at the first step, so the result is bit-for-bit the
library's, and it falls back to the library's step whenever the cached fast path does not apply
(a missing gradient, amsgrad, a closure, state not yet created); step hooks run as usual
(``torch.optim`` runs them in the wrapper it puts around every optimizer's ``step``).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, List, Optional, Tuple

import torch
from torch import Tensor

__all__ = ["LeanAdam", "adam"]

# (group, params, exp_avgs, exp_avg_sqs, step counters, the flat tensor the counters are views of)
_LeanGroup = Tuple[dict, List[Tensor], List[Tensor], List[Tensor], List[Tensor], Tensor]


class LeanAdam(torch.optim.Adam):
    """``torch.optim.Adam(fused=True)`` with a lean :meth:`step` (same kernels, same results, same state)."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, weight_decay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay, fused=True, **kwargs)
        self._lean: Optional[List[_LeanGroup]] = None
        self._shape = (0, 0)

    def _lean_groups(self) -> Optional[List[_LeanGroup]]:
        """``[(group, params, exp_avgs, exp_avg_sqs, steps, flat steps)]`` once every parameter has its state, else
        ``None``; the parameters' step counters are made views of the flat tensor."""
        out = []
        for g in self.param_groups:
            if g["amsgrad"] or g["maximize"] or g["differentiable"] or g.get("decoupled_weight_decay", False):
                return None
            ps = list(g["params"])
            states = [self.state.get(p) for p in ps]
            if any(not s for s in states):
                return None
            if len({(p.device, p.dtype) for p in ps}) > 1:  # the fused kernel takes one device and dtype per call
                return None
            steps = [s["step"] for s in states]
            if any(t.dim() != 0 or t.dtype != steps[0].dtype or t.device != steps[0].device for t in steps):
                return None
            # the step counters become views of one tensor, so one add_ counts them all (a _foreach_add_ over
            # 0-dim CPU tensors costs ~1.4 us per tensor); the state keeps a counter per parameter as before
            flat = torch.stack(steps)
            for i, st in enumerate(states):
                st["step"] = flat[i]
            out.append((g, ps, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                        [s["step"] for s in states], flat))
        return out

    def _current_shape(self) -> Tuple[int, int]:
        """``(groups, parameters with state)``: a change (a group added, the state cleared) invalidates the cache."""
        return len(self.param_groups), len(self.state)

    def __setstate__(self, state: dict) -> None:  # copies and unpickled optimizers rebuild the cache
        super().__setstate__(state)
        self._lean = None

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        self._lean = None  # a new group: rebuild the cache (Optimizer.__init__ calls this before _lean exists)

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._lean = None  # the state tensors were replaced

    def _library_step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:
        # torch.optim wraps every optimizer class's ``step`` once with its hook/profiler wrapper, which
        # already runs around this class's step: call Adam's own step inside it, not its wrapper again
        adam_step = torch.optim.Adam.step
        return (adam_step.__wrapped__ if getattr(adam_step, "hooked", False) else adam_step)(self, closure)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:  # type: ignore[override]
        if closure is not None:
            return self._library_step(closure)
        if self._lean is None:
            self._lean, self._shape = self._lean_groups(), self._current_shape()
            if self._lean is None:
                loss = self._library_step()
                self._lean, self._shape = self._lean_groups(), self._current_shape()
                return loss
        groups = self._lean
        grads = [[p.grad for p in ps] for _, ps, _, _, _, _ in groups]
        if (any(gr is None for gs in grads for gr in gs) or self._shape != self._current_shape()
                or any(len(g["params"]) != len(ps) for g, ps, _, _, _, _ in groups)):
            self._lean = None  # frozen parameters, an edited group or cleared state: the library handles it
            return self._library_step()
        for (g, ps, exp_avgs, exp_avg_sqs, steps, flat), gs in zip(groups, grads):
            beta1, beta2 = g["betas"]
            flat.add_(1)  # every parameter's step counter (views of flat)
            torch._fused_adam_(ps, gs, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=g["lr"],
                               beta1=beta1, beta2=beta2, weight_decay=g["weight_decay"], eps=g["eps"],
                               maximize=False, grad_scale=None, found_inf=None)
        return None


def adam(params: Iterable[Tensor], lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """The agents' Adam: fused (one kernel per step instead of ~10 tensor ops per parameter, also on
    CPU) and without the library's per-call Python overhead (:class:`LeanAdam`)."""
    return LeanAdam(params, lr=lr, weight_decay=weight_decay)
