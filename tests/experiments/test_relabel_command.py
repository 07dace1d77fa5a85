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


# ------------------------------------------------------------------------------ --identify
def mixed_lqr_npz(path, settings, episodes=6, T=40, k=5):
    """A log of ``episodes`` interleaved episodes, episode ``e`` recorded by an LQR with ``Q = settings[e % S]``
    (teacher-forced actions on random states: identification needs no dynamics); the setting is not stored."""
    import torch

    from helpers import ReacherLikeLQR

    cols = {key: [] for key in ("states", "observations", "actions", "z_true", "episode_ids")}
    g = torch.Generator().manual_seed(3)
    for e in range(episodes):
        states = torch.randn(T // k, k, 4, generator=g, dtype=torch.float64) * torch.tensor([1.0, 1.0, 0.5, 0.5], dtype=torch.float64)
        z = 0.3 * torch.randn(T // k, 4, generator=g, dtype=torch.float64)
        c = ReacherLikeLQR(Q=settings[e % len(settings)])
        ctx = c.context(states[:, 0])
        with torch.no_grad():
            a = torch.stack([c.act(states[:, j], z, ctx, j) for j in range(k)], 1)
        cols["states"].append(states.reshape(T, 4).numpy())
        cols["observations"].append(states.reshape(T, 4).numpy().astype(np.float32))
        cols["actions"].append(a.reshape(T, 2).numpy())
        cols["z_true"].append(z.repeat_interleave(k, 0).numpy())
        cols["episode_ids"].append(np.full(T, e))
    arrays = {key: np.concatenate(v) for key, v in cols.items()}
    N = len(arrays["episode_ids"])
    arrays.update(rewards=np.zeros(N), terminals=np.zeros(N, bool), timeouts=np.zeros(N, bool),
                  next_observations=arrays["observations"], next_states=arrays["states"])
    Dataset(arrays).save(path)
    return path


def test_relabel_identify_clusters_a_mixed_log_and_relabels_each_episode_with_its_own_weights(tmp_path):
    settings = [(30.0, 5.0, 0.5, 2.0), (3.0, 20.0, 1.0, 0.3)]
    data = mixed_lqr_npz(tmp_path / "mixed.npz", settings)
    out = tmp_path / "high.npz"
    # starting weights are neither setting; R is the known scale (only Q/R is identifiable)
    main(["relabel", str(data), "--controller", "helpers:ReacherLikeLQR", "--dynamics", "actions", "--identify", "Q",
          "--out", str(out), "--quiet"])
    report = json.loads((tmp_path / "high.report.json").read_text())
    ident = report["identification"]
    assert ident["parameters"] == ["Q.0", "Q.1", "Q.2", "Q.3"] and ident["cluster_of_episode"] == [0, 1, 0, 1, 0, 1]
    for c, cl in enumerate(ident["clusters"]):
        np.testing.assert_allclose([cl["estimate"][f"Q.{i}"] for i in range(4)], settings[c], rtol=1e-6)
    assert all(all(e["identifiable"].values()) for e in ident["episodes"])
    high, low = Dataset.load(out), Dataset.load(data)
    unsaturated = np.abs(low["actions"]).reshape(-1, 5, 2).max((1, 2)) < 1.0 - 1e-9
    assert unsaturated.mean() > 0.3
    np.testing.assert_allclose(high["z"][unsaturated], high["z_true"][unsaturated], atol=1e-7)
    # the same data relabelled with the (wrong) starting weights does not reproduce z: the identification mattered
    main(["relabel", str(data), "--controller", "helpers:ReacherLikeLQR", "--dynamics", "actions",
          "--out", str(tmp_path / "plain.npz"), "--quiet"])
    plain = Dataset.load(tmp_path / "plain.npz")
    assert np.abs(plain["z"] - plain["z_true"])[unsaturated].max() > 1e-2
    assert high.metadata["identify"] == "Q"


def test_relabel_identify_memoizes_a_simulator_linearization(tmp_path, monkeypatch):
    """A controller linearised through a simulator (no forward-mode AD) is identified exactly, with one
    simulator call per batch of window starts rather than per Jacobian column and iteration."""
    import helpers

    calls = []
    original = helpers.NumpyLinearization.__call__
    monkeypatch.setattr(helpers.NumpyLinearization, "__call__", lambda self, s: (calls.append(1), original(self, s))[1])
    data = mixed_lqr_npz(tmp_path / "mixed.npz", [(30.0, 5.0, 0.5, 2.0)], episodes=1, T=40)
    main(["relabel", str(data), "--controller", "helpers:ReacherLikeLQR:simulator=true", "--dynamics", "actions",
          "--identify", "Q", "--out", str(tmp_path / "high.npz"), "--quiet"])
    ident = json.loads((tmp_path / "high.report.json").read_text())["identification"]
    np.testing.assert_allclose([ident["clusters"][0]["estimate"][f"Q.{i}"] for i in range(4)], [30.0, 5.0, 0.5, 2.0], rtol=1e-6)
    assert len(calls) <= 4  # identification once, relabelling once (+ a context probe)


def test_relabel_identify_refuses_what_the_data_cannot_identify(tmp_path):
    data = mixed_lqr_npz(tmp_path / "mixed.npz", [(30.0, 5.0, 0.5, 2.0)], episodes=1, T=20)
    base = ["relabel", str(data), "--controller", "helpers:ReacherLikeLQR", "--dynamics", "actions", "--quiet"]
    with pytest.raises(SystemExit, match=r"'P' is not a floating-point parameter or buffer of ReacherLikeLQR; it has \[.*'Q'"):
        main(base + ["--identify", "P", "--out", str(tmp_path / "a.npz")])
    # Q and R together: the gains fix only their ratio -> refused, naming the parameters and why
    with pytest.raises(SystemExit, match=r"--identify Q,R: not identifiable from these data \(group 0\): \{'Q.0'"):
        main(base + ["--identify", "Q,R", "--out", str(tmp_path / "b.npz")])
    main(base + ["--identify", "Q,R", "--allow-unidentified", "--out", str(tmp_path / "c.npz")])
    ident = json.loads((tmp_path / "c.report.json").read_text())["identification"]
    assert not any(ident["episodes"][0]["identifiable"].values())


def test_relabel_identify_osc_gains_per_axis_group_from_substep_torques(tmp_path):
    """The built-in osc: kp and damping ratio (position / orientation groups) of two withheld settings."""
    import torch

    from helpers import substep_states
    from ohio_layers.envs.manipulation import ControllerSetting

    settings = [((150.0,) * 6, (1.0,) * 6), ((150.0,) * 3 + (50.0,) * 3, (3.0,) * 3 + (1.0,) * 3)]
    N, cols = 30, {key: [] for key in ("substep_states", "substep_torques", "actions", "z_true", "episode_ids")}
    for e in range(4):
        states = substep_states(N, seed=e)
        g = torch.Generator().manual_seed(50 + e)
        z = torch.cat([0.02 * torch.randn(N, 3, generator=g, dtype=torch.float64),
                       0.2 * torch.randn(N, 3, generator=g, dtype=torch.float64)], -1)
        z = z.clamp(-0.8 * torch.tensor([0.05] * 3 + [0.5] * 3), 0.8 * torch.tensor([0.05] * 3 + [0.5] * 3))  # within output_max
        c = ControllerSetting("s", *settings[e % 2], (0.05,) * 3 + (0.5,) * 3).make_controller()
        ctx = c.context(states[:, 0])
        with torch.no_grad():
            tau = torch.stack([c.act(states[:, j], z, ctx, j) for j in range(states.shape[1])], 1)
        cols["substep_states"].append(states.numpy())
        cols["substep_torques"].append(tau.numpy())
        cols["actions"].append(np.c_[np.zeros((N, 6)), np.ones((N, 1))])
        cols["z_true"].append(np.c_[z.numpy(), np.ones((N, 1))])  # z and the gripper command
        cols["episode_ids"].append(np.full(N, e))
    arrays = {key: np.concatenate(v) for key, v in cols.items()}
    T = len(arrays["episode_ids"])
    arrays.update(observations=np.zeros((T, 3), np.float32), next_observations=np.zeros((T, 3), np.float32),
                  rewards=np.zeros(T), terminals=np.zeros(T, bool), timeouts=np.zeros(T, bool))
    Dataset(arrays).save(tmp_path / "osc.npz")
    main(["relabel", str(tmp_path / "osc.npz"), "--controller", "osc:kp=100,damping_ratio=2", "--identify",
          "kp,damping_ratio", "--out", str(tmp_path / "high.npz"), "--quiet"])
    ident = json.loads((tmp_path / "high.report.json").read_text())["identification"]
    assert ident["parameters"] == ["kp.pos", "kp.ori", "damping_ratio.pos", "damping_ratio.ori"]
    assert ident["cluster_of_episode"] == [0, 1, 0, 1]
    for (kp, ratio), cl in zip(settings, ident["clusters"]):
        np.testing.assert_allclose([cl["estimate"][p] for p in ident["parameters"]], [kp[0], kp[3], ratio[0], ratio[3]], rtol=1e-6)
    high = Dataset.load(tmp_path / "high.npz")
    limit = np.array([80.0] * 5 + [12.0] * 2)
    unsaturated = (np.abs(arrays["substep_torques"]) < limit - 1e-9).all((1, 2))
    assert unsaturated.mean() > 0.3
    np.testing.assert_allclose(high["z"][unsaturated], arrays["z_true"][unsaturated], atol=1e-6)
    # the osc relabeller carries kp and damping ratio only: identifying anything else is refused, not dropped
    with pytest.raises(SystemExit, match=r"kp and damping_ratio only; \['action_high'\] would be identified and then not used"):
        main(["relabel", str(tmp_path / "osc.npz"), "--controller", "osc:kp=100,damping_ratio=2", "--identify",
              "kp,action_high", "--out", str(tmp_path / "high2.npz"), "--quiet"])
