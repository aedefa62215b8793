"""benchmarks/pretrained.py --quick: every row on a tiny random BERT (no download, no text)."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_pretrained_benchmark(tmp_path):
    env = {**os.environ, "DEEPZIP_RUNS": str(tmp_path), "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pretrained.py"), "--quick"], env=env,
                          capture_output=True, text=True, timeout=900, cwd=ROOT / "benchmarks")
    assert done.returncode == 0, done.stderr[-2000:]
    table = (tmp_path / "pretrained_quick" / "pretrained.md").read_text()
    rows = {m[0]: (float(m[1]), float(m[2]), float(m[3]))
            for m in re.findall(r"^\| ([^|]+?) \| (\d\.\d{4}) \| (\d\.\d{3}) \| (\d+\.\d\d)x \|", table, flags=re.M)}
    w = "weighted per-row"
    assert list(rows) == [
        "fp16", "int8 dynamic (torch)", "k-means 8-bit", "k-means 6-bit", "k-means 5-bit", "k-means 4-bit",
        f"{w} 4-bit", f"{w} 3-bit", f"{w} 3-bit + 0.5% outliers", f"{w} 4-bit + 0.5% outliers + error feedback",
        f"{w} 3-bit + 0.5% outliers + error feedback", "magnitude 50%", "Wanda 50%", "SparseGPT 50%",
        f"Wanda 50% + {w} 4-bit + 0.5% outliers + error feedback",
        f"SparseGPT 50% + {w} 4-bit + 0.5% outliers + error feedback",
        f"SparseGPT 50% + {w} 3-bit + 0.5% outliers + error feedback",
        f"{w} 4-bit + 0.5% outliers + error feedback + distill",
        f"SparseGPT 50% + {w} 3-bit + 0.5% outliers + error feedback + distill"]
    assert rows["fp16"][2] == 2.0
    # pruning half of the block Linears (the embeddings, half the tiny model, stay dense); fewer bits, smaller files
    assert 1.3 < rows["Wanda 50%"][2] < 1.6
    assert rows["k-means 8-bit"][2] < rows["k-means 6-bit"][2] < rows["k-means 4-bit"][2]
    assert rows[f"{w} 4-bit"][2] < rows[f"{w} 3-bit"][2]
    # distilling the centroids from the original brings the embeddings closer
    assert rows[f"{w} 4-bit + 0.5% outliers + error feedback + distill"][0] > \
        rows[f"{w} 4-bit + 0.5% outliers + error feedback"][0]
    assert all(0.0 <= top1 <= 1.0 and cosine > 0.9 for cosine, top1, _ in rows.values())
    assert "## Targets (issue #16)" in table and (tmp_path / "pretrained_quick" / "pretrained.png").stat().st_size > 0
    # every row is cached: a rerun resumes (here: only reads the cache)
    again = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pretrained.py"), "--quick", "--cached-only"],
                           env=env, capture_output=True, text=True, timeout=900, cwd=ROOT / "benchmarks")
    assert again.returncode == 0 and (tmp_path / "pretrained_quick" / "pretrained.md").read_text() == table
