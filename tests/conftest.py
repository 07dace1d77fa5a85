"""Test settings: one torch thread (two were measured 4-9x slower on the 2-core CI machine)."""
import os

os.environ.setdefault("MUJOCO_GL", "egl")
import torch

torch.set_num_threads(1)
