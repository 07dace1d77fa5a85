"""Item 7 of issue 15 (LQR part): cost weights must be finite, symmetric, Q PSD and R PD."""
import math

import pytest
import torch

from helpers import reacher_like_linearization
from ohio_layers.lowlevel import LQRGoalController


@pytest.mark.parametrize("kwargs, match", [
    ({"Q": float("nan")}, "Q contains NaN"),
    ({"R": [0.1, math.inf]}, "R contains NaN or inf"),
    ({"Q": (10.0, -1.0, 1.0, 1.0)}, "Q must be positive semi-definite"),
    ({"R": 0.0}, "R must be positive definite"),
    ({"R": [[1.0, 2.0], [2.0, 1.0]]}, "R must be positive definite"),
    ({"Q": torch.triu(torch.ones(4, 4))}, "Q must be symmetric"),
    ({"Q": "ten"}, "Q must be a number"),
])
def test_bad_weights_are_named(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        LQRGoalController(reacher_like_linearization(), **kwargs)


def test_semi_definite_q_is_allowed_and_gains_are_finite():
    c = LQRGoalController(reacher_like_linearization(), Q=(10.0, 10.0, 0.0, 0.0))
    ctx = c.context(torch.zeros(3, 4, dtype=torch.float64))
    assert bool(torch.isfinite(ctx["K"]).all())
