"""Item 9 of issue 15 (synthetic city): impossible sizes get named errors."""
import pytest

from ohio_layers.envs.amod.scenario import synthetic_city


@pytest.mark.parametrize("kwargs, match", [({"nlat": 0}, "nlat must be an int >= 1"), ({"nlon": 2.5}, "nlon"),
                                           ({"nlat": 1, "nlon": 1}, "at least 2 regions"), ({"horizon": 0}, "horizon")])
def test_synthetic_city_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic_city(**kwargs)
