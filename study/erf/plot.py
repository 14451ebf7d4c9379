"""Heatmaps of contribution maps: one figure per map, and one grid of every map in a run.

Each map is normalised to [0, 1] by its own maximum, on RepLKNet's scale log10(E + 1) / max or
VMamba's E^0.25 / max, so every panel shares one colour scale (and one colour bar) from 0 to 1.
"""

from pathlib import Path
from typing import Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
import numpy as np  # noqa: E402

from study.erf.metrics import log10_normalise, pow_normalise  # noqa: E402

Scale = Literal["log10", "pow025"]
SCALES: dict[str, str] = {"log10": "log10(E+1) / max", "pow025": "E^0.25 / max"}
CMAP = "RdYlGn"  # RepLKNet's colour map: green where the contribution is high


def normalise(erf: np.ndarray, scale: Scale) -> np.ndarray:
    if scale == "log10":
        return log10_normalise(erf)
    if scale == "pow025":
        return pow_normalise(erf, 0.25)
    raise ValueError(f"unknown scale {scale!r}; allowed: {', '.join(SCALES)}")


def save_heatmap(erf: np.ndarray, title: str, path: Path) -> None:
    """One map on both scales, side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(7.2, 3.9), layout="constrained")
    for ax, scale in zip(axes, SCALES, strict=True):
        image = ax.imshow(normalise(erf, scale), cmap=CMAP, vmin=0, vmax=1)
        ax.set_title(SCALES[scale], fontsize=9)
        ax.set_axis_off()
    fig.colorbar(image, ax=axes, shrink=0.8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_grid(
    maps: dict[tuple[str, str], np.ndarray],
    models: list[str],
    rows: list[str],
    scale: Scale,
    path: Path,
    subtitle: str = "",
) -> None:
    """maps[(model, row)] -> a grid, rows × models; a missing cell is left blank with a note."""
    fig, axes = plt.subplots(
        len(rows),
        len(models),
        figsize=(2.6 * len(models) + 0.8, 2.7 * len(rows) + 0.5),
        squeeze=False,
        layout="constrained",
    )
    image = None
    for i, row in enumerate(rows):
        for j, model in enumerate(models):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if (model, row) in maps:
                image = ax.imshow(normalise(maps[(model, row)], scale), cmap=CMAP, vmin=0, vmax=1)
            else:
                ax.text(0.5, 0.5, "no weights", ha="center", va="center", transform=ax.transAxes)
            if i == 0:
                ax.set_title(model, fontsize=9)
            if j == 0:
                ax.set_ylabel(row, fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label=SCALES[scale])
    fig.suptitle(f"Effective receptive fields {subtitle}".strip(), fontsize=11)
    fig.savefig(path, dpi=110)
    plt.close(fig)
