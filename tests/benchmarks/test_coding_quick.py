"""benchmarks/coding.py --quick: LeNet-5's committed file re-encoded in format 1.2 is smaller, bit-identical."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_coding_benchmark(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "coding.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (result,) = json.loads((tmp_path / "coding.json").read_text())["results"]
    assert result["model"] == "lenet5" and result["new_version"] == "1.2" and result["old_version"] == "1.0"
    assert result["weights_bit_identical"] and result["rewrite_1_1_identical"]
    assert result["new_file_bytes"] < result["old_file_bytes"] and result["new_ratio"] > result["old_ratio"]
    for stream in result["streams"]:
        assert stream["bytes"] <= 1.005 * stream["bound_bytes"] + 8, stream
        assert stream["bytes"] <= stream["old_bytes"], stream
    fc1 = next(s for s in result["streams"] if s["tensor"] == "fc1.weight" and s["stream"] == "positions")
    assert fc1["bound_bytes"] < fc1["old_order0_bytes"]  # the context model's bound is below the order-0 one
    assert "| lenet5 |" in (tmp_path / "coding.md").read_text()
