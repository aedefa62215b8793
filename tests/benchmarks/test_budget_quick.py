"""benchmarks/budget.py --quick: two budgets on the digits data, each met by the real file; a rerun resumes."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_budget_benchmark(tmp_path):
    env = {**os.environ, "DEEPZIP_RUNS": str(tmp_path)}
    run = [sys.executable, str(ROOT / "benchmarks" / "budget.py"), "--quick"]
    done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = re.findall(r"^\| budget (\d+)x \| (\d+\.\d)x \| [\d,]+ \| [\d.]+% \| [-+\d.]+ \| (\w+) \|", done.stdout, re.M)
    assert [r[0] for r in rows] == ["15", "25"]
    for target, ratio, verdict in rows:
        assert verdict == "met" and float(ratio) >= float(target)
    again = subprocess.run(run, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0
    strip = lambda text: re.sub(r"\| \d+ \| sparsity", "| s | sparsity", text)  # wall seconds differ
    assert strip(again.stdout) == strip(done.stdout)
