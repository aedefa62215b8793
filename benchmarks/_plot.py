"""The benchmarks' figures: one look for their panels, drawn with `deepzip.report.plots` (no pyplot: no
global backend, no figures kept open). Apart from `_common` so that the benchmarks that draw nothing never
load matplotlib."""

from __future__ import annotations

import _common  # noqa: F401  (sys.path)
from deepzip.report.plots import save_figure, subplots

__all__ = ["finish_panel", "panel_row", "save_figure", "subplots"]


def panel_row(count: int) -> tuple:
    """(figure, list of ``count`` axes) side by side, 6.2 x 4.4 inches each: one panel a model."""
    fig, axes = subplots(1, count, figsize=(6.2 * count, 4.4), squeeze=False)
    return fig, list(axes[0])


def finish_panel(ax, xlabel: str, ylabel: str, title: str, legend_size: int = 8, **grid) -> None:
    """Axis labels, the title at 10 pt, a light grid (``grid``: e.g. ``which="both"``) and the legend."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, **grid)
    ax.legend(fontsize=legend_size)
