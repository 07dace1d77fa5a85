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
