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
    check_minilm(report, (tmp_path / "gpu_runtime.md").read_text())
    if torch.cuda.is_available():
        assert report["peak"]["bytes_per_s"] > 1e11
        for row in report["layers"]:
            ours = {k: v for k, v in row["results"].items() if k.startswith("deepzip")}
            assert ours and all(v["max_abs_error"] < 1e-4 and v["seconds"] > 0 for v in ours.values()), row
        assert all("graph_seconds" in m for m in report["models"]), report["models"]
        for m in report["models"]:  # fuse='off' converted a model of its own, not the one fuse='auto' converted
            assert [d["layer"] for d in m["decisions_fuse_off"]] == [d["layer"] for d in m["decisions"]] != [], m
            assert "deepzip fuse=off" in m["eager_seconds"] and "fused" in m["fusion"], m
    else:
        rows = report["interpreter_rows"]
        assert {r["batch"] for r in rows} == {1, 3}
        assert all(v["max_abs_error"] < 1e-5 for r in rows for v in r["results"].values())
        assert {k for r in rows for k in r["results"]} == {"csr", "sliced", "codes"}


TINY_LINEARS = 2 * 6  # the tiny BERT's 2 layers: query, key, value, attention output, intermediate, output


def check_minilm(report, markdown):
    """The whole-encoder part of --quick: a tiny random BERT compressed as the real MiniLM folder is (4-bit
    Linear layers, 6-bit word embeddings), read back, its Linear layers as the GPU runtime's layers."""
    section = report["minilm"]
    assert "error" not in section and "skipped" not in section, section
    meta = section["meta"]
    assert meta["compression"]["linear_bits"] == 4 and meta["compression"]["word_embedding_bits"] == 6
    assert meta["agreement_with_fp32"]["file_decodes_exactly"] is True
    assert meta["dz_bytes"] < meta["fp32_state_bytes"] / 1.5
    assert "Whole MiniLM encoder" in markdown
    if torch.cuda.is_available():  # runtime.load(device="cuda") calibrated per batch, timed against dense
        rows = section["rows"]
        assert [r["batch"] for r in rows] == [1, 16] and all("error" not in r for r in rows), rows
        for r in rows:
            assert sum(r["kernels"].values()) == TINY_LINEARS
            assert r["errors"]["deepzip"]["max_abs_diff"] < 1e-4 and r["errors"]["deepzip"]["mean_cosine"] > 0.99999
            assert all(r["graph_seconds"][k] > 0 for k in ("dense fp32", "dense fp16", "deepzip"))
        return
    # decoded, every Linear weight holds at most 16 values and the word embeddings at most 64: the codebooks
    assert 1 < section["distinct_weights"]["linear_max"] <= 16
    assert 16 < section["distinct_weights"]["word_embeddings"] <= 64
    rows = section["rows"]
    assert {"csr", "codes"} <= {r["kind"] for r in rows}
    assert {r["batch"] for r in rows} == {1, 2} and all(r["tokens"] == 8 for r in rows)
    for r in rows:  # the GPU layers' kernels (interpreted) agree with the dense decoded model to fp32 rounding
        assert r["gpu_layers"] == TINY_LINEARS, r
        assert r["max_abs_diff"] < 1e-5 and r["mean_cosine"] > 0.999999, r


def test_minilm_folder_errors_say_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    gpu_minilm = pytest.importorskip("gpu_minilm")
    pytest.importorskip("transformers")
    assert gpu_minilm.PREPARE in gpu_minilm.folder_problem(tmp_path)  # empty: how to make it
    markdown = "\n".join(gpu_minilm.markdown(gpu_minilm.run(tmp_path, False, None, None), str, str))
    assert "Not run:" in markdown and "model.dz, config.json, meta.json" in markdown
    folder = gpu_minilm.tiny_folder(tmp_path / "tiny")
    assert gpu_minilm.folder_problem(folder) is None
    config, meta, path = gpu_minilm.read(folder)
    assert config.hidden_size == 32 and meta["dz_sha256"] == gpu_minilm.sha256(path)
    path.write_bytes(path.read_bytes()[:-1] + b"\0")  # not the file meta.json describes
    with pytest.raises(ValueError, match="sha256"):
        gpu_minilm.read(folder)


def test_the_whole_model_table_keeps_one_row_a_model(monkeypatch):
    """The whole-model rows with both fuse settings, a fusion reason as CUDA words one (several lines, with
    a pipe), and an error row: one table row each, as many cells as the header."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    gpu_runtime = pytest.importorskip("gpu_runtime")
    seconds = {"dense fp32": 3e-5, "dense fp16": 3e-5, "deepzip": 1e-5, "deepzip fuse=off": 3.2e-5}
    row = {"model": "lenet5", "batch": 1, "fusion": {"fused": True, "reason": "fuse='on'", "kind": "cuda graph"},
           "decisions": [{"layer": "fc1", "kernel": "csr"}], "decisions_fuse_off": [{"layer": "fc1", "kernel": "dense"}],
           "graph_seconds": dict(seconds, deepzip=0.8e-5), "eager_seconds": seconds}
    eager = dict(row, fusion={"fused": False, "reason": "the model cannot be captured (RuntimeError: CUDA error: "
                              "a | b\nCUDA kernel errors might be asynchronously reported)"})
    models = [row, eager, {"model": "lenet300_100", "batch": 16, "error": "RuntimeError: boom"}]
    report = {"mode": "full", "environment": {"torch": "-", "triton": "-", "date": "-"}, "models": models,
              "targets": gpu_runtime.targets([], models)}
    lines = gpu_runtime.markdown(report).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| model | batch |"))
    table = lines[header:header + 2 + len(models)]
    assert len(table[2:]) == len(models) and lines[header + 2 + len(models)] == ""
    cells = lambda line: len(line.replace("\\|", "").split("|")) - 2  # noqa: E731
    assert {cells(line) for line in table} == {cells(table[0])} == {9}
    assert "3.00x (graph)" in table[2] and "0.94x (fc1=dense)" in table[2] and "no graph: " in table[3]
    assert report["targets"]["the same, called eagerly (the default and fuse='off', each against dense fp32 called "
                              "eagerly)"] == "missed"  # fuse='off' at 0.94x of dense
