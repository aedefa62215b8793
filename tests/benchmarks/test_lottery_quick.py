"""benchmarks/lottery.py --quick: the whole benchmark (both studies, two workers) on tiny settings."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_lottery_benchmark_runs_both_studies(tmp_path):
    env = {**os.environ, "DEEPZIP_RUNS": str(tmp_path)}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lottery.py"), "--quick", "--jobs", "2"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    # study A: one row per level, 50% -> 25% -> 13% of weights remaining (fc rate 0.5, output 0.25)
    remaining = re.findall(r"^\| (\d+\.\d) \| \d+\.\d\d \[", out, flags=re.M)
    assert remaining[:3] == ["50.5", "25.6", "13.1"]
    assert "Checks against the paper's claims" in out and "rewind to init (k=0) | lr rewinding (k=0)" in out
    figures = tmp_path / "lottery_quick_figures"
    assert (figures / "accuracy_vs_remaining.png").stat().st_size > 1000
    assert (figures / "rewinding.png").stat().st_size > 1000
    # a rerun resumes: every step is found finished, nothing is trained again
    again = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lottery.py"), "--quick"], env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout == out
