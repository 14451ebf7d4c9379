"""Matplotlib figures: cost against resolution on log-log axes, ratio to a baseline, accuracy
against cost with its Pareto front.

Figures are built with the object API on an Agg canvas (no pyplot state, no display needed), so
the same functions serve the report (`save`) and the notebook (which shows the returned Figure).
"""

from pathlib import Path

import matplotlib
import matplotlib.transforms as mtransforms
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, ScalarFormatter

from study.report.analysis import pareto_front
from study.report.load import FAMILY_ORDER

FAMILY_CMAP: dict[str, str] = {
    "cnn": "Blues",
    "gated_cnn": "Purples",
    "vit": "Reds",
    "windowed_vit": "RdPu",
    "vim": "Greens",
    "vmamba": "Oranges",
}
FAILED_MARKER: dict[str, str] = {"oom": "x", "timeout": "+"}
# Known without running the model: drawn from failed rows too, where they hold a value.
STATIC_COLUMNS: tuple[str, ...] = (
    "param_count",
    "infer_gmacs",
    "predicted_params_mib",
    "predicted_activations_mib",
    "predicted_peak_mib",
)
PANEL_SIZE_IN = (5.2, 4.2)


def _family_color(family: str, shade: float = 0.7) -> tuple:
    return matplotlib.colormaps[FAMILY_CMAP.get(family, "Greys")](shade)


def variant_styles(frame: pd.DataFrame) -> dict[str, dict]:
    """Colour by family (a shade per model), line style by implementation: naive attention dashed,
    Swin's scaled window dash-dotted, reference scan dotted. Keys in family order."""
    styles = {}
    for family in sorted(set(frame["family"]), key=_family_rank):
        part = frame[frame["family"] == family]
        models = sorted(set(part["model"]))
        shades = np.linspace(0.85, 0.45, len(models)) if len(models) > 1 else [0.7]
        shade_of = dict(zip(models, shades, strict=True))
        for variant in sorted(set(part["variant"])):
            first = part[part["variant"] == variant].iloc[0]
            linestyle = "-"
            if first["attn"] == "naive":
                linestyle = "--"
            elif first["window"] == "scaled":
                linestyle = "-."
            elif "scan=reference" in variant:
                linestyle = ":"
            color = _family_color(family, shade_of[first["model"]])
            styles[variant] = {"color": color, "linestyle": linestyle}
    return styles


def _family_rank(family: str) -> int:
    return FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER)


def _new_figure(n_panels: int) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(PANEL_SIZE_IN[0] * n_panels, PANEL_SIZE_IN[1]))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    # fixed spacing (tight_layout costs a full draw); savefig's bbox_inches="tight" crops the rest
    fig.subplots_adjust(left=0.1 / n_panels, right=1 - 0.02 / n_panels, wspace=0.32, top=0.86)
    return fig, list(axes)


def _size_axis(ax: Axes, sizes: list[int]) -> None:
    ax.set_xscale("log")
    ax.set_xticks(sizes)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", labelrotation=45 if len(sizes) > 6 else 0, labelsize=8)
    ax.set_xlabel("input size (px per side; axis log-scaled)")
    ax.grid(True, which="major", alpha=0.3)


def _draw_lines(ax: Axes, section: pd.DataFrame, col: str, styles: dict[str, dict]) -> set[str]:
    """One line per variant over its ok sizes (any size with a value, for a static column); sizes
    that ran out of memory or time, and so have no value, marked at the top edge of the axes.
    Returns the statuses marked."""
    top = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
    failed_at: dict[int, int] = {}
    marked: set[str] = set()
    for variant, style in styles.items():
        part = section[section["variant"] == variant].sort_values("infer_img_size")
        usable = (part["status"] == "ok") | (col in STATIC_COLUMNS)
        ok = part[usable & (part[col] > 0)]
        ax.plot(ok["infer_img_size"], ok[col], marker="o", markersize=3.5, **style)
        failed = part["status"].isin(list(FAILED_MARKER)) & ~part.index.isin(ok.index)
        for size in part.loc[failed, "infer_img_size"]:
            status = part.loc[part["infer_img_size"] == size, "status"].iloc[0]
            slot = failed_at.get(int(size), 0)
            failed_at[int(size)] = slot + 1
            marked.add(status)
            ax.plot(
                size,
                0.97 - 0.045 * slot,
                marker=FAILED_MARKER[status],
                color=style["color"],
                markersize=8,
                markeredgewidth=2,
                transform=top,
                clip_on=False,
            )
    if not any(len(line.get_xdata()) for line in ax.lines):
        return marked
    ax.set_yscale("log")
    if failed_at:  # an empty band at the top for the failure markers
        low, high = ax.get_ylim()
        ax.set_ylim(low, high * (high / low) ** (0.06 * (max(failed_at.values()) + 1)))
    return marked


def _legend(fig: Figure, styles: dict[str, dict], marked: set[str]) -> None:
    handles = [Line2D([], [], marker="o", markersize=3.5, **style) for style in styles.values()]
    labels = list(styles)
    for status in sorted(marked):
        handles.append(
            Line2D([], [], marker=FAILED_MARKER[status], color="k", linestyle="", markersize=8)
        )
        labels.append(f"{'OOM' if status == 'oom' else status} (top edge)")
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)


