"""benchmarks/gpu.py --quick on the CPU: its parts run and write their JSON; the report reads the parts and
the gpu tests' JUnit XML (the real run happens on a lent GPU machine; benchmarks/results/gpu.md)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu.py"

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="1"
skipped="0" tests="3" time="12.5"><testcase classname="tests.gpu.test_cuda" name="test_a" time="1"/>
<testcase classname="tests.gpu.test_cuda" name="test_b" time="1"><failure message="x">boom</failure></testcase>
<testcase classname="tests.gpu.test_cuda" name="test_c" time="1"/></testsuite></testsuites>"""


def run(*args):
    done = subprocess.run([sys.executable, str(SCRIPT), *args, "--quiet"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_quick_parts_and_report(tmp_path):
    out = tmp_path / "out"
    run("lottery", "--out", str(out), "--device", "cpu", "--quick")
    run("compress", "--out", str(out), "--device", "cpu", "--quick", "--threads", "1")
    lottery = json.loads((out / "part_lottery.json").read_text())
    assert [level["step"] for level in lottery["levels"]] == ["level 0 (dense)", "level 1 (imp)"]
    assert 0.75 < lottery["levels"][1]["remaining"] < 0.85 and lottery["levels"][0]["test_acc"] > 0.7
    compress = json.loads((out / "part_compress_cpu.json").read_text())
    assert compress["threads"] == 1 and compress["compression"] > 10 and compress["seconds"] > 0

    # The report: on the CPU alone there is nothing to report as a GPU result ...
    run("report", "--out", str(out), "--results", str(tmp_path / "results"))
    assert "No part ran on a GPU" in (tmp_path / "results" / "gpu.md").read_text()
    # ... with a GPU part (its facts as a CUDA run records them) and the tests' XML, the tables and counts.
    (out / "gpu_tests.xml").write_text(JUNIT)
    cuda = {**compress, "part": "compress_cuda", "seconds": compress["seconds"] / 4,
            "facts": {**compress["facts"], "device": "cuda", "gpu": "Some GPU", "driver": "1.0", "cuda": "13.0"}}
    (out / "part_compress_cuda.json").write_text(json.dumps(cuda))
    run("report", "--out", str(out), "--results", str(tmp_path / "results"), "--command", "the command")
    md = (tmp_path / "results" / "gpu.md").read_text()
    assert "Card: Some GPU, driver 1.0" in md
    assert "2 passed, 1 failed, 0 skipped" in md and "tests.gpu.test_cuda::test_b" in md
    assert "GPU speedup over the CPU run: 4.00x" in md and "Command: `the command`" in md
    report = json.loads((tmp_path / "results" / "gpu.json").read_text())
    assert report["tests"]["failed"] == ["tests.gpu.test_cuda::test_b"] and report["lottery"]["model"] == "lenet300_100"
