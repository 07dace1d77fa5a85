"""``ohio amod --scenario FILE --preset NAME --quick`` on a generated schema-valid city; config-time validation."""
import json

import pytest

from ohio_layers.cli import main
from ohio_layers.envs.amod.scenario import synthetic_reference_json
from ohio_layers.experiments.amod import AMoDExperimentConfig

TINY = ['behaviours=["dispatch"]', "episodes=4", "seeds=[0]", 'algos=["iql","calql"]', "iql_steps=10", "cql_steps=6",
        "online_steps=8", "eval_every=8", "eval_episodes=1", "finetune_eval_episodes=1", "hidden=[8,8]",
        "batch_size=8", "workers=1", 'city={"horizon": 4}']


@pytest.fixture()
def city_file(tmp_path):
    path = tmp_path / "city.json"
    path.write_text(json.dumps(synthetic_reference_json(nlat=2, nlon=2, start_hour=8, minutes=120, fleet=40, seed=1)))
    return path


def test_amod_quick_on_a_scenario_file_with_a_preset(tmp_path, city_file):
    out = tmp_path / "run"
    args = ["amod", "--scenario", str(city_file), "--preset", "shenzhen-downtown-west", "--quick", "--out", str(out)]
    main(args + [x for kv in TINY for x in ("--set", kv)])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["city"] == {"step_minutes": 3.0, "demand_ratio": 2.5, "json_hr": 8, "horizon": 4, "path": str(city_file)}
    res = json.loads((out / "results.json").read_text())
    assert res["summary"]["dispatch/ohio/iql"]["violations"] == 0
    assert (out / "amod.png").exists()
    assert (out / "curves.png").stat().st_size > 1000  # learning curves of every offline run, next to the table


def test_scenario_and_preset_are_validated_when_the_config_is_built(tmp_path, city_file):
    with pytest.raises(ValueError, match="needs a scenario JSON"):
        AMoDExperimentConfig(preset="nyc-brooklyn")
    with pytest.raises(ValueError, match="unknown city preset 'paris'"):
        AMoDExperimentConfig(scenario=str(city_file), preset="paris")
    with pytest.raises(ValueError, match="no such file"):
        AMoDExperimentConfig(scenario=str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match=r"city\['path'\] is not a synthetic_city argument"):
        AMoDExperimentConfig(city={"path": str(city_file)})
    bad = json.loads(city_file.read_text())
    bad["demand"][0].pop("price")
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(SystemExit, match=r"bad.json: demand\[0\]: .* is missing \['price'\]"):
        main(["amod", "--scenario", str(tmp_path / "bad.json"), "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()  # refused before anything is written
