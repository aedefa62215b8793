"""The papers' plots, as PNG files (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure  # the object API: no pyplot, no global backend to set

from ..checkpoint import atomic_write


def subplots(*args, figsize=(6, 4), dpi=100, **kwargs):
    """(figure, axes) as ``pyplot.subplots`` gives them, without pyplot's global state."""
    fig = Figure(figsize=figsize, dpi=dpi)
    return fig, fig.subplots(*args, **kwargs)


def save_figure(fig, path: str | Path, extra_formats: tuple[str, ...] = ()) -> Path:
    """Lay out, write ``path`` (and the same figure in ``extra_formats``, e.g. svg), close the figure."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_atomic(fig, path)
    for suffix in extra_formats:
        _save_atomic(fig, path.with_suffix(f".{suffix}"))
    return path


def _save_atomic(fig, path: Path) -> None:
    """savefig into a temporary file renamed over ``path``: never a half-written plot under its name."""
    fmt = path.suffix[1:].lower() or matplotlib.rcParams["savefig.format"]
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt))


def sensitivity_plot(curves: Mapping[str, Sequence[tuple[float, float]]], path: str | Path, title: str = "") -> Path:
    """Accuracy vs sparsity with each layer pruned alone (Han et al. 2015, Figure 5)."""
    fig, ax = subplots(figsize=(6, 4), dpi=120)
    for name, curve in curves.items():
        xs, ys = zip(*curve)
        ax.plot([100 * x for x in xs], [100 * y for y in ys], marker="o", markersize=3, label=name)
    ax.set_xlabel("parameters pruned away (%)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or "sensitivity: each layer pruned alone, no retraining")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def codebook_histograms(layers: Mapping[str, tuple], path: str | Path, title: str = "") -> Path:
    """Per layer: histogram of the nonzero weights with the shared values marked (Han et al. 2016, Figure 7).

    ``layers``: {name: (weights, codebook_before, codebook_after)}; ``codebook_after`` may be None.
    """
    fig, axes = subplots(len(layers), 1, figsize=(7, 2.2 * len(layers)), dpi=110, squeeze=False)
    for ax, (name, (weights, before, after)) in zip(axes[:, 0], layers.items()):
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        ax.hist(w[w != 0], bins=120, color="0.6")
        for value in np.asarray(before).reshape(-1):
            ax.axvline(value, color="tab:blue", lw=0.6, alpha=0.7)
        if after is not None:
            for value in np.asarray(after).reshape(-1):
                ax.axvline(value, color="tab:red", lw=0.6, alpha=0.7, ls="--")
        ax.set_title(f"{name}: {len(np.asarray(before).reshape(-1))} shared values"
                     + ("  (blue: k-means, red dashed: fine-tuned)" if after is not None else ""), fontsize=9)
        ax.set_ylabel("count")
    axes[-1, 0].set_xlabel("weight value")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def accuracy_vs_bits(series: Mapping[str, Sequence[tuple[int, float]]], path: str | Path, title: str,
                     reference: float | None = None) -> Path:
    """Accuracy vs bits per weight, one line per method (Han et al. 2016, Figures 6 and 8)."""
    fig, ax = subplots(figsize=(6, 4), dpi=120)
    for label, points in series.items():
        xs, ys = zip(*points)
        ax.plot(xs, [100 * y for y in ys], marker="o", markersize=3, label=label,
                ls="--" if "no fine-tune" in label else "-")
    if reference is not None:
        ax.axhline(100 * reference, color="k", lw=0.8, ls=":", label="pruned, fp32")
    ax.set_xlabel("bits per weight")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)
