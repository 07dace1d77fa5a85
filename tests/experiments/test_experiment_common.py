"""The shared experiment machinery: stale job results rerun, workers die with their parent."""
import os
import signal
import subprocess
import sys
import textwrap
import time

from ohio_layers.experiments.common import run_jobs

JOB_MODULE = '''
import os, time
from pathlib import Path

def sleepy(job):
    Path(job["pid_dir"], f"{os.getpid()}.pid").write_text("")
    time.sleep(120)
    return {}
'''

DRIVER = '''
import sys
from pathlib import Path
from ohio_layers.experiments.common import run_jobs
from jobmod import sleepy
if __name__ == "__main__":
    out = Path(sys.argv[1])
    run_jobs(sleepy, [{"name": f"j{i}", "pid_dir": str(out)} for i in range(2)], out / "runs", workers=2)
'''


def test_a_stale_job_result_is_rerun_not_reused(tmp_path):
    calls = []

    def fn(job):
        calls.append(job["x"])
        return {"y": 2 * job["x"]}

    assert run_jobs(fn, [{"name": "a", "x": 1}], tmp_path, workers=1)[0]["y"] == 2
    assert run_jobs(fn, [{"name": "a", "x": 1}], tmp_path, workers=1)[0]["y"] == 2 and calls == [1]
    assert run_jobs(fn, [{"name": "a", "x": 5}], tmp_path, workers=1)[0]["y"] == 10 and calls == [1, 5]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie has exited
        return f.read().split()[2] != "Z"


def test_workers_die_when_the_experiment_is_killed(tmp_path):
    (tmp_path / "jobmod.py").write_text(textwrap.dedent(JOB_MODULE))
    (tmp_path / "driver.py").write_text(textwrap.dedent(DRIVER))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), str(tmp_path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while len(list(tmp_path.glob("*.pid"))) < 2 and time.time() < deadline:
            time.sleep(0.2)
        workers = [int(p.stem) for p in tmp_path.glob("*.pid")]
        assert len(workers) == 2, "workers did not start"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 10
        while any(_alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), "worker processes outlived the killed experiment"
    finally:
        proc.kill()
        for p in tmp_path.glob("*.pid"):
            try:
                os.kill(int(p.stem), signal.SIGKILL)
            except ProcessLookupError:
                pass
