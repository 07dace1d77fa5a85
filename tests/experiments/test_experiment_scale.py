"""Scale-out options of the experiment commands: ``--device`` (refused without a GPU, part of every
training job's key), ``--full`` profiles and the wall-time estimate printed before a run."""
import pytest
import torch

from ohio_layers.cli import main
from ohio_layers.experiments.common import job_key

COMMANDS = ("reacher", "manipulation", "amod", "supply-chain", "identify-manipulation")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
@pytest.mark.parametrize("command", COMMANDS)
def test_device_cuda_is_refused_at_config_build_naming_the_flag(command, tmp_path):
    with pytest.raises(SystemExit) as err:
        main([command, "--device", "cuda", "--out", str(tmp_path)])
    msg = str(err.value)
    assert f"ohio {command}:" in msg and "--device" in msg and "torch.cuda.is_available() is False" in msg
    assert not (tmp_path / "config.json").exists()  # nothing ran


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "CPU", ""])
def test_a_malformed_device_is_refused(device, tmp_path):
    with pytest.raises(SystemExit, match=r"device \(--device\) must be 'cpu', 'cuda' or 'cuda:N'"):
        main(["supply-chain", "--set", f"device={device}", "--out", str(tmp_path)])


def test_the_device_is_part_of_every_training_job(tmp_path):
    from ohio_layers.experiments import amod, supply_chain

    for name in ("dispatch.npz", "dispatch_ohio.npz", "mpc.npz", "mpc_ohio.npz"):
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "data" / name).write_bytes(b"x")
    jobs = [amod._job(amod.AMoDExperimentConfig(), tmp_path, "dispatch", "ohio", "iql", 0),
            supply_chain._job(supply_chain.SupplyChainExperimentConfig(), tmp_path, "mpc", "ohio", "iql", 0)]
    for job in jobs:
        assert job["device"] == "cpu"
        assert job_key(job) != job_key({**job, "device": "cuda"})  # a GPU run never reuses a CPU result


# ------------------------------------------------------------------------------ wall-time estimate
def test_estimate_is_the_longest_first_schedule_length():
    from ohio_layers.experiments.common import estimate_wall_time

    costs = {"step": 0.01, "episode": 0.5}
    jobs = [{"step": 1000, "episode": 4}] * 8  # 12 s each
    assert estimate_wall_time(jobs, costs, 1) == pytest.approx(96.0)
    assert estimate_wall_time(jobs, costs, 2) == pytest.approx(48.0)
    assert estimate_wall_time(jobs, costs, 3) == pytest.approx(36.0)  # 3 + 3 + 2 jobs
    assert estimate_wall_time(jobs, costs, 100) == pytest.approx(12.0)  # never below the longest job
    uneven = [{"step": 3000}, {"step": 1000}, {"step": 1000}, {"step": 1000}]  # 30, 10, 10, 10 s
    assert estimate_wall_time(uneven, costs, 2) == pytest.approx(30.0)
    assert estimate_wall_time([], costs, 2) == 0.0
    with pytest.raises(KeyError, match="units \\['gpu_step'\\] without a cost"):
        estimate_wall_time([{"gpu_step": 1}], costs, 2)
    with pytest.raises(ValueError, match="workers must be a positive int"):
        estimate_wall_time(jobs, costs, 0)
    with pytest.raises(ValueError, match="negative or NaN"):
        estimate_wall_time([{"step": -1}], costs, 1)


def _configs():
    from ohio_layers.experiments import amod, manipulation, reacher, supply_chain

    return [(reacher, reacher.ReacherExperimentConfig), (manipulation, manipulation.ManipulationExperimentConfig),
            (amod, amod.AMoDExperimentConfig), (supply_chain, supply_chain.SupplyChainExperimentConfig)]


@pytest.mark.parametrize("index", range(4))
def test_every_experiment_estimate_scales_with_workers_and_full_costs_more(index):
    module, config = _configs()[index]
    for cfg in (config(), config(**module.FULL)):
        one, two, eight = (dict(module.estimate(cfg, w)) for w in (1, 2, 8))
        for phase in set(one) - {"data + relabel"}:  # the job stages; data runs in the driver
            assert one[phase] / two[phase] == pytest.approx(2.0, rel=0.25)
            assert eight[phase] <= two[phase] / 2
        assert one["data + relabel"] == two["data + relabel"] > 0
    assert sum(dict(module.estimate(config(**module.FULL), 2)).values()) > 5 * sum(dict(module.estimate(config(), 2)).values())


# ------------------------------------------------------------------------------ --full
@pytest.mark.parametrize("command", ["reacher", "manipulation", "amod", "supply-chain"])
def test_full_and_quick_are_mutually_exclusive(command, capsys):
    with pytest.raises(SystemExit) as err:
        main([command, "--quick", "--full"])
    assert err.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize("command, module, field, value", [
    ("reacher", "reacher", "train_steps", 1_000_000), ("manipulation", "manipulation", "train_steps", 100_000),
    ("amod", "amod", "iql_steps", 200_000), ("supply-chain", "supply_chain", "iql_steps", 500_000)])
def test_full_builds_the_paper_sized_config(command, module, field, value, monkeypatch, capsys, tmp_path):
    import importlib

    mod = importlib.import_module(f"ohio_layers.experiments.{module}")
    seen = []
    monkeypatch.setattr(mod, "run", seen.append)  # the config the command would run, without running it
    main([command, "--full", "--out", str(tmp_path), "--set", "workers=4"])
    (cfg,) = seen
    assert getattr(cfg, field) == value and cfg.workers == 4 and cfg.device == "cpu"
    assert ("--scenario" in capsys.readouterr().out) == (command == "amod")  # AMoD's paper cities need a scenario


def test_job_workers_are_capped_by_the_cpus_only_without_ray():
    import os

    from ohio_layers.experiments.supply_chain import SupplyChainExperimentConfig

    assert SupplyChainExperimentConfig(workers=64, engine="ray").job_workers == 64  # tasks on a cluster
    assert SupplyChainExperimentConfig(workers=64).job_workers == min(64, os.cpu_count() or 1)
