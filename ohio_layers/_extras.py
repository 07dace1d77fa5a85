"""Import optional dependencies with an error that names the extra to install."""
from __future__ import annotations

import importlib
from types import ModuleType

EXTRA_OF = {
    "mujoco": "mujoco",
    "robosuite": "robosuite",
    "cvxpy": "cvxpy",
    "cvxpylayers": "cvxpylayers",
    "qpth": "qpth",
    "theseus": "theseus",
    "highspy": "highs",
    "matplotlib": "plots",
    "minari": "minari",
    "h5py": "minari",
    "d3rlpy": "d3rlpy",
    "tensorboard": "tensorboard",
    "ray": "ray",
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise ``ImportError`` telling which ``ohio_layers[extra]`` provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:  # pragma: no cover - depends on the environment
        extra = EXTRA_OF.get(module.split(".")[0], module)
        raise ImportError(
            f"'{module}' is needed here but is not installed; install it with "
            f"`pip install 'ohio_layers[{extra}]'`"
        ) from err
