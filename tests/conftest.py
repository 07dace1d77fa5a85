"""Test settings: one torch thread (two were measured 4-9x slower on the 2-core CI machine)."""
import os

os.environ.setdefault("MUJOCO_GL", "egl")
import torch

torch.set_num_threads(1)

try:  # property-based suites: derandomized in CI (same examples every run), no per-example deadline
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
    settings.register_profile("explore", deadline=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    pass
