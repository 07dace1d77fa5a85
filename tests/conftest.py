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


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    """Ray with 2 CPUs on 127.0.0.1 for one test module (skipped without the ``ray`` extra). A module whose
    functions run in the workers registers itself: ``ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])``."""
    ray = pytest.importorskip("ray")
    from ohio_layers._ray import init_ray

    assert init_ray(2)
    yield ray
    ray.shutdown()
