"""benchmarks/learned_sparsity.py --quick: magnitude vs L0 on digits at 90%, both exact, both measured."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_learned_sparsity_benchmark(tmp_path):
    env = {**os.environ, "DEEPZIP_RUNS": str(tmp_path)}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "learned_sparsity.py"), "--quick"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = re.findall(r"^\| 90% \| (\w+) \| (\d+\.\d+)% \| (\d+\.\d+)% \|", done.stdout, re.M)
    assert [r[0] for r in rows] == ["magnitude", "l0"]
    for _, measured, test_acc in rows:
        assert float(measured) == 90.0 and float(test_acc) > 70.0
    assert not (ROOT / "benchmarks" / "results" / "learned_sparsity_quick.json").exists()
