"""The papers' plots, as PNG files (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def sensitivity_plot(curves: Mapping[str, Sequence[tuple[float, float]]], path: str | Path, title: str = "") -> Path:
    """Accuracy vs sparsity with each layer pruned alone (Han et al. 2015, Figure 5)."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, curve in curves.items():
        xs, ys = zip(*curve)
        ax.plot([100 * x for x in xs], [100 * y for y in ys], marker="o", markersize=3, label=name)
    ax.set_xlabel("parameters pruned away (%)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or "sensitivity: each layer pruned alone, no retraining")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
