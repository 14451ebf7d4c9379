"""Assemble results/results.csv, results/REPORT.md and results/plots/*.png from the result rows."""

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from study.report import analysis, memory_check, plots
from study.report.breakdown import breakdown_section
from study.report.claims import claims_section
from study.report.fits import fits_section
from study.report.load import load_table, sections, slug
from study.report.markdown import NOT_RUN, STATUS_TEXT, fmt, md_table, metric_table
from study.report.published import (
    ACCURACY_BENCHMARKS,
    accuracy_table,
    comparison_table,
    read_published,
    vim_figure1_ratios,
)

DEFAULT_BASELINE = "deit_small_patch16_224 (naive)"
# column -> (title, static: known without running the model)
TABLES: dict[str, tuple[str, bool]] = {
    "param_count": ("Parameters (M)", True),
    "infer_gmacs": ("GMACs per image (1 multiply-add = 1 MAC, fvcore convention)", True),
    "predicted_peak_mib": ("Peak memory, predicted (MiB)", True),
    "measured_peak_mib": ("Peak memory, measured (MiB)", False),
    "measured_activations_mib": ("Activation memory, measured (MiB)", False),
    "infer_samples_per_sec": ("Throughput (img/s)", False),
    "ms_per_img": ("Time per image (ms)", False),
}
# Training-step sections (rows with mode "train"): the same columns hold the step's figures;
# throughput is the training step's.
TRAIN_TABLES: dict[str, tuple[str, bool]] = {
    "param_count": ("Parameters (M)", True),
    "infer_gmacs": ("GMACs per image of a training step (forward + backward)", True),
    "predicted_peak_mib": ("Peak memory of a training step, predicted (MiB; AdamW state in)", True),
    "measured_peak_mib": ("Peak memory of a training step, measured (MiB)", False),
    "measured_activations_mib": (
        "Step memory beyond weights, AdamW state and input, measured (MiB: activations, "
        "gradients, temporaries)",
        False,
    ),
    "train_samples_per_sec": ("Training throughput (img/s)", False),
    "ms_per_img": ("Training-step time per image (ms)", False),
}
RATIOS: dict[str, str] = {
    "infer_gmacs": "GMACs",
    "measured_peak_mib": "peak MiB",
    "infer_samples_per_sec": "img/s",
}


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    kept = "".join(ch for ch in title.lower() if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


def _versions(frame: pd.DataFrame) -> str:
    parts = []
    for col in ("torch_version", "triton_version", "timm_version", "git_commit"):
        values = sorted(v for v in set(frame[col]) if v)
        parts.append(f"{col.replace('_version', '')} {', '.join(values) or 'unknown'}")
    return "; ".join(parts)


def _mallocs(frame: pd.DataFrame) -> str:
    """How many timed rows ran under each malloc setting ("" in rows from before the column)."""
    timed = frame[frame["infer_step_time"].notna() | frame["train_step_time"].notna()]
    if timed.empty:
        return "no timed rows"
    counts = timed["malloc"].fillna("").replace("", "not recorded").value_counts()
    return ", ".join(f"{name} ({count} timed rows)" for name, count in counts.items())


def _header(frame: pd.DataFrame, results_dir: Path) -> list[str]:
    times = sorted(t for t in frame["time"] if t)
    counts = frame["status"].value_counts()
    lines = [
        "# Scaling study of vision backbones: report",
        "",
        f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `python -m study.report "
        f"{results_dir}` from {len(frame)} cells (one row per cell; `results.csv` holds them all).",
        "",
        f"- Devices: {'; '.join(dict.fromkeys(frame['device_name']))}",
        f"- Versions: {_versions(frame)}",
        f"- C allocator during timing (`malloc`, kernels/malloc.py): {_mallocs(frame)}",
        f"- Rows written: {times[0] if times else '?'} to {times[-1] if times else '?'}",
        f"- Status: {', '.join(f'{k} {v}' for k, v in counts.items())}",
        "",
        f"Cells read `OOM`, `timeout`, `invalid` or `error` where the measurement failed that way, "
        f"`{NOT_RUN}` where the cell was not run, `n/a` where the row holds no such value. "
        "Parameters, GMACs and predicted memory are shown even on failed rows when they were "
        "computed (they do not need the model to run). A ViT's label names its attention "
        "(`fused` = SDPA, `naive` = softmax(q·kᵀ)·v), a Swin's its window (`fixed` = 7 tokens "
        "per side, `scaled` = 7·size/224); `[scan=…]` names a scan backend where a "
        "model was measured with several.",
        "",
    ]
    return lines


def _ratio_text(section: pd.DataFrame, col: str, baseline: str) -> pd.DataFrame | None:
    ratios = analysis.ratio_table(section, col, baseline)
    if ratios is None:
        return None
    text = metric_table(section, col, static=False)
    base = text.xs(baseline, level="model").iloc[0]
    failed = set(STATUS_TEXT.values())
    for (family, variant), cells in text.iterrows():
        for size, cell in cells.items():
            r = ratios.at[variant, size] if variant in ratios.index and size in ratios else np.nan
            if np.isfinite(r):
                text.at[(family, variant), size] = f"{r:.2f}"
            elif cell not in failed and base[size] in failed:
                text.at[(family, variant), size] = f"baseline {base[size]}"
            elif cell not in failed and cell != NOT_RUN:
                text.at[(family, variant), size] = "n/a"
    return text


def _k(value: float) -> str:
    return f"{value:.2f}" if np.isfinite(value) else "n/a"


def _exponent_text(table: pd.DataFrame) -> pd.DataFrame:
    """One column per metric, each cell "k top-2 / k all"."""
    out = table[["family", "variant", "sizes"]].copy()
    for label in analysis.COST_METRICS.values():
        top, whole = table[f"{label}: k top-2"], table[f"{label}: k all"]
        out[f"{label}: k top-2 / all"] = [
            f"{_k(a)} / {_k(b)}" for a, b in zip(top, whole, strict=True)
        ]
    return out


def _section(
    title: str, section: pd.DataFrame, plot_dir: Path, results_dir: Path, baseline: str, size: int
) -> list[str]:
    name = slug(title)
    out = [f"## {title}", ""]
    rel = plot_dir.relative_to(results_dir)

    train = bool((section["mode"] == "train").all())
    speed_col = "train_samples_per_sec" if train else "infer_samples_per_sec"
    out += ["### Cost by resolution", ""]
    for col, (table_title, static) in (TRAIN_TABLES if train else TABLES).items():
        out += [f"#### {table_title}", "", md_table(metric_table(section, col, static))]

    figures = {
        "gmacs": ({"infer_gmacs": "GMACs per image"}, "GMACs"),
        "peak_memory": (
            {
                "predicted_peak_mib": "peak MiB, predicted",
                "measured_peak_mib": "peak MiB, measured",
            },
            "Peak memory",
        ),
        "throughput": ({speed_col: "img/s"}, "Throughput"),
    }
    architecture = read_published("architecture")
    tau_px = {
        m: analysis.tau_px(d, p)[1]
        for m, d, p in architecture[["model", "embed_dim", "patch_size"]].itertuples(index=False)
    }
    out += [
        "### Plots",
        "",
        "Log-log axes; failed cells marked at the top edge; dotted vertical lines: MambaOut's "
        "τ = 6·D tokens for each ViT.",
        "",
    ]
    for key, (panels, label) in figures.items():
        fig = plots.metric_figure(section, panels, f"{label} — {title}", tau_px)
        path = plots.save(fig, plot_dir / f"{name}_{key}.png")
        out.append(f"![{label}]({rel / path.name})")
    out.append("")

    out += [f"### Ratio to {baseline}", ""]
    ratio_frames = {}
    for col, label in RATIOS.items():
        col = speed_col if col == "infer_samples_per_sec" else col
        text = _ratio_text(section, col, baseline)
        if text is None:
            out += [f"_Baseline `{baseline}` was not measured in this section._", ""]
            break
        out += [f"#### {label} / baseline", "", md_table(text)]
        ratio_frames[label] = analysis.ratio_table(section, col, baseline)
    if ratio_frames:
        fig = plots.ratio_figure(ratio_frames, section, baseline, f"Ratio to baseline — {title}")
        path = plots.save(fig, plot_dir / f"{name}_ratio.png")
        out += [f"![ratio to baseline]({rel / path.name})", ""]

    out += [
        "### Scaling exponents",
        "",
        "k in cost ∝ pixels^k, fitted on ok cells (GMACs and predicted memory also on failed "
        "cells that hold them): `top-2` between the two largest sizes, `all` by least squares "
        "over every size (n/a: fewer than two sizes). Expect k → 2 for ViT with naive attention "
        "(and, as the size grows, for Swin with a scaled window), k ≈ 1 for convolutions, Swin "
        "with a fixed window, Vim and VMamba. `sizes` counts the ok cells.",
        "",
        md_table(_exponent_text(analysis.exponent_table(section)), index=False),
    ]

    out += [
        "### Crossovers: SSM against attention",
        "",
        "The smallest input size at which each SSM model costs no more than each attention model, "
        "interpolated on the log-log curves between measured sizes (`ms per image` is the "
        "throughput crossover). τ = 6·D tokens is MambaOut's threshold above which attention's "
        "L² term dominates a Transformer block (16-px patches: size = 16·√τ).",
        "",
        md_table(analysis.crossover_table(section, architecture), index=False),
    ]

    if train:  # published figures and accuracy are about inference
        return out
    out += [f"### Published figures beside ours ({title})", ""]
    published = read_published("cost")
    comparison = comparison_table(section, published)
    out += [md_table(comparison, index=False)]
    fig1 = vim_figure1_ratios(section, published)
    if not fig1.empty:
        out += [
            "Vim paper, Figure 1, as ratios (independent of its unstated batch size and GPU):",
            "",
            md_table(fig1, index=False),
        ]

    out += _accuracy(section, title, plot_dir, rel, name, size)
    return out


def _accuracy(
    section: pd.DataFrame, title: str, plot_dir: Path, rel: Path, name: str, size: int
) -> list[str]:
    accuracy = read_published("accuracy")
    if accuracy.empty:
        return []
    table = accuracy_table(section, accuracy, size)
    shown = table.drop(columns=[f"{label} value" for label in ACCURACY_BENCHMARKS.values()])
    out = [
        f"### Accuracy beside cost (published accuracy; our cost at {size} px)",
        "",
        md_table(shown, index=False),
        "Settings and sources:",
        "",
    ]
    used = accuracy[accuracy["model"].isin(set(section["model"]))]
    for _, a in used.iterrows():
        note = f"; {a['note']}" if a["note"] else ""
        out.append(
            f"- {a['model']}: {ACCURACY_BENCHMARKS[a['benchmark']]} {a['value']:.1f} "
            f"({a['setting']}; {a['source']}{note})"
        )
    out.append("")
    if table["ImageNet top-1 value"].notna().any() and table[f"GMACs @{size}"].notna().any():
        fig = plots.accuracy_figure(table, size, f"Published top-1 against our cost — {title}")
        path = plots.save(fig, plot_dir / f"{name}_accuracy.png")
        out += [f"![accuracy against cost]({rel / path.name})", ""]
    return out


def _erf(results_dir: Path) -> list[str]:
    erf_csv = results_dir / "erf" / "erf.csv"
    if not erf_csv.exists():
        return []
    out = ["## Effective receptive fields", "", md_table(pd.read_csv(erf_csv), index=False)]
    pngs = sorted((results_dir / "erf").glob("*.png"))
    grids = [p for p in pngs if "grid" in p.name]
    out += [f"![ERF grid]({p.relative_to(results_dir)})" for p in grids]
    others = [p for p in pngs if p not in grids]
    if others:
        links = ", ".join(f"[{p.stem}]({p.relative_to(results_dir)})" for p in others)
        out += ["", f"Per-model maps: {links}"]
    return out + [""]


def _errors(frame: pd.DataFrame) -> list[str]:
    bad = frame[frame["status"] != "ok"]
    if bad.empty:
        return []
    cols = ["device_name", "variant", "infer_img_size", "status", "error"]
    shown = bad[cols].assign(error=bad["error"].str.slice(0, 120))
    return ["## Cells that did not measure", "", md_table(shown, index=False)]


def _noisy(frame: pd.DataFrame) -> list[str]:
    """The cells whose timing the sweep flagged as taken on a busy machine (`timing_note`)."""
    noisy = frame[frame["timing_note"] != ""]
    if noisy.empty:
        return []
    lines = [
        "## Noisy timings",
        "",
        "These timings were taken while other processes used the cores or the timed steps were "
        "spread out, and stayed so after a retry: their throughput is less trustworthy.",
        "",
    ]
    table = noisy[["device_name", "variant", "infer_img_size", "timing_note"]]
    return lines + [md_table(table, index=False)]


def _skipped(skipped: list[tuple[Path, str]], results_dir: Path) -> list[str]:
    if not skipped:
        return []
    lines = ["## Skipped files", "", "Row files the report could not use:", ""]
    for path, why in skipped:
        lines.append(f"- `{path.relative_to(results_dir).as_posix()}`: {why}")
    return lines + [""]


def build_report(
    results_dir: str | Path = "results",
    baseline: str = DEFAULT_BASELINE,
    accuracy_size: int = 224,
    skipped: list[tuple[Path, str]] | None = None,
) -> Path:
    """Read every row under `<results_dir>/rows/`; write results.csv, REPORT.md and plots/.

    Row files that cannot be used are listed in REPORT.md and appended to `skipped` as
    (path, why) when it is a list.
    """
    results_dir = Path(results_dir)
    skipped = [] if skipped is None else skipped
    plot_dir = results_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    for stale in plot_dir.glob("*.png"):  # figures of sections that no longer exist
        stale.unlink()
    frame = load_table(results_dir, skipped)
    frame.to_csv(results_dir / "results.csv", index=False)

    if frame.empty:
        lines = [
            "# Scaling study of vision backbones: report",
            "",
            f"No result rows under `{results_dir / 'rows'}` yet: run `make sweep`.",
            "",
        ]
    else:
        lines = _header(frame, results_dir)
        lines += ["Sections:", ""]
        lines += [f"- [{title}](#{_anchor(title)})" for title, _ in sections(frame)]
        lines += [""]
        lines += claims_section(frame, results_dir)
        for title, section in sections(frame):
            lines += _section(title, section, plot_dir, results_dir, baseline, accuracy_size)
        lines += memory_check.section(frame, plot_dir, results_dir)
        lines += _errors(frame)
        lines += _noisy(frame)
    lines += _skipped(skipped, results_dir)
    lines += _erf(results_dir)
    lines += breakdown_section(results_dir, plot_dir)  # issue 11
    lines += fits_section(results_dir, plot_dir)  # issue 13: predicted, from make fits
    report = results_dir / "REPORT.md"
    report.write_text("\n".join(lines) + "\n")
    return report


__all__ = ["build_report", "DEFAULT_BASELINE", "fmt"]
