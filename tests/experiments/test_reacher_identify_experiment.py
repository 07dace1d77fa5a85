"""``ohio identify-reacher``: a seeded miniature -- every episode's LQR weights identified, the settings
clustered, the label sets relabelled, agents trained and deployed; scores paired by seed; resume is a no-op."""
import json

import numpy as np
import pytest

from ohio_layers.experiments.reacher_identify import SETTINGS, ReacherIdentifyConfig, run

TINY = dict(episodes=3, episode_steps=40, train_steps=20, seeds=(0, 1), eval_episodes=1, hidden=(16, 16), batch_size=32,
            workers=1, lm_iterations=5)


def test_tiny_identify_reacher_recovers_every_setting_and_pairs_scores_by_seed(tmp_path):
    pytest.importorskip("mujoco")
    cfg = ReacherIdentifyConfig(out_dir=str(tmp_path), **TINY)
    res = run(cfg)
    truth = res["truth"]
    assert [truth[str(i)] for i in range(3)] == list(SETTINGS)  # interleaved
    for name in SETTINGS:  # Q_i / R of every episode within 1 % (R is the scale gauge, held at 0.1)
        assert res["stats"][name]["within_share"] == 1.0
        assert max(res["stats"][name]["max_rel_error"].values()) < 0.01
    assert sorted(res["cluster_labels"]) == [0, 1, 2]
    # the identified controllers reproduce the recorded z about as well as the true ones; the reference LQR does not
    rel = res["relabel"]
    assert rel["identified"]["z_error_median"] < 1e-3 and rel["true"]["z_error_median"] < 1e-3
    assert rel["assumed"]["z_error_median"] > 10 * rel["identified"]["z_error_median"]
    sc = res["scores"]
    for name in SETTINGS:
        gaps = np.array(sc[f"ohio_identified/{name}"]) - np.array(sc[f"ohio_true/{name}"])
        np.testing.assert_allclose(sc[f"gap/{name}"], gaps)
        assert len(gaps) == 2
    assert json.loads((tmp_path / "results.json").read_text())["scores"].keys() == sc.keys()
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.npz")} | {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*.json")}
    run(cfg)  # resumes: nothing recomputed
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}
