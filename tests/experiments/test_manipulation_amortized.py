"""ohio manipulation --set inverse=...: the amortised methods get their own labels per setting (no simulator needed)."""
import pytest

from ohio_layers.experiments.manipulation import ManipulationExperimentConfig, build_jobs


def test_inverse_adds_amortized_methods_and_each_trains_on_its_own_labels(tmp_path):
    cfg = ManipulationExperimentConfig(out_dir=str(tmp_path), methods=("ohio", "iql_actions"), seeds=(0,),
                                       settings=("original", "damping"), inverse=("amortized, amortized+fallback",))
    cfg.check()
    assert cfg.methods == ("ohio", "iql_actions", "ohio_amortized", "ohio_amortized_fallback")
    data = tmp_path / "data"
    data.mkdir()
    for name in ("actions", *(f"{m}_{s}" for m in ("ohio", "ohio_amortized", "ohio_amortized_fallback")
                              for s in ("original", "damping"))):
        (data / f"{name}.npz").write_bytes(name.encode())  # distinct content: distinct hashes
    jobs = {(j["method"], j["setting"]): j for j in build_jobs(cfg)}
    for method in ("ohio", "ohio_amortized", "ohio_amortized_fallback"):
        for s in ("original", "damping"):
            job = jobs[(method, s)]
            assert job["data_path"] == str(data / f"{method}_{s}.npz") and job["deploy"] == [s]
    assert len({j["data_sha256"] for j in jobs.values()}) == len(jobs)
    assert jobs[("iql_actions", "original")]["deploy"] == ["original", "damping"]


def test_unknown_inverse_is_named():
    with pytest.raises(ValueError, match="inverse must be a subset"):
        ManipulationExperimentConfig(inverse=("amortised",)).check()
