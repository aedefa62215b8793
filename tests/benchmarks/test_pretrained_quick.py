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
    assert list(rows) == ["fp16", "int8 dynamic (torch)", "magnitude 50%", "magnitude 50% + distill",
                          "magnitude 50% + distill + 8-bit k-means", "Wanda 50%", "Wanda 50% + distill",
                          "Wanda 50% + distill + 8-bit k-means", "SparseGPT 50%", "SparseGPT 50% + distill",
                          "SparseGPT 50% + distill + 8-bit k-means", "OWL+Wanda 50%", "OWL+SparseGPT 50%",
                          "SparseGPT 2:4"]
    assert rows["fp16"][2] == 2.0
    # pruning half of the block Linears (the embeddings, half the tiny model, stay dense) and 8-bit sharing
    assert 1.3 < rows["Wanda 50%"][2] < 1.6 and rows["Wanda 50% + distill + 8-bit k-means"][2] > 2.2
    assert all(0.0 <= top1 <= 1.0 and cosine > 0.9 for cosine, top1, _ in rows.values())
