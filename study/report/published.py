"""Published figures (data files under study/data/, each line with its source) beside our rows."""

from pathlib import Path

import numpy as np
import pandas as pd

from study.report.markdown import STATUS_TEXT

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
ACCURACY_BENCHMARKS: dict[str, str] = {
    "imagenet_top1": "ImageNet top-1",
    "coco_box_ap": "COCO box AP",
    "coco_mask_ap": "COCO mask AP",
    "ade20k_miou": "ADE20K mIoU",
}

# Published metric -> (our column, factor turning the published value into our unit).
_OURS: dict[str, tuple[str, object]] = {
    "param_count": ("param_count", lambda v: v),
    "infer_gmacs": ("infer_gmacs", lambda v: v),
    "peak_gb": ("measured_peak_mib", lambda v: v * 1024.0),  # GB read as GiB
    "fps_log10": ("infer_samples_per_sec", lambda v: 10.0**v),
    "ms_per_img": ("ms_per_img", lambda v: v),
    "measured_activations_mib": ("measured_activations_mib", lambda v: v),
}


def read_published(name: str, data_dir: Path = DATA_DIR) -> pd.DataFrame:
    """`study/data/published_<name>.csv` as a DataFrame, empty strings for blanks."""
    path = data_dir / f"published_{name}.csv"
    if not path.exists():
        return pd.DataFrame()
    frame = pd.read_csv(path, keep_default_na=False, na_values={"value": [""]})
    return frame


def _our_row(section: pd.DataFrame, model: str, attn: str, size: int) -> pd.Series | None:
    """Our row for `model` at `size`; a published attn ("" = any) selects the ViT variant, else
    the fused one is preferred (the default implementation), Swin's fixed window (its published
    setting), and scan backend "auto"."""
    part = section[(section["model"] == model) & (section["infer_img_size"] == size)]
    if attn:
        part = part[part["attn"] == attn]
    if part.empty:
        return None
    rank = (
        (part["attn"] == "fused").astype(int) * 4
        + (part["window"] == "fixed").astype(int) * 2
        + (part["scan_backend"] == "auto").astype(int)
    )
    return part.loc[rank.sort_values(kind="stable").index[-1]]


def comparison_table(section: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Each published cost figure whose model, size and device kind we measured in `section`:
    published value (in our unit), ours, ours / published, and the source."""
    devices = set(section["device"])
    lines = []
    for _, pub in published.iterrows():
        if pub["device"] and pub["device"] not in devices:
            continue
        row = _our_row(section, pub["model"], pub["attn"], int(pub["img_size"]))
        if row is None:
            continue
        col, convert = _OURS[pub["metric"]]
        value = convert(pub["value"]) if np.isfinite(pub["value"]) else np.nan
        static = col in ("param_count", "infer_gmacs")
        ours = row[col] if row["status"] == "ok" or static else None
        if ours is not None and not np.isfinite(ours) and row["status"] != "ok":
            ours = None  # a failed row without the value: show its status
        lines.append(
            {
                "model": row["variant"],
                "size": int(pub["img_size"]),
                "metric": col,
                "published": value,
                "ours": ours if ours is not None else STATUS_TEXT.get(row["status"], row["status"]),
                "ours / published": ours / value if ours is not None and value > 0 else np.nan,
                "source": pub["source"] + (f" ({pub['note']})" if pub["note"] else ""),
            }
        )
    return pd.DataFrame(lines)


def _ours_ratio(num: pd.Series, den: pd.Series, col: str) -> float | str:
    """num[col] / den[col] where both rows are ok, else which model failed and how."""
    for row in (num, den):
        if row["status"] != "ok":
            return f"{row['variant']}: {STATUS_TEXT.get(row['status'], row['status'])}"
    return float(num[col]) / float(den[col])


def vim_figure1_ratios(section: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Vim paper Figure 1 as ratios DeiT-Ti / Vim-Ti (memory) and Vim-Ti / DeiT-Ti (img/s), which
    are comparable across batch sizes and GPUs, beside our ratios at the same sizes."""
    fig = published[published["source"].str.contains("Figure 1")]
    lines = []
    for size in sorted(set(fig["img_size"])):
        deit = _our_row(section, "deit_tiny_patch16_224", "naive", int(size))
        vim = _our_row(section, "vim_tiny", "", int(size))
        if deit is None or vim is None:
            continue
        at = fig[fig["img_size"] == size].set_index(["model", "metric"])["value"]
        deit_gb, vim_gb = (
            at.get(("deit_tiny_patch16_224", "peak_gb")),
            at.get(("vim_tiny", "peak_gb")),
        )
        speed_log10 = at.get(("vim_tiny", "fps_log10")) - at.get(
            ("deit_tiny_patch16_224", "fps_log10")
        )
        lines.append(
            {
                "size": int(size),
                "memory DeiT-Ti/Vim-Ti, paper": deit_gb / vim_gb
                if np.isfinite(deit_gb)
                else "DeiT-Ti OOM in the paper",
                "memory, ours": _ours_ratio(deit, vim, "measured_peak_mib"),
                "speed Vim-Ti/DeiT-Ti, paper": 10**speed_log10,
                "speed, ours": _ours_ratio(vim, deit, "infer_samples_per_sec"),
            }
        )
    return pd.DataFrame(lines)


def accuracy_table(section: pd.DataFrame, accuracy: pd.DataFrame, size: int) -> pd.DataFrame:
    """One line per measured model: published accuracy per benchmark (text, and the first value
    as a float for plots) next to our GMACs and img/s at `size` (best variant: highest img/s)."""
    lines = []
    at = section[(section["infer_img_size"] == size) & (section["status"] == "ok")]
    for model, part in section.groupby("model", sort=False):
        line: dict[str, object] = {"model": model, "family": part["family"].iloc[0]}
        pubs = accuracy[accuracy["model"] == model]
        for bench, label in ACCURACY_BENCHMARKS.items():
            vals = pubs[pubs["benchmark"] == bench]
            line[label] = " / ".join(f"{v:.1f}" for v in vals["value"]) if len(vals) else "—"
            line[f"{label} value"] = float(vals["value"].iloc[0]) if len(vals) else np.nan
        ours = at[at["model"] == model].sort_values("infer_samples_per_sec")
        best = ours.iloc[-1] if len(ours) else None
        line["variant"] = best["variant"] if best is not None else "—"
        line[f"GMACs @{size}"] = best["infer_gmacs"] if best is not None else np.nan
        line[f"img/s @{size}"] = best["infer_samples_per_sec"] if best is not None else np.nan
        lines.append(line)
    return pd.DataFrame(lines)
