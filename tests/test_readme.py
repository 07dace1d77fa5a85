"""The README's python code blocks run, in order, in one namespace.

The README's "Inverting a controller" block uses ``controller``, ``state0`` and
``state_after_k_steps`` as placeholders; :data:`PLACEHOLDERS` defines them from a real LQR rollout
(documented here, not hidden), and the test checks that the block then recovers the true z.
"""
import re
from pathlib import Path

import torch

from helpers import reacher_like_lqr
from ohio_layers.lowlevel import LinearizedDynamics, rollout

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str):
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def placeholders():
    torch.manual_seed(0)
    controller = reacher_like_lqr(action_bound=None)
    state0 = 0.2 * torch.randn(16, 4, dtype=torch.float64)
    z_true = 0.2 * torch.randn(16, 4, dtype=torch.float64)
    traj, _ = rollout(controller, LinearizedDynamics(), state0, z_true)
    return {"controller": controller, "state0": state0, "state_after_k_steps": traj[:, -1], "z_true": z_true}


def test_readme_python_blocks_run():
    blocks = python_blocks(README.read_text())
    assert blocks, "README has no python blocks"
    ns = {"__name__": "__readme__"}
    given = placeholders()
    z_true = given.pop("z_true")
    for i, code in enumerate(blocks):
        for name, value in given.items():
            if re.search(rf"\b{name}\b", code) and name not in ns:
                ns[name] = value
        exec(compile(code, f"README.md[python block {i}]", "exec"), ns)
    if "result" in ns:  # the inversion block: its result is the true z
        assert torch.allclose(ns["result"].z, z_true, atol=1e-8)
        assert bool(ns["result"].converged.all())
    if "action" in ns:
        assert ns["action"].shape == (8, 1)
