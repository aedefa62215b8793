"""benchmarks/fuzz_dz.py --quick: every mutation family on every seed, in a guarded worker, no failure."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_fuzzing_finds_only_format_errors_and_clean_loads():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fuzz_dz.py"), "--quick"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "**0 failures**" in out
    assert re.search(r"other exception 0; crash 0; hang 0", out)
    families = re.findall(r"^\| (\w+) \| (recomputed|as mutated) \| ([\d,]+) \|", out, flags=re.M)
    assert {f for f, _, _ in families} >= {"hdr_field", "crafted", "section_bytes", "stacked", "hdr_text_bitflip"}
    assert all(int(n.replace(",", "")) > 0 for _, _, n in families)
