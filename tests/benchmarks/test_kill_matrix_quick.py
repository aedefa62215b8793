"""benchmarks/kill_matrix.py --quick: kill -9 compress and lottery runs on digits at 2 threads, rerun, compare."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_kill_matrix_is_byte_identical(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kill_matrix.py"), "--quick",
                           "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "kill_matrix.json").read_text())
    assert report["threads"] == 2 and report["identical"]
    for kind in ("compress", "lottery"):
        result = report["kinds"][kind]
        assert result["final_rc"] == 0 and result["files_compared"] > 5
        assert result["half_written_after_a_kill"] == 0 and not result["differing"]
    assert report["kinds"]["compress"]["dz_sha256"]
