"""examples/imp_custom_cnn: a user's CNN and Dataset by import path, IMP with rewinding, killed and resumed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "imp_custom_cnn"
ARGS = ["lottery", "run", "--model", "nets:small_cnn", "--dataset", "digits_data:splits", "--levels", "2",
        "--replicates", "1", "--train-epochs", "2", "--train-batch-size", "32", "--reset", "rewind",
        "--rewind-iteration", "20", "--controls", "reinit", "--quiet"]


def deepzip(runs: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "DEEPZIP_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "deepzip", "--threads", "1", *ARGS, "--runs-dir", str(runs)],
                            cwd=EXAMPLE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)


def results(runs: Path) -> dict:
    """Every step's summary and metrics (without wall-clock columns)."""
    out = {}
    for path in sorted(runs.glob("lottery_*/**/summary.json")):
        metrics = [{k: v for k, v in json.loads(line).items() if k != "elapsed_s"}
                   for line in (path.parent / "metrics.jsonl").read_text().splitlines()]
        out[str(path.parent.relative_to(runs))] = (json.loads(path.read_text()), metrics)
    return out


def test_example_runs_by_import_path_and_resumes_after_kill(tmp_path):
    whole = deepzip(tmp_path / "whole")
    assert whole.wait(timeout=600) == 0, whole.stderr.read()
    expected = results(tmp_path / "whole")
    assert len(expected) == 5  # dense, and imp + reinit at each of 2 levels

    runs = tmp_path / "killed"
    killed = deepzip(runs)
    deadline = time.time() + 300
    while not list(runs.glob("lottery_*/replicate_0/level_0/summary.json")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # into the next step
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert 0 < len(results(runs)) < 5  # it really stopped part way
    resumed = deepzip(runs)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    assert results(runs) == expected
