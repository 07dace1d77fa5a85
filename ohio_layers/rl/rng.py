"""Each agent's own random stream: a ``torch.Generator`` on the agent's device.

Training code draws through torch's global RNG (``torch.randint``, ``randn_like``, the Dirichlet's
``rsample`` -- the last accepts no generator at all), so :func:`generator_scope` routes the global
RNG *of the generator's device* through the agent's generator for the duration of a block: it forks
the global state, loads the generator's state, runs the block and stores the advanced state back.
The caller's global RNG is left untouched (CPU and, for a CUDA agent, that CUDA device), and a run
resumed from a checkpoint (which stores the generator state) continues the same stream on any device.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterator, Optional, Union

import torch

__all__ = ["make_generator", "generator_scope", "restore_generator_state"]


def make_generator(device: Union[str, torch.device], seed: int, cpu_state: Optional[torch.Tensor] = None) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed``; a CPU one may instead start at ``cpu_state``.

    (The agents pass the CPU state right after their seeded weight initialisation, so the CPU
    stream continues where the initialisation left off.)
    """
    dev = torch.device(device)
    gen = torch.Generator(device=dev)
    if dev.type == "cpu" and cpu_state is not None:
        gen.set_state(cpu_state)
    else:
        gen.manual_seed(int(seed))
    return gen


def _cuda_index(dev: torch.device) -> int:
    return dev.index if dev.index is not None else torch.cuda.current_device()


@contextlib.contextmanager
def generator_scope(generator: torch.Generator) -> Iterator[torch.Generator]:
    """Within the block, torch's global RNG of ``generator.device`` *is* ``generator``'s stream."""
    dev = generator.device
    if dev.type == "cpu":
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(generator.get_state())
            try:
                yield generator
            finally:
                generator.set_state(torch.get_rng_state())
    elif dev.type == "cuda":
        idx = _cuda_index(dev)
        with torch.random.fork_rng(devices=[idx]):
            torch.cuda.set_rng_state(generator.get_state(), idx)
            try:
                yield generator
            finally:
                generator.set_state(torch.cuda.get_rng_state(idx))
    else:  # other accelerators: fork_rng handles their default generator
        module = getattr(torch, dev.type)
        with torch.random.fork_rng(device_type=dev.type):
            module.set_rng_state(generator.get_state())
            try:
                yield generator
            finally:
                generator.set_state(module.get_rng_state())


def restore_generator_state(generator: torch.Generator, state: torch.Tensor, saved_device: str) -> None:
    """Load a checkpointed state; states do not carry across device types (warns and keeps the seed)."""
    if torch.device(saved_device).type != generator.device.type:
        warnings.warn(f"the checkpoint's RNG stream belongs to a {saved_device!r} generator and cannot continue on "
                      f"{generator.device.type!r}; training restarts the stream from config.seed", stacklevel=3)
        return
    generator.set_state(state)
