"""Item 2 of issue 15: relabel resumes only on the same data and settings, and a failed call leaves no trap."""
import subprocess
import sys

import numpy as np
import pytest

from helpers import make_inverter, reacher_like_lqr, synthetic_dataset
from ohio_layers.data import Dataset
from ohio_layers.inverse import AnalyticSolver, InverseProblem, LevenbergMarquardt, ProblemInverter, relabel
from ohio_layers.inverse.relabel import settings_digest
from ohio_layers.lowlevel import LinearizedDynamics


def crash_after(inverter, n_ok):
    calls = {"n": 0}

    def crashing(dataset, starts):
        calls["n"] += 1
        if calls["n"] > n_ok:
            raise KeyboardInterrupt("simulated crash")
        return inverter(dataset, starts)

    crashing.describe = inverter.describe
    return crashing


def interrupted_run(tmp_path, data, inverter, n_ok=2):
    with pytest.raises(KeyboardInterrupt):
        relabel(data, crash_after(inverter, n_ok), 5, tmp_path / "hl.npz", chunk_size=4, progress=False)
    assert len(list((tmp_path / "hl.npz.parts").glob("chunk_*.npz"))) == n_ok


def test_changed_data_of_the_same_shape_is_refused_then_recomputed(tmp_path):
    c = reacher_like_lqr(action_bound=1.0)
    old, new = synthetic_dataset(c, seed=0), synthetic_dataset(c, seed=1)
    assert all(old[k].shape == new[k].shape for k in old.keys())
    interrupted_run(tmp_path, old, make_inverter(c))
    with pytest.raises(RuntimeError, match="2 chunks of a different relabelling run .*dataset content"):
        relabel(new, make_inverter(c), 5, tmp_path / "hl.npz", chunk_size=4, progress=False)
    hl, _ = relabel(new, make_inverter(c), 5, tmp_path / "hl.npz", chunk_size=4, progress=False, resume=False,
                    extra_keys=("z_true",))
    np.testing.assert_allclose(hl["z"], hl["z_true"], atol=1e-6)  # no old chunk mixed in


@pytest.mark.parametrize("change", ["solver", "controller", "problem"])
def test_changed_settings_are_refused(tmp_path, change):
    c = reacher_like_lqr(action_bound=1.0)
    data = synthetic_dataset(c, episodes=3)
    interrupted_run(tmp_path, data, make_inverter(c), n_ok=1)
    if change == "solver":
        other = ProblemInverter(InverseProblem(c, LinearizedDynamics()), LevenbergMarquardt(max_iter=3), init=AnalyticSolver())
    elif change == "controller":
        c2 = reacher_like_lqr(action_bound=1.0)
        c2.Q.mul_(2.0)  # same repr, same solver: only a buffer differs
        other = make_inverter(c2)
    else:
        other = ProblemInverter(InverseProblem(c, LinearizedDynamics(), regularization=1e-3), LevenbergMarquardt(),
                                init=AnalyticSolver())
    with pytest.raises(RuntimeError, match="inverter settings"):
        relabel(data, other, 5, tmp_path / "hl.npz", chunk_size=4, progress=False)
    # the unchanged run still resumes
    relabel(data, crash_after(make_inverter(c), 100), 5, tmp_path / "hl.npz", chunk_size=4, progress=False)


def test_a_failed_call_leaves_nothing_that_breaks_the_next_one(tmp_path):
    c = reacher_like_lqr(action_bound=1.0)
    data = synthetic_dataset(c, episodes=2)
    with pytest.raises(ValueError, match="no complete window of k=50"):
        relabel(data, make_inverter(c), 50, tmp_path / "hl.npz", progress=False)
    assert not (tmp_path / "hl.npz.parts").exists()
    # an inverter failing on its first chunk leaves a manifest without chunks: a new run just starts over
    with pytest.raises(KeyboardInterrupt):
        relabel(data, crash_after(make_inverter(c), 0), 5, tmp_path / "hl.npz", chunk_size=4, progress=False)
    other = ProblemInverter(InverseProblem(c, LinearizedDynamics()), LevenbergMarquardt(max_iter=50), init=AnalyticSolver())
    hl, report = relabel(data, other, 5, tmp_path / "hl.npz", chunk_size=4, progress=False)
    assert report.windows == len(hl) == 8 and isinstance(Dataset.load(tmp_path / "hl.npz"), Dataset)


def test_settings_digest_is_stable_across_processes():
    code = ("import sys; sys.path.insert(0, 'tests');"
            "from helpers import reacher_like_lqr, make_inverter;"
            "from ohio_layers.inverse.relabel import settings_digest;"
            "print(settings_digest(make_inverter(reacher_like_lqr(action_bound=1.0))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=__file__.rsplit("/tests/", 1)[0])
    assert out.stdout.strip() == settings_digest(make_inverter(reacher_like_lqr(action_bound=1.0)))
