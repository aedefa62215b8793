"""Shared by the benchmark scripts: where results go, the machine they ran on, JSON + Markdown output."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = Path(os.environ.get("DEEPZIP_RUNS", ROOT / "runs"))
sys.path.insert(0, str(ROOT / "src"))


def machine() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine(),
            "date": time.strftime("%Y-%m-%d")}


def write_results(name: str, payload: dict, markdown: str, directory: Path = RESULTS, script: str | None = None) -> None:
    """Write <directory>/<name>.json and <name>.md (directory: benchmarks/results unless told; ``script``:
    the benchmark that wrote them when its name is not ``name``)."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), **payload}
    (directory / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    header = f"<!-- written by benchmarks/{script or name}.py; re-run it to update -->\n"
    (directory / f"{name}.md").write_text(header + markdown.rstrip() + "\n")
    print(markdown)


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
