"""docs/reliability.md is what the probes of tests/reliability_probes.py actually get (issue 15).

Regenerate after changing a probe or a behaviour: ``python tests/test_reliability_table.py``.
"""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from reliability_probes import PROBES, render, run  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"


@pytest.mark.parametrize("probe", PROBES, ids=lambda p: f"{p.entry}: {p.bad_input}")
def test_no_probe_ends_in_a_silent_or_unnamed_outcome(probe):
    out = run(probe)
    assert out.startswith(("named error", "flagged", "correct")), out


def test_docs_table_matches_the_behaviour():
    assert DOC.read_text() == render(), "docs/reliability.md is stale: run `python tests/test_reliability_table.py`"


if __name__ == "__main__":
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render())
    print(f"wrote {DOC} ({len(PROBES)} probes)")
