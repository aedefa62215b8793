"""benchmarks/panels.py --quick: every contender checked against its reference, then timed."""

import re
import subprocess
import sys
from pathlib import Path

from deepzip.runtime import panels

ROOT = Path(__file__).resolve().parents[2]


def test_quick_panels_benchmark_times_every_kernel_the_cpu_has():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "panels.py"), "--quick"], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    header = re.search(r"^\| layer \| rows \| torch fp32 us \| (.+) \|$", done.stdout, flags=re.M).group(1).split(" | ")
    expected = ["torch int8 dynamic"] + (["panels fp32"] if panels.available("fp32") else []) \
        + (["panels int8 (VNNI)"] if panels.available("int8") else []) + (["panels int8 (AMX)"] if panels.amx_available() else [])
    assert header == expected
    assert re.search(r"^\| attention q/k/v/output 384->384 \| 17 \| \d+ \|( [\d.]+x \|)+$", done.stdout, flags=re.M)
