"""Read an experiment directory: per-step summaries, curves, and aggregates across replicates."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from ..checkpoint import load_model_file, read_json
from ..errors import CheckpointError

VARIANT_ORDER = ("dense", "imp", "reinit", "random", "oneshot")


def _remaining(step_dir: Path) -> float:
    """Percent of prunable weights remaining (from the step's mask; 100 for dense)."""
    mask_file = step_dir / "mask.safetensors"
    if not mask_file.exists():
        return 100.0
    state, _ = load_model_file(mask_file)
    total = sum(m.numel() for m in state.values())
    return 100.0 * sum(int(m.sum()) for m in state.values()) / max(total, 1)


def steps(directory: str | Path) -> list[dict[str, Any]]:
    """One record per finished step: replicate, level, variant, % remaining, summary, curve."""
    directory = Path(directory)
    if not (directory / "config.json").exists():
        raise ValueError(f"{directory} is not a lottery experiment directory (no config.json)")
    out = []
    for summary in sorted(directory.glob("replicate_*/level_*/**/summary.json")):
        step_dir = summary.parent
        level_dir = step_dir if step_dir.name.startswith("level_") else step_dir.parent
        variant = "dense" if step_dir == level_dir else step_dir.name
        metrics = read_json(step_dir / "metrics.jsonl", lines=True)
        out.append({"replicate": int(level_dir.parent.name.split("_")[1]), "level": int(level_dir.name.split("_")[1]),
                    "variant": variant, "remaining": _remaining(step_dir), **_summary(summary),
                    "curve": _curve(step_dir / "metrics.jsonl", metrics)})
    return out


def aggregate(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """{variant: [per level: remaining, mean / min / max / std of accuracies and early-stop iteration]}.

    The dense level counts as level 0 of every variant's curve.
    """
    by_key: dict[tuple[str, int], list[dict]] = {}
    for r in records:
        by_key.setdefault((r["variant"], r["level"]), []).append(r)
    out: dict[str, list[dict[str, Any]]] = {}
    for (variant, level), group in sorted(by_key.items(), key=lambda kv: (VARIANT_ORDER.index(kv[0][0]), kv[0][1])):
        row = {"level": level, "remaining": statistics.mean(g["remaining"] for g in group), "replicates": len(group)}
        for metric in ("test_acc", "early_stop_test_acc", "early_stop_iteration"):
            values = [g[metric] for g in group]
            row[metric] = {"mean": statistics.mean(values), "min": min(values), "max": max(values),
                           "std": statistics.pstdev(values)}
        out.setdefault(variant, []).append(row)
    return out


def status(directory: str | Path, expected: list[tuple[int, int, str]] | None = None) -> str:
    """A human summary: finished steps per variant and replicate, and what is missing."""
    records = steps(directory)
    lines = [f"{directory}: {len(records)} finished steps" + (f" of {len(expected)}" if expected else "")]
    per = {}
    for r in records:
        per.setdefault(r["variant"], {}).setdefault(r["replicate"], []).append(r["level"])
    for variant in VARIANT_ORDER:
        if variant in per:
            reps = ", ".join(f"replicate {k}: {len(v)} level(s), up to {max(v)}" for k, v in sorted(per[variant].items()))
            lines.append(f"  {variant:<8} {reps}")
    if expected:
        done = {(r["replicate"], r["level"], r["variant"]) for r in records}
        missing = [e for e in expected if e not in done]
        if missing:
            r, level, variant = missing[0]
            lines.append(f"  next: replicate {r}, level {level}, {variant} ({len(missing)} step(s) to go)")
        else:
            lines.append("  complete")
    return "\n".join(lines)


def _summary(path: Path) -> dict[str, Any]:
    summary = read_json(path)
    if not isinstance(summary, dict):
        raise CheckpointError(f"{path}: a step summary must be a JSON object")
    return summary


def _curve(path: Path, metrics: list) -> list[tuple[int, float]]:
    """(iteration, test accuracy) per evaluation; a row lacking them is a CheckpointError naming the line."""
    for i, m in enumerate(metrics):
        if not (isinstance(m, dict) and isinstance(m.get("iteration"), int) and isinstance(m.get("test_acc"), (int, float))):
            raise CheckpointError(f"{path}: line {i + 1} needs 'iteration' and 'test_acc'")
    return [(m["iteration"], m["test_acc"]) for m in metrics]
