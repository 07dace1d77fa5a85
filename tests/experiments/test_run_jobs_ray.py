"""Experiment jobs on 2 local Ray workers: the same result files as run_jobs, each job exactly once, resumable."""
import os
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from ohio_layers.experiments.common import run_jobs  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module


def seeded_job(job):
    """A seeded computation; logs each run; the worker dies on the first attempt of the job named ``job["kill"]``
    (once: the ``job["marker"]`` file)."""
    import torch

    with open(job["log"], "a") as f:
        f.write(job["name"] + "\n")
    if job["name"] == job["kill"] and not os.path.exists(job["marker"]):
        Path(job["marker"]).write_text("killed")
        os._exit(1)
    g = torch.Generator().manual_seed(job["seed"])
    w = torch.randn(8, 8, generator=g, dtype=torch.float64)
    return {"seed": job["seed"], "norm": float(torch.linalg.matrix_norm(w @ w.T, ord=2)), "trace": float(w.trace())}


def test_ray_jobs_match_run_jobs_exactly_once_after_a_crash(local_ray, tmp_path):
    log, marker = tmp_path / "runs.log", tmp_path / "killed"
    jobs = [{"name": f"job{i}", "seed": i, "log": str(log), "kill": "job2", "marker": str(marker)} for i in range(5)]
    marker.write_text("not in this process")
    run_jobs(seeded_job, jobs, tmp_path / "serial", workers=1, desc="serial")
    marker.unlink()
    log.unlink()
    results = run_jobs(seeded_job, jobs, tmp_path / "ray", workers=2, engine="ray")
    assert marker.exists(), "the worker was never killed: the retry was not tested"
    runs = log.read_text().split()
    assert sorted(runs) == sorted([f"job{i}" for i in range(5)] + ["job2"])  # job2 twice (killed, retried), others once
    for j in jobs:
        assert (tmp_path / "ray" / f"{j['name']}.json").read_bytes() == (tmp_path / "serial" / f"{j['name']}.json").read_bytes()
    assert [r["seed"] for r in results] == list(range(5))
    # resume: only the missing job runs again
    (tmp_path / "ray" / "job3.json").unlink()
    log.unlink()
    run_jobs(seeded_job, jobs, tmp_path / "ray", workers=2, engine="ray")
    assert log.read_text().split() == ["job3"]
    with pytest.raises(ValueError, match="engine must be 'process' or 'ray'"):
        run_jobs(seeded_job, jobs, tmp_path / "ray", engine="dask")


def test_experiment_configs_take_the_engine_by_name():
    from ohio_layers.experiments.reacher import ReacherExperimentConfig

    assert ReacherExperimentConfig.from_dict({"engine": "ray"}).engine == "ray"
    with pytest.raises(ValueError, match="engine"):
        ReacherExperimentConfig.from_dict({"engine": "spark"})
