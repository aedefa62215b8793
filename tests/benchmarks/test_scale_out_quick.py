"""benchmarks/scale_out.py --quick: a tiny lottery sweep and a tiny sparse-training sweep with the local pool
(--jobs 1, 2) and Ray (1, 2 workers)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_quick_scale_out_benchmark_gives_identical_results_and_an_estimate(tmp_path):
    pytest.importorskip("ray")
    env = {**os.environ, "DEEPZIP_RUNS": str(tmp_path)}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scale_out.py"), "--quick"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "scale_out_quick.json").read_text())
    assert report["identical_results"] and report["sweep"]["steps"] == 5
    assert set(report["wall_s"]) == {"local --jobs 1", "local --jobs 2", "ray, 1 worker", "ray, 2 workers"}
    estimate = report["estimate_s"]
    assert estimate["32"] >= report["critical_path_s"] - 0.01  # no number of machines beats the critical path
    assert estimate["1"] >= estimate["2"] >= estimate["32"]
    assert "2 workers cannot show more than ~2x" in done.stdout and "| ray, 2 workers |" in done.stdout
    sweep = report["sparse_sweep"]
    assert sweep["identical_results"] and sweep["sweep"]["runs"] == 2
    assert set(sweep["wall_s"]) == set(report["wall_s"]) and sweep["speedup_vs_local_jobs1"]["local --jobs 1"] == 1.0
    assert sweep["estimate_s"]["32"] >= sweep["per_run_s"]["longest"] - 0.05  # independent runs: the longest bounds it
    assert "## A sparse-training sweep" in done.stdout
    assert not list(tmp_path.glob("scale_out_*/"))  # the sweep directories are removed
