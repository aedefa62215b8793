"""benchmarks/runtime.py --quick: every section (LeNets, deepzip.load vs plain, a tiny BERT end to end, targets)."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deepzip.runtime import panels

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("transformers")


def test_quick_runtime_benchmark_runs_every_section():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "runtime.py"), "--quick"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "shared with other jobs" in out  # the output says the machine was loaded
    # deepzip.load: a row per model, each bit-identical to the state-keeping form
    loaded = re.findall(r"^\| (lenet300_100|lenet5|tiny BERT, 4-bit) \| \d+ \| \d+ \| [\d.]+x \| [\d.]+x \| (\w+) \|$",
                        out, flags=re.M)
    assert [m[0] for m in loaded] == ["lenet300_100", "lenet5", "tiny BERT, 4-bit"]
    assert all(m[1] == "yes" for m in loaded)
    # the encoder: every representation timed, codes hold fewer bytes than fp32 weights
    row = re.search(r"^\| Linear weight bytes \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \|( [\d,]+ \|)?"
                    r"( \(file\) \|)*$", out, flags=re.M)
    fp32, int8, _, codes = (int(g.replace(",", "")) for g in row.groups()[:4])
    assert int8 < fp32 / 3 and codes < fp32 / 1.9
    assert re.search(r"deepzip \(codes\) vs its dense 4-bit \d\.\de-0[5-9]|deepzip \(codes\) vs its dense 4-bit 0\.0e\+00", out)
    if panels.available("int8"):  # int8 panels: timed, and their rounding reported beside int8 dynamic's
        assert re.search(r"deepzip int8 vs its dense 4-bit \d\.\de[-+]\d\d; deepzip int8 \d\.\de[-+]\d\d", out)
        assert "panels fp32" in out
    # ONNX Runtime beside them where it is installed (the onnx extra), said plainly where not
    if importlib.util.find_spec("onnxruntime") is not None:
        assert re.search(r"^\|  \| fp32 \| int8 dynamic \| deepzip auto \| deepzip codes \|( deepzip int8 \|)? ORT fp32 \| "
                         r"ORT int8 \|$", out, flags=re.M)
        assert re.search(r"ORT fp32 \d\.\de-0[5-9]", out)  # the exported model computes the same
    else:
        assert "ONNX Runtime: not measured (onnxruntime not installed" in out
    # the whole LeNets: each with its per-layer twin beside it, and what the chain compiler did
    whole = re.findall(r"^\| (lenet300_100|lenet5), 1 thread\(s\) \| \d+ \| \d+ \| ([\d.]+)x \| ([\d.]+)x \|.*\| (.+?) \| .+ \|$",
                       out, flags=re.M)
    assert [w[0] for w in whole] == ["lenet300_100", "lenet5"]
    assert all(w[3].startswith(("not used (", "fc1: ", "conv1: ")) for w in whole), whole
    targets = re.findall(r"^\| (.+?) \| .+? \| (met|MISSED) \|$", out, flags=re.M)
    assert len(targets) == 8, targets
