"""Item 9 of issue 15 (data part): bad window arguments and corrupt files get named errors."""
import numpy as np
import pytest

from helpers import replace_zip_member
from ohio_layers.data import Dataset
from ohio_layers.data.dataset import window_starts


def small():
    return Dataset({"terminals": np.zeros(6, bool), "episode_ids": np.zeros(6, np.int64), "x": np.arange(6.0)})


@pytest.mark.parametrize("k, stride, match", [(2, 0, "stride must be an int >= 1"), (2, 1.5, "stride"),
                                              (0, None, "k must be an int >= 1"), ("2", None, "k must")])
def test_window_arguments(k, stride, match):
    with pytest.raises(ValueError, match=match):
        window_starts(small(), k, stride)


def test_corrupt_metadata_and_files_name_the_file(tmp_path):
    path = tmp_path / "d.npz"
    small().save(path)
    replace_zip_member(path, "__metadata__.json", b"{not json")
    with pytest.raises(ValueError, match=r"d\.npz: corrupt dataset metadata"):
        Dataset.load(path)
    (tmp_path / "e.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"e\.npz: not a readable dataset file"):
        Dataset.load(tmp_path / "e.npz")
