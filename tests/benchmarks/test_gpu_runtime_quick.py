"""benchmarks/gpu_runtime.py --quick: on CUDA, tiny layers timed for real; without, the kernels checked in
Triton's interpreter against dense torch. Skipped where Triton is not installed."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("triton")


def test_quick_gpu_runtime_benchmark(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_runtime.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_runtime.json").read_text())
    assert (tmp_path / "gpu_runtime.md").read_text().startswith("<!-- written by benchmarks/gpu_runtime.py")
    if torch.cuda.is_available():
        assert report["peak"]["bytes_per_s"] > 1e11
        for row in report["layers"]:
            ours = {k: v for k, v in row["results"].items() if k.startswith("deepzip")}
            assert ours and all(v["max_abs_error"] < 1e-4 and v["seconds"] > 0 for v in ours.values()), row
        assert all("graph_seconds" in m for m in report["models"]), report["models"]
    else:
        rows = report["interpreter_rows"]
        assert {r["batch"] for r in rows} == {1, 3}
        assert all(v["max_abs_error"] < 1e-5 for r in rows for v in r["results"].values())
        assert {k for r in rows for k in r["results"]} == {"csr", "sliced", "codes"}
