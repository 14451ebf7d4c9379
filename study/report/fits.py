"""The report's "What fits on a GPU (predicted)" section, from results/fits_cuda_predicted.csv
(inference) and results/fits_cuda_predicted_train.csv (a training step).

Those files are written by `python -m study.measure.fits` (`make fits`); this module only reads
them: a heatmap per mode and precision (model x size, one panel per GPU memory) and a table each.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from study.report import plots
from study.report.markdown import md_table

FITS_FILE = "fits_cuda_predicted.csv"
FILES = {"inference": FITS_FILE, "train": "fits_cuda_predicted_train.csv"}
TITLES = {"inference": "Inference", "train": "Training step"}
FIT_BATCHES = (16, 32)  # study.measure.fits.FIT_BATCHES (the report does not import measurement)


def read_fits(results_dir: Path, name: str = FITS_FILE) -> pd.DataFrame:
    path = Path(results_dir) / name
    return pd.read_csv(path) if path.exists() else pd.DataFrame()


def _grid(frame: pd.DataFrame, capacity: float) -> pd.DataFrame:
    """model x size of the largest batch for one capacity (models in the file's order)."""
    at = frame[frame["capacity_gib"] == capacity]
    grid = at.pivot(index="model", columns="img_size", values="batch")
    return grid.reindex(list(dict.fromkeys(at["model"])))


def heatmap(frame: pd.DataFrame, title: str) -> Figure:
    """One panel per capacity: log2 of the largest batch, the batch written in each cell."""
    capacities = sorted(frame["capacity_gib"].unique())
    first = _grid(frame, capacities[0])
    width = 1.0 + 0.55 * first.shape[1]
    height_in = 1.3 + 0.32 * len(first)
    fig = Figure(figsize=(2.6 + width * len(capacities), height_in))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(capacities), sharey=True, squeeze=False)[0]
    top = np.log2(max(frame["batch"].max(), 1))
    for ax, cap in zip(axes, capacities, strict=True):
        grid = _grid(frame, cap)
        values = np.log2(grid.to_numpy(dtype=float).clip(min=0.5))  # 0 (no fit) -> -1
        ax.imshow(values, cmap="viridis", vmin=-1, vmax=top, aspect="auto")
        for (i, j), batch in np.ndenumerate(grid.to_numpy()):
            text = "—" if batch == 0 else f"{int(batch)}"
            color = "white" if np.log2(max(batch, 0.5)) < top / 2 else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=6.5, color=color)
        ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns], fontsize=7)
        ax.set_yticks(range(len(grid)), list(grid.index), fontsize=7)
        ax.set_title(f"{cap:g} GiB", fontsize=9)
        ax.set_xlabel("image size (px)", fontsize=8)
    fig.subplots_adjust(top=1 - 0.55 / height_in, bottom=0.7 / height_in, wspace=0.08)
    fig.suptitle(title, fontsize=10)
    return fig


def fits_section(results_dir: str | Path, plot_dir: str | Path) -> list[str]:
    """Markdown lines (empty without either fits file); writes the heatmaps into `plot_dir`."""
    results_dir, plot_dir = Path(results_dir), Path(plot_dir)
    frames = {mode: read_fits(results_dir, name) for mode, name in FILES.items()}
    if all(frame.empty for frame in frames.values()):
        return []
    plot_dir.mkdir(parents=True, exist_ok=True)
    frame = pd.concat([f for f in frames.values() if not f.empty])
    caps = ", ".join(f"{c:g}" for c in sorted(frame["capacity_gib"].unique()))
    low, high = FIT_BATCHES
    out = [
        "## What fits on a GPU (predicted)",
        "",
        f"Predicted, not measured: the largest power-of-two batch whose CUDA peak (what "
        f"`torch.cuda.max_memory_allocated()` would report, predicted without a GPU on fake "
        f"tensors through a model of PyTorch's caching allocator, attention routed to the fused "
        f"kernels a GPU picks) fits {caps} GiB, for one inference forward and for one training "
        f"step (forward, loss, backward and AdamW with its state). The peak is predicted at "
        f"batch {low} and {high} and extrapolated (affine in the batch); where the extrapolation "
        "comes within 5% of a capacity the batch is decided by predicting it. The CUDA context "
        "and cuBLAS/cuDNN workspaces are not counted. — : batch 1 does not fit. From `make fits` "
        f"(`results/{FILES['inference']}`, `results/{FILES['train']}`). Training is predicted in "
        "float32 only without a GPU: CPU autocast casts other ops than CUDA autocast, and the "
        "autograd engine needs a CUDA context for a backward on CUDA tensors, so the step runs on "
        "fake CPU tensors with what a GPU would run (the Triton scan, fused attention), which "
        "gives the CUDA forward prediction exactly in float32.",
        "",
    ]
    checked = frame.dropna(subset=["linearity_error_pct"])
    if not checked.empty:
        worst = checked["linearity_error_pct"].abs().max()
        out += [
            f"The extrapolation, where checked by a prediction ({len(checked)} of {len(frame)} "
            f"cells): within {worst:.1f}% of the predicted peak.",
            "",
        ]
    for mode, mode_frame in frames.items():
        if mode_frame.empty:
            continue
        for precision, section in mode_frame.groupby("precision", sort=False):
            caps_sorted = sorted(section["capacity_gib"].unique())
            table = _grid(section, caps_sorted[0]).astype(int).astype(str)
            for cap in caps_sorted[1:]:
                table = table + " / " + _grid(section, cap).astype(int).astype(str)
            table = table.replace(r"\b0\b", "—", regex=True)
            table.columns = [f"{c} px" for c in table.columns]
            what = TITLES[mode]
            at = " / ".join(f"{c:g}" for c in caps_sorted)
            out += [
                f"### {what}, {precision} (batch at {at} GiB)",
                "",
                md_table(table.reset_index(), index=False),
            ]
            title = f"Largest batch that fits (predicted CUDA peak): {what.lower()}, {precision}"
            suffix = "" if mode == "inference" else f"_{mode}"
            fig = heatmap(section, title)
            path = plots.save(fig, plot_dir / f"fits_cuda_predicted{suffix}_{precision}.png")
            out += [f"![largest batch that fits, {mode}, {precision}]"
                    f"({path.relative_to(results_dir)})", ""]  # fmt: skip
    return out
