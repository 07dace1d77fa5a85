"""City JSON loader: presets, and every schema violation is a ScenarioFileError naming the file and the record."""
import copy
import json

import numpy as np
import pytest

from ohio_layers.envs.amod.scenario import (CITY_PRESETS, ScenarioFileError, load_scenario_json,
                                            synthetic_reference_json)


@pytest.fixture(scope="module")
def city():
    return synthetic_reference_json(nlat=2, nlon=2, start_hour=8, minutes=180, fleet=40, seed=3)


def _write(tmp_path, data, name="city.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _broken(city, edit):
    data = copy.deepcopy(city)
    edit(data)
    return data


CASES = [
    ("record missing price", lambda d: d["demand"][5].pop("price"), r"demand\[5\]: .* is missing \['price'\]"),
    ("empty totalAcc", lambda d: d.__setitem__("totalAcc", []), r"totalAcc: is empty"),
    ("demand as a dict", lambda d: d.__setitem__("demand", {"0": d["demand"][0]}), r"demand: must be a list of records .* got a dict"),
    ("non-integer nlat", lambda d: d.__setitem__("nlat", 2.5), r"nlat: must be a positive integer, got 2.5"),
    ("string nlat", lambda d: d.__setitem__("nlat", "2"), r"nlat: must be a positive integer, got '2'"),
    ("negative rebalancing time", lambda d: d["rebTime"][7].__setitem__("reb_time", -3.0), r"rebTime\[7\]: negative 'reb_time' = -3.0"),
    ("fleet smaller than regions", lambda d: d["totalAcc"][1].__setitem__("acc", 3), r"totalAcc\[1\]: fleet acc = 3 .* smaller than the 4 regions"),
    ("region out of range", lambda d: d["demand"][2].__setitem__("origin", 9), r"demand\[2\]: 'origin' = 9 is not a region in \[0, 4\)"),
    ("non-numeric price", lambda d: d["demand"][0].__setitem__("price", "cheap"), r"demand\[0\]: 'price' must be a finite number"),
]


@pytest.mark.parametrize("label, edit, match", CASES, ids=[c[0] for c in CASES])
def test_each_schema_violation_is_a_named_error(tmp_path, city, label, edit, match):
    path = _write(tmp_path, _broken(city, edit))
    with pytest.raises(ScenarioFileError, match=match) as err:
        load_scenario_json(path)
    assert str(path) in str(err.value) and err.value.path == str(path)


def test_presets_aggregate_like_the_paper(tmp_path, city):
    path = _write(tmp_path, city)
    base = load_scenario_json(path, json_hr=8)
    shz = load_scenario_json(path, preset="shenzhen-downtown-west")
    assert shz.step_minutes == 3.0 and shz.info["json_hr"] == 8 and shz.info["preset"] == "shenzhen-downtown-west"
    np.testing.assert_allclose(shz.demand_rate, 2.5 * base.demand_rate)  # same steps, demand x2.5
    nyc = load_scenario_json(path, preset="nyc-brooklyn", json_hr=8)  # explicit arguments beat the preset
    assert nyc.step_minutes == 4.0 and nyc.info["demand_ratio"] == 9.0
    # 4-minute steps hold 4/3 of the per-step demand of 3-minute steps (first 12 minutes = 3 vs 4 steps)
    assert nyc.demand_rate[:3].sum() == pytest.approx(9.0 * base.demand_rate[:4].sum(), rel=1e-9)
    assert set(CITY_PRESETS) == {"nyc-brooklyn", "shenzhen-downtown-west"}
    with pytest.raises(ValueError, match="unknown city preset 'paris'"):
        load_scenario_json(path, preset="paris")
