"""benchmarks/gpu_compile.py: every tuned configuration of the GPU kernels compiled for an H100 here, without a
GPU (Triton's offline compiler and its ptxas). What would otherwise fail only on a lent GPU: a configuration
that does not compile or spills; and the sliced layout's point, read from the PTX: its columns and codes
are loaded 16 bytes at a time, where CSR's rows, starting anywhere, are loaded byte by byte, and at batch
> 1 an entry's inputs (from the transposed input) are gathered 16 bytes at a time."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
triton = pytest.importorskip("triton")
PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
pytestmark = pytest.mark.skipif(not PTXAS.exists(), reason="Triton's CUDA backend (ptxas) is not installed")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_compile")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # (tests/conftest.py sets it)
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_compile.py"), "--out", str(out),
                           "--json", str(out / "rows.json")], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (out / "gpu_compile.md").read_text().startswith("<!-- written by benchmarks/gpu_compile.py")
    return json.loads((out / "rows.json").read_text())["rows"]


def test_every_tuned_configuration_compiles_without_spills(compiled):
    from deepzip.runtime import triton_kernels as tk

    tuned = [tk._csr_mv_tuned, tk._csr_mm_tuned, tk._sliced_mv_tuned, tk._sliced_mm_tuned, tk._codes_mv_tuned,
             tk._codes_mm_tuned]
    assert len(compiled) == sum(len(t.configs) for t in tuned)
    assert [r for r in compiled if "error" in r] == []
    assert all(r["spill_bytes"] == 0 and 16 <= r["registers"] <= 255 for r in compiled)


def test_the_sliced_layout_loads_16_bytes_at_a_time_and_csr_does_not(compiled):
    wide = [r for r in compiled if r["kernel"] == "sliced_mv" and r["config"]["BLOCK_R"] == 16]
    assert wide and all(r["loads"].get("ld.global.v4.b32", 0) >= 1 for r in wide)
    assert all("ld.global.b8" not in r["loads"] and "ld.global.b16" not in r["loads"] for r in wide)
    batched = [r for r in compiled if r["kernel"] == "sliced_mm" and r["config"]["BLOCK_B"] == 16]
    assert batched and all(r["loads"].get("ld.global.v4.b32", 0) >= 4 for r in batched)  # 16 inputs of an entry
    csr = [r for r in compiled if r["kernel"] == "csr_mv"]
    assert csr and all(r["loads"].get("ld.global.b8", 0) > 0 for r in csr)  # its codes, a byte a load
