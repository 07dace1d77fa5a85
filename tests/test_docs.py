"""The documentation builds with warnings as errors (mkdocs --strict, API pages from the docstrings)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                          "-d", str(tmp_path / "site")], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "inverse" / "index.html").read_text()
    assert "InverseProblem" in api and "LevenbergMarquardt" in api and "parse_spec" in api  # docstrings rendered
    assert (tmp_path / "site" / "byod" / "index.html").exists()
    shutil.rmtree(tmp_path / "site")
