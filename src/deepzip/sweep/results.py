"""Read a sweep directory: one record per finished run, the grid's summary table, and its status."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from ..checkpoint import read_json
from ..config import from_dict, hash_configs
from ..errors import CheckpointError
from ..train import TrainConfig
from .config import Run, SweepConfig, plan


def load_plan(directory: str | Path) -> list[Run]:
    """The runs of the sweep whose ``config.json`` is in ``directory``."""
    config = Path(directory) / "config.json"
    if not config.is_file():
        raise ValueError(f"{directory} is not a sweep directory (no config.json); give the directory "
                         f"'deepzip sweep run' printed")
    raw = read_json(config)
    try:
        return plan(from_dict(TrainConfig, raw["train"]), from_dict(SweepConfig, raw["sweep"]), raw["options"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{config} does not hold valid sweep settings ({exc}); it must be the config.json "
                              f"a sweep wrote") from None


def run_dir(directory: str | Path, run: Run) -> Path:
    return Path(directory) / run_name(run)


def run_name(run: Run) -> str:
    """The run's directory name: the one ``deepzip sparse-train`` gives the same settings."""
    return hash_configs("sparse", train=run.train, sparse=run.sparse)


def done(directory: str | Path, run: Run) -> bool:
    # sparse.json is the last file a sparse-training run writes
    return (run_dir(directory, run) / "sparse.json").exists()


def records(directory: str | Path, runs: list[Run] | None = None) -> list[dict[str, Any]]:
    """One record per finished run, in grid order: method, sparsity, seed, the run's summary (test_acc,
    early_stop_test_acc, ...) and its sparse summary (achieved sparsity, flops_ratio, updates)."""
    runs = load_plan(directory) if runs is None else runs
    out = []
    for run in runs:
        if not done(directory, run):
            continue
        where = run_dir(directory, run)
        summary, sparse = read_json(where / "summary.json"), read_json(where / "sparse.json")
        if not isinstance(summary, dict) or not isinstance(sparse, dict):
            raise CheckpointError(f"{where}: summary.json and sparse.json must be JSON objects")
        method, sparsity, seed = run.key
        out.append({"method": method, "sparsity": sparsity, "seed": seed, "run_dir": where.name, **summary,
                    "achieved_sparsity": sparse.get("sparsity"), "flops_ratio": sparse.get("flops_ratio"),
                    "updates": sparse.get("updates")})
    return out


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.mean(values)
    return f"{mean:.4f}" if len(values) == 1 else f"{mean:.4f} ± {statistics.pstdev(values):.4f}"


def table(runs: list[Run], found: list[dict[str, Any]]) -> str:
    """The grid, one row per (method, sparsity): runs finished, test accuracy (mean ± std over seeds),
    its range, the early-stopping accuracy and the training FLOPs relative to dense."""
    groups: dict[tuple[str, float], dict] = {}
    for run in runs:
        groups.setdefault(run.key[:2], {"of": 0, "found": []})["of"] += 1
    for record in found:
        groups[record["method"], record["sparsity"]]["found"].append(record)
    header = ["method", "sparsity", "runs", "test acc (mean ± std)", "min - max", "early-stop acc", "FLOPs vs dense"]
    rows = []
    for (method, sparsity), group in groups.items():
        accs = [r["test_acc"] for r in group["found"]]
        flops = [r["flops_ratio"] for r in group["found"] if r["flops_ratio"] is not None]
        rows.append([method, f"{sparsity:g}", f"{len(accs)}/{group['of']}", _spread(accs),
                     f"{min(accs):.4f} - {max(accs):.4f}" if accs else "-",
                     _spread([r["early_stop_test_acc"] for r in group["found"]]),
                     f"{statistics.mean(flops):.3f}" if flops else "-"])
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in [header, ["-" * w for w in widths], *rows]]
    return "\n".join(lines)


def status(directory: str | Path, runs: list[Run] | None = None) -> str:
    """A human summary: runs finished of the grid, the table, and what is next."""
    runs = load_plan(directory) if runs is None else runs
    found = records(directory, runs)
    lines = [f"{directory}: {len(found)} finished runs of {len(runs)}", table(runs, found)]
    missing = [run for run in runs if not done(directory, run)]
    if missing:
        method, sparsity, seed = missing[0].key
        lines.append(f"next: {method} at sparsity {sparsity:g}, seed {seed} ({len(missing)} run(s) to go)")
    else:
        lines.append("complete")
    return "\n".join(lines)
