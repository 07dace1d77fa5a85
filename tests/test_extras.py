"""The core imports without any extra; using an extra's feature names the extra to install."""
import subprocess
import sys
import textwrap

BLOCK = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = {"mujoco", "robosuite", "cvxpy", "cvxpylayers", "qpth", "highspy", "matplotlib", "theseus"}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"No module named {name!r} (blocked by the test)")
    sys.meta_path.insert(0, Block())
""")


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_core_imports_without_extras():
    out = run("""
        import ohio_layers, ohio_layers.lowlevel, ohio_layers.inverse, ohio_layers.rl, ohio_layers.data
        import ohio_layers.envs, ohio_layers.cli
        print("ok")
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def test_missing_extra_is_named():
    out = run("""
        import ohio_layers.envs
        try:
            ohio_layers.envs.GoalReacherEnv
        except ImportError as err:
            print("ERR", err)
    """)
    assert out.returncode == 0, out.stderr
    assert "pip install 'ohio_layers[mujoco]'" in out.stdout
