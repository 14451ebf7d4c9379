"""The report's "Where the time goes" section, from results/breakdown_<device>.csv.

Those files are written by `python -m study.measure.breakdown` (`make breakdown`); this module only
reads them: a table per device (forward time, achieved GMAC/s against the same run's dense GEMM
rate, the time shares) and a stacked-bar plot per device and size.
"""

from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from study.report import plots
from study.report.load import slug
from study.report.markdown import md_table

CATEGORIES = ("matmul", "convolution", "attention", "selective_scan", "cross_scan",
              "normalisation", "elementwise", "copies", "other")  # fmt: skip
COLORS = ("#4c72b0", "#55a868", "#c44e52", "#8172b2", "#ccb974", "#64b5cd", "#8c8c8c",
          "#e17c05", "#d0d0d0")  # fmt: skip


def read_breakdowns(results_dir: Path) -> pd.DataFrame:
    files = sorted(Path(results_dir).glob("breakdown_*.csv"))
    if not files:
        return pd.DataFrame()
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


def stacked_bars(frame: pd.DataFrame, title: str) -> Figure:
    """One bar per model: the shares of its forward time, stacked by category."""
    fig = Figure(figsize=(max(6.0, 0.8 * len(frame) + 3), 4.2))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    bottom = [0.0] * len(frame)
    for category, color in zip(CATEGORIES, COLORS, strict=True):
        share = (100 * frame[f"time_share_{category}"].fillna(0)).tolist()
        ax.bar(frame["model"], share, bottom=bottom, color=color, label=category.replace("_", " "))
        bottom = [b + s for b, s in zip(bottom, share, strict=True)]
    ax.set_ylabel("share of forward time (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=35)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig


def breakdown_section(results_dir: str | Path, plot_dir: str | Path) -> list[str]:
    """Markdown lines (empty without breakdown files); writes the plots into `plot_dir`."""
    results_dir, plot_dir = Path(results_dir), Path(plot_dir)
    frame = read_breakdowns(results_dir)
    if frame.empty:
        return []
    plot_dir.mkdir(parents=True, exist_ok=True)
    out = [
        "## Where the time goes",
        "",
        "Self time of one profiled forward (batch 1, torch.profiler) grouped by kind of op, as "
        "shares of the forward; achieved GMAC/s is the model's GMACs over its unprofiled forward "
        "time, beside a dense float32 GEMM measured in the same run. A low share of GEMM rate with "
        "most time in matmul/convolution is slow by design; time in copies or other is slow by "
        "implementation. From `make breakdown` (`results/breakdown_<device>.csv`).",
        "",
    ]
    for device, section in frame.groupby("device_name", sort=True):
        section = section.sort_values(["img_size", "family", "model"])
        table = section[["model", "img_size", "forward_ms", "achieved_gmacs_per_s",
                         "gemm_gmacs_per_s"]].copy()  # fmt: skip
        table["% of GEMM"] = (100 * section["achieved_over_gemm"]).round(1)
        for category in CATEGORIES:
            table[f"{category} %"] = (100 * section[f"time_share_{category}"]).round(1)
        out += [f"### {device}", "", md_table(table, index=False)]
        for size, at_size in section.groupby("img_size", sort=True):
            fig = stacked_bars(at_size, f"Forward time by kind of op at {size} px — {device}")
            path = plots.save(fig, plot_dir / f"breakdown_{slug(device)}_{size}.png")
            out += [f"![time by kind of op at {size} px]({path.relative_to(results_dir)})", ""]
    return out