def _thresholds(ax: Axes, section: pd.DataFrame, styles: dict, thresholds_px: dict) -> None:
    """A dotted vertical line at each model's threshold size, in the model's colour, labelled."""
    low, high = ax.get_xlim()
    for model, px in thresholds_px.items():
        variants = [v for v in styles if v.split(" ")[0] == model]
        if not variants or not low <= px <= high:
            continue
        color = styles[variants[0]]["color"]
        ax.axvline(px, color=color, linestyle=":", linewidth=1.2)
        label = f"τ {model.replace('_patch16_224', '')}"
        ax.text(
            px,
            0.02,
            label,
            rotation=90,
            color=color,
            fontsize=7,
            ha="right",
            va="bottom",
            transform=mtransforms.blended_transform_factory(ax.transData, ax.transAxes),
        )


def metric_figure(
    section: pd.DataFrame,
    panels: dict[str, str],
    title: str,
    thresholds_px: dict[str, float] | None = None,
) -> Figure:
    """Log-log lines of each column in `panels` (column -> y label) against input size;
    `thresholds_px` (model -> size) draws MambaOut's τ = 6·D line for each ViT."""
    styles = variant_styles(section)
    sizes = sorted(set(section["infer_img_size"]))
    fig, axes = _new_figure(len(panels))
    marked: set[str] = set()
    for ax, (col, ylabel) in zip(axes, panels.items(), strict=True):
        marked |= _draw_lines(ax, section, col, styles)
        _size_axis(ax, sizes)
        if thresholds_px:
            _thresholds(ax, section, styles, thresholds_px)
        ax.set_ylabel(f"{ylabel} (log)")
    fig.suptitle(title, fontsize=10)
    _legend(fig, styles, marked)
    return fig


def ratio_figure(
    ratios: dict[str, pd.DataFrame], section: pd.DataFrame, baseline: str, title: str
) -> Figure:
    """Ratio to `baseline` on log-log axes, one panel per metric (label -> variant × size)."""
    styles = variant_styles(section)
    sizes = sorted(set(section["infer_img_size"]))
    fig, axes = _new_figure(len(ratios))
    for ax, (label, table) in zip(axes, ratios.items(), strict=True):
        for variant, style in styles.items():
            if variant not in table.index:
                continue
            line = table.loc[variant].dropna()
            line = line[line > 0]
            ax.plot(line.index, line.values, marker="o", markersize=3.5, **style)
        ax.axhline(1.0, color="k", linewidth=0.8)
        _size_axis(ax, sizes)
        ax.set_yscale("log")
        ax.set_ylabel(f"{label} / baseline (log)")
    fig.suptitle(f"{title}\nbaseline: {baseline}", fontsize=10)
    _legend(fig, styles, set())
    return fig


def _annotate(ax: Axes, xs: np.ndarray, ys: np.ndarray, labels: list[str]) -> None:
    """Label points, trying four offsets per label and taking the first that overlaps no label
    placed before (boxes estimated from the character count, in display pixels)."""
    ax.figure.canvas.draw()  # fixes the data -> display transform
    scale = ax.figure.dpi / 72.0  # display pixels per point
    placed: list[tuple[float, float, float, float]] = []
    candidates = [(4, 2, "left"), (4, -9, "left"), (-4, 2, "right"), (-4, -9, "right")]
    for x, y, text in sorted(zip(xs, ys, labels, strict=True), key=lambda t: -t[1]):
        px, py = ax.transData.transform((x, y))
        width, height = 4.3 * len(text) * scale, 8.0 * scale
        for dx, dy, align in candidates:
            x0 = px + dx * scale - (width if align == "right" else 0)
            box = (x0, py + dy * scale, x0 + width, py + dy * scale + height)
            clear = not any(
                box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed
            )
            if clear:
                break
        placed.append(box)
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), ha=align, fontsize=7)


def accuracy_figure(table: pd.DataFrame, size: int, title: str) -> Figure:
    """Published ImageNet top-1 against our GMACs and img/s at `size`; Pareto front dashed.
    `table` is `published.accuracy_table`'s output."""
    acc = table.dropna(subset=["ImageNet top-1 value"])
    panels = {f"GMACs @{size}": (False, "GMACs per image"), f"img/s @{size}": (True, "img/s")}
    fig, axes = _new_figure(2)
    for ax, (col, (higher_better, xlabel)) in zip(axes, panels.items(), strict=True):
        pts = acc[acc[col] > 0]
        top1 = pts["ImageNet top-1 value"]
        ax.scatter(pts[col], top1, c=[_family_color(f) for f in pts["family"]], s=30, zorder=3)
        cost = -pts[col] if higher_better else pts[col]
        front = pts[pareto_front(cost.to_numpy(), top1.to_numpy())].sort_values(col)
        ax.plot(front[col], front["ImageNet top-1 value"], "k--", linewidth=1)
        ax.set_xscale("log")
        ax.margins(x=0.12, y=0.08)
        decades = np.log10(pts[col].max() / pts[col].min()) if len(pts) else 0.0
        subs = (1.0, 2.0, 5.0) if decades > 1.2 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
        ax.xaxis.set_major_locator(LogLocator(subs=subs))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{xlabel} at {size} px (log)")
        ax.set_ylabel("ImageNet-1K top-1 (%), published")
        ax.grid(True, alpha=0.3)
        names = [m.replace("_patch16_224", "") for m in pts["model"]]
        _annotate(ax, pts[col].to_numpy(), top1.to_numpy(), names)
    families = sorted(set(acc["family"]), key=_family_rank)
    handles = [Line2D([], [], marker="o", linestyle="", color=_family_color(f)) for f in families]
    handles.append(Line2D([], [], color="k", linestyle="--", linewidth=1))
    fig.legend(
        handles,
        families + ["Pareto front"],
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        fontsize=8,
    )
    fig.suptitle(title, fontsize=10)
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG (legend outside the axes kept in the frame)."""
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
