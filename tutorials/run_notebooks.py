"""Execute every tutorial notebook in place (outputs are kept, so they read as executed)."""
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def run(path: Path, timeout: int = 600) -> None:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    nbformat.write(nb, path)


if __name__ == "__main__":
    for p in sorted(HERE.glob("*.ipynb")) if len(sys.argv) < 2 else [Path(a) for a in sys.argv[1:]]:
        print("executing", p.name)
        run(p)
