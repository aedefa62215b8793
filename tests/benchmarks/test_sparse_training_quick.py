"""benchmarks/sparse_training.py --quick: every method (and the IMP ticket) on tiny settings, resumable."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_sparse_training_benchmark(tmp_path):
    env = {**os.environ, "DEEPZIP_RUNS": str(tmp_path)}
    command = [sys.executable, str(ROOT / "benchmarks" / "sparse_training.py"), "--quick"]
    done = subprocess.run(command + ["--jobs", "2"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout[done.stdout.index("# Sparse-to-sparse training"):]
    rows = dict(re.findall(r"^\| ([A-Za-z:0-9 ()%-]+?) \| (\d+\.\d\d ± \d+\.\d\d \(\d\.\d{3}x, n=2\))", out, flags=re.M))
    assert list(rows) == ["dense", "static", "SET", "SNFS", "RigL", "IMP ticket", "SR-STE 2:4 (50%)"]
    flops = {k: float(re.search(r"\((\d\.\d{3})x", v).group(1)) for k, v in rows.items()}
    # FLOPs relative to dense: static and SET train at 10% density; RigL adds dense-gradient steps; SNFS a dense
    # weight gradient every step; SR-STE (2 x 0.5 + 1) / 3; IMP = its dense run plus two sparse levels
    assert flops["dense"] == 1.0 and flops["static"] == flops["SET"] == 0.1
    assert 0.1 < flops["RigL"] < 0.15 and flops["SNFS"] == 0.4 and flops["SR-STE 2:4 (50%)"] == 0.667
    assert 1.3 < flops["IMP ticket"] < 1.5
    assert (tmp_path / "sparse_training_quick" / "sparse_training.png").stat().st_size > 1000
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)  # all finished: nothing trains
    assert again.returncode == 0 and again.stdout.endswith(out)
