"""A seeded miniature of ``ohio study model-error``: rows for every (model, inverse), the inverses' known behaviour."""
import json

import pytest

from ohio_layers.cli import main
from ohio_layers.experiments.model_error import ModelErrorConfig, run

TINY = dict(episodes=2, b_scales=(0.7, 1.0), a_perturbations=(0.3,), learned_fractions=(1.0,), learned_epochs=3,
            amortized_epochs=3, amortized_hidden=(16, 16), downstream=("b1",), train_steps=20, hidden=(16, 16),
            batch_size=32, eval_episodes=1, workers=1)


def test_tiny_study_rows_and_the_inverses_behaviour(tmp_path):
    cfg = ModelErrorConfig(out_dir=str(tmp_path), **TINY)
    res = run(cfg)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "model_error.png").stat().st_size > 0
    rows = {(r["level"], r["inverse"]): r for r in saved["rows"]}
    assert set(rows) == {(lv, inv) for lv in ("b0.7", "b1", "a0.3", "learned1") for inv in ("analytic", "lm", "amortized")}
    assert 0 < saved["clipped_share"] < 0.5  # the split below has both parts
    # through the true model the analytic inverse recovers the recorded z wherever nothing clips (up to the FD
    # model's ~1e-8 one-step error), not where the clip acts; LM through the clipped loop recovers both
    true_an, true_lm = rows[("b1", "analytic")], rows[("b1", "lm")]
    assert true_an["z_error_unclipped_p90"] < 1e-4
    assert true_an["z_error_clipped_median"] > 1e-2
    assert true_lm["z_error_clipped_median"] < 1e-2
    assert true_lm["replay_error_median"] < 1e-10
    assert rows[("b1", "lm")]["model_k_step_error"] < 1e-3
    # a 30 % input-gain error shows in the labels of every exact inverse, and in the replay through the true model
    for inv in ("analytic", "lm"):
        assert rows[("b0.7", inv)]["z_error_median"] > 1e-2
        assert rows[("b0.7", inv)]["replay_error_median"] > 1e-3
        assert rows[("b0.7", inv)]["model_k_step_error"] > 1e-2
    # downstream: one agent per inverse on the b1 labels plus the true-z anchor, scored
    assert set(res["scores"]) == {"b1/analytic", "b1/lm", "b1/amortized", "true/true_z"}
    assert rows[("b1", "lm")]["score"] == res["scores"]["b1/lm"]["mean"] and rows[("b0.7", "lm")]["score"] is None
    assert "replay clipped" in saved["table"]


def test_config_rejects_unknown_levels_and_keys(tmp_path):
    with pytest.raises(ValueError, match=r"downstream names unknown levels \['b0.5'\]"):
        ModelErrorConfig(downstream=("b0.5",))
    with pytest.raises(ValueError, match="learned_fractions"):
        ModelErrorConfig(learned_fractions=(1.5,))
    with pytest.raises(SystemExit, match="epochs"):
        main(["study", "model-error", "--out", str(tmp_path), "--set", "epochs=3"])
