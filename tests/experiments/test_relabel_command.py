"""``ohio relabel``: a reacher dataset with a user's controller given by import path, a Minari dataset, spec errors."""
import json

import numpy as np
import pytest

from helpers import PDController, RandomZPolicy  # noqa: F401  (PDController is loaded by import path)
from ohio_layers.cli import main
from ohio_layers.data import Dataset
from ohio_layers.inverse.spec import SpecError, parse_spec

SPEC = "helpers:PDController:kp=0.5,kd=0.05"


@pytest.fixture(scope="module")
def reacher_npz(tmp_path_factory):
    pytest.importorskip("mujoco")
    from ohio_layers.envs.reacher.data import collect

    data = collect(RandomZPolicy(PDController()), episodes=3, seed=0, progress=False,
                   env_config={"episode_steps": 40, "goal_period": 20})
    path = tmp_path_factory.mktemp("reacher") / "reacher.npz"
    data.save(path)
    return path


def test_relabel_reacher_with_user_controller(reacher_npz, tmp_path):
    out = tmp_path / "high.npz"
    main(["relabel", str(reacher_npz), "--controller", SPEC, "--dynamics", "actions", "--out", str(out), "--quiet"])
    high, low = Dataset.load(out), Dataset.load(reacher_npz)
    assert len(high) == len(low) // 5 and high["z"].shape == (len(high), 2)
    # the recorded z is recovered (the behaviour's z is the only z that reproduces the unclipped actions)
    unclipped = np.abs(low["actions"]).reshape(-1, 5, 2).max((1, 2)) < 1 - 1e-9
    assert unclipped.mean() > 0.5
    assert np.abs(high["z"] - high["z_true"])[unclipped].max() < 1e-8
    report = json.loads((tmp_path / "high.report.json").read_text())
    assert report["controller"]["target"] == "helpers:PDController" and report["controller"]["kwargs"] == {"kp": 0.5, "kd": 0.05}
    assert report["inverse"] == "analytic" and report["match"] == "actions" and report["k"] == 5
    assert report["report"]["reproduced_share"] >= unclipped.mean()
    assert (tmp_path / "high.residuals.png").stat().st_size > 1000
    assert high.metadata["controller"]["spec"] == SPEC and high.metadata["source"]["policy"]["name"] == "random_z"



class Killed(Exception):
    pass


def test_relabel_resumes_after_an_interruption(reacher_npz, tmp_path, monkeypatch):
    from ohio_layers.inverse.relabel import ProblemInverter

    calls = []
    original = ProblemInverter.__call__

    def counting(self, dataset, starts):
        calls.append(len(starts))
        return original(self, dataset, starts)

    def flaky(self, dataset, starts):
        if len(calls) == 2:
            raise Killed("the run dies after two finished chunks")
        return counting(self, dataset, starts)

    args = ["relabel", str(reacher_npz), "--controller", SPEC, "--dynamics", "actions", "--quiet", "--chunk-size", "4"]
    monkeypatch.setattr(ProblemInverter, "__call__", flaky)
    with pytest.raises(Killed):
        main(args + ["--out", str(tmp_path / "r.npz")])
    assert len(list((tmp_path / "r.npz.parts").glob("chunk_*.npz"))) == 2
    # another controller setting must not reuse those chunks
    with pytest.raises(SystemExit, match="different relabelling run"):
        main(["relabel", str(reacher_npz), "--controller", SPEC + ",horizon=5", "--dynamics", "actions", "--quiet",
              "--chunk-size", "4", "--out", str(tmp_path / "r.npz"), "--inverse", "analytic"])
    monkeypatch.setattr(ProblemInverter, "__call__", counting)
    calls.clear()
    main(args + ["--out", str(tmp_path / "r.npz")])
    windows = len(Dataset.load(reacher_npz)) // 5
    assert sum(calls) == windows - 8  # only the missing chunks were solved
    main(args + ["--out", str(tmp_path / "fresh.npz")])
    assert (tmp_path / "r.npz").read_bytes() == (tmp_path / "fresh.npz").read_bytes()


def test_relabel_minari_dataset(reacher_npz, tmp_path, monkeypatch):
    pytest.importorskip("minari")
    from ohio_layers.data.minari import export_minari, import_minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    export_minari(Dataset.load(reacher_npz), "ohio/reacher/random-z-v0")
    main(["relabel", "ohio/reacher/random-z-v0", "--controller", SPEC, "--dynamics", "actions", "--inverse", "lm",
          "--out", "ohio/reacher/random-z-high-v0", "--work", str(tmp_path / "work"), "--quiet"])
    high = import_minari("ohio/reacher/random-z-high-v0")
    assert high.metadata["inverse"] == "lm" and high.metadata["k"] == 5
    folder = tmp_path / "minari" / "ohio" / "reacher" / "random-z-high-v0"
    report = json.loads((folder / "relabelled.report.json").read_text())
    assert report["report"]["windows"] == len(high)
    assert np.median(np.abs(high["z"] - high["z_true"]).max(1)) < 1e-6


