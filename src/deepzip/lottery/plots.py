"""The Lottery Ticket paper's figures from an experiment directory (PNG and SVG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..report.plots import save_figure, subplots
from .results import aggregate, steps

LABELS = {"imp": "winning ticket (IMP)", "reinit": "random reinit", "random": "random pruning",
          "oneshot": "one-shot pruning"}
COLORS = {"imp": "tab:blue", "reinit": "tab:orange", "random": "tab:green", "oneshot": "tab:purple"}


def _save(fig, out: Path, name: str) -> list[Path]:
    png = save_figure(fig, out / f"{name}.png", extra_formats=("svg",))
    return [png, png.with_suffix(".svg")]


def _series(agg, variant: str, metric: str):
    rows = agg.get("dense", []) + agg.get(variant, [])
    xs = [r["remaining"] for r in rows]
    mean = [r[metric]["mean"] for r in rows]
    low = [r[metric]["mean"] - r[metric]["min"] for r in rows]
    high = [r[metric]["max"] - r[metric]["mean"] for r in rows]
    return xs, mean, [low, high]


def _vs_remaining(agg, variants, metric: str, ylabel: str, title: str, scale: float = 1.0):
    fig, ax = subplots(figsize=(6.4, 4.2))
    for variant in variants:
        if variant not in agg:
            continue
        xs, mean, err = _series(agg, variant, metric)
        ax.errorbar(xs, [scale * m for m in mean], yerr=[[scale * e for e in err[0]], [scale * e for e in err[1]]],
                    marker="o", markersize=3, capsize=2, label=LABELS[variant], color=COLORS[variant])
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("percent of weights remaining")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


def plot_experiment(directory: str | Path, out: str | Path | None = None, levels_shown: int = 5) -> list[Path]:
    """Write the figures; returns their paths. Error bars span min..max across replicates."""
    directory = Path(directory)
    out = Path(out) if out else directory / "plots"
    out.mkdir(parents=True, exist_ok=True)
    records = steps(directory)
    if not records:
        raise ValueError(f"{directory} has no finished steps to plot yet")
    agg = aggregate(records)
    n = max(r["replicate"] for r in records) + 1
    paths = []
    paths += _save(_vs_remaining(agg, ("imp", "reinit", "random"), "early_stop_test_acc", "test accuracy at early stop (%)",
                                 f"Test accuracy at the early-stop iteration ({n} replicate(s), min/max bars)", 100),
                   out, "accuracy_vs_remaining")
    paths += _save(_vs_remaining(agg, ("imp", "reinit", "random"), "test_acc", "test accuracy at end of training (%)",
                                 "Test accuracy at the end of training", 100), out, "final_accuracy_vs_remaining")
    paths += _save(_vs_remaining(agg, ("imp", "reinit", "random"), "early_stop_iteration", "early-stop iteration",
                                 "Early-stop iteration (minimum validation loss)"), out, "early_stop_vs_remaining")
    if "oneshot" in agg:
        paths += _save(_vs_remaining(agg, ("imp", "oneshot"), "early_stop_test_acc", "test accuracy at early stop (%)",
                                     "Iterative vs one-shot pruning", 100), out, "oneshot_vs_iterative")
    paths += _save(_curves(records, levels_shown), out, "accuracy_over_training")
    return paths


def _curves(records: list[dict[str, Any]], levels_shown: int):
    """Test accuracy over training iterations for a few levels of the winning ticket (replicate 0)."""
    chosen = sorted([r for r in records if r["replicate"] == 0 and r["variant"] in ("dense", "imp")],
                    key=lambda r: -r["remaining"])
    if len(chosen) > levels_shown:
        step = (len(chosen) - 1) / (levels_shown - 1)
        chosen = [chosen[round(i * step)] for i in range(levels_shown)]
    fig, ax = subplots(figsize=(6.4, 4.2))
    for r in chosen:
        xs, ys = zip(*r["curve"])
        ax.plot(xs, [100 * y for y in ys], label=f"{r['remaining']:.1f}% remaining")
    ax.set_xlabel("training iteration")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Winning tickets: test accuracy during training (replicate 0)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
