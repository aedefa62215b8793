"""benchmarks/rowtables_minilm.py --quick: a tiny random BERT in compress-pretrained's format (4-bit codebook a
row + 0.5% exact outliers), converted by the CPU runtime, every output checked against the weight-shared model."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from deepzip.runtime import rowtables

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("transformers")


def test_quick_rowtables_minilm_benchmark_runs_every_linear_from_its_codes():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rowtables_minilm.py"), "--quick"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {m.group(1): m.groups()[1:] for m in re.finditer(
        r"^\| ([a-z0-9 ]+) \| ([\d.]+) ms \| ([\d.]+)x \| ([^|]+) \| ([^|]+) \|$", done.stdout, flags=re.M)}
    int8 = {"deepzip auto int8", "deepzip codes int8"} if rowtables.available("int8") else set()
    assert set(rows) == {"torch fp32", "deepzip auto", "deepzip codes", "torch fp32 again"} | int8
    if rowtables.available():  # (needs AVX-512) the 2 blocks' 6 Linear layers each, all from their codes
        assert rows["deepzip codes"][2].strip() == "codes (row tables + outliers): 12"
    assert float(rows["deepzip codes"][3]) < 1e-5 and float(rows["deepzip auto"][3]) < 1e-5
    if int8:  # int8 rounding of the activations: near, not equal
        assert rows["deepzip codes int8"][2].strip() == "codes (row tables int8 + outliers): 12"
        assert 1e-6 < float(rows["deepzip codes int8"][3]) < 0.05