@pytest.mark.parametrize("spec, match", [
    ("lqrr:horizon=5", "unknown built-in 'lqrr'"),
    ("helpers:NoSuchController", "has no 'NoSuchController'"),
    ("nosuchpkg.mod:Ctrl", "module 'nosuchpkg.mod' cannot be imported"),
    ("helpers:RandomZPolicy", "not a LowLevelController subclass"),
    ("helpers:PDController:kq=1", r"unknown argument\(s\) \['kq'\] of helpers:PDController; accepted: \['kp', 'kd', 'horizon'\]"),
    ("helpers:PDController:kp", "argument 'kp' is not key=value"),
    ("helpers:PDController:horizon=0", r"PDController\(horizon=0\) failed: ValueError: horizon must be a positive int"),
    ("min_cost_flow", "needs graph=<city.json>"),
    ("min_cost_flow:graph=nowhere.json", "graph file 'nowhere.json' does not exist"),
    ("osc:kp=-1", r"osc\(kp=-1\) failed: ValueError: kp must hold 6 positive finite values"),
    ("osc:stiffness=3", r"unknown argument\(s\) \['stiffness'\] of osc"),
])
def test_spec_errors_name_the_bad_part(reacher_npz, tmp_path, spec, match):
    with pytest.raises(SystemExit, match=match):
        main(["relabel", str(reacher_npz), "--controller", spec, "--out", str(tmp_path / "x.npz"), "--quiet"])


def test_parse_spec_values_and_amortized(reacher_npz, tmp_path):
    s = parse_spec("lqr:horizon=5,Q=[10,10,1,1],name=a.json")
    assert s.name == "lqr" and s.kwargs == {"horizon": 5, "Q": [10, 10, 1, 1], "name": "a.json"}
    s = parse_spec("my.pkg:Ctrl:gain=0.5")
    assert s.target == "my.pkg:Ctrl" and s.kwargs == {"gain": 0.5}
    with pytest.raises(SpecError, match="given twice"):
        parse_spec("lqr:horizon=5,horizon=4")
    import importlib.util

    if importlib.util.find_spec("ohio_layers.inverse.amortized") is None:
        with pytest.raises(SystemExit, match="no amortized inverse"):
            main(["relabel", str(reacher_npz), "--controller", SPEC, "--dynamics", "actions", "--inverse", "amortized",
                  "--out", str(tmp_path / "x.npz"), "--quiet"])


def test_builtin_min_cost_flow_relabels_amod_flows_exactly(tmp_path):
    from ohio_layers.envs.amod import AMoDEnv
    from ohio_layers.envs.amod.data import collect
    from ohio_layers.envs.amod.scenario import synthetic_reference_json

    city = tmp_path / "city.json"
    city.write_text(json.dumps(synthetic_reference_json(nlat=2, nlon=2, start_hour=8, minutes=120, fleet=40, seed=2)))
    env = AMoDEnv(city, scenario_kwargs={"horizon": 5}, action_mode="flows")
    collect("dispatch", 3, seed=0, env=env, progress=False).save(tmp_path / "amod.npz")
    out = tmp_path / "amod_high.npz"
    main(["relabel", str(tmp_path / "amod.npz"), "--controller", f"min_cost_flow:graph={city},horizon=5", "--out", str(out),
          "--quiet"])
    high = Dataset.load(out)
    assert high["z"].shape == (15, 4) and np.allclose(high["z"].sum(1), 1.0)
    report = json.loads((tmp_path / "amod_high.report.json").read_text())
    assert report["report"]["converged_share"] == 1.0 and report["k"] == 1  # replaying z* through the LP gives the flows
    with pytest.raises(SystemExit, match="has its own exact inverse"):
        main(["relabel", str(tmp_path / "amod.npz"), "--controller", f"min_cost_flow:graph={city}", "--inverse", "lm",
              "--out", str(out), "--quiet"])


def test_builtin_lqr_relabels_hierarchical_reacher_data(tmp_path):
    pytest.importorskip("mujoco")
    from ohio_layers.envs.reacher.data import collect
    from ohio_layers.envs.reacher.policies import make_reacher_lqr

    # small random z: the torques stay inside +-1, so the analytic inverse is exact up to the linearisation
    data = collect(RandomZPolicy(make_reacher_lqr(), scale=0.05), episodes=2, seed=0, progress=False,
                   env_config={"episode_steps": 20, "goal_period": 10})
    assert np.abs(data["actions"]).max() < 1
    data.save(tmp_path / "lqr.npz")
    main(["relabel", str(tmp_path / "lqr.npz"), "--controller", "lqr:horizon=5,Q=[10,10,1,1],R=0.1", "--out",
          str(tmp_path / "lqr_high.npz"), "--quiet"])
    high = Dataset.load(tmp_path / "lqr_high.npz")
    assert high.metadata["match"] == "next_state" and high.metadata["dynamics"] == "context"
    assert np.median(np.abs(high["z"] - high["z_true"]).max(1)) < 1e-4
