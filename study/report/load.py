"""Result rows -> a tidy DataFrame: one line per cell, a variant label, sections per device setup.

Reads JSON files only (through `study.rows.read_rows`); never imports the measuring code.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from study.rows import COLUMNS, NUMERIC_COLUMNS, read_rows

# A cell: the same model measured the same way. Several rows may exist for one cell (an old error
# row and a later ok row written under a different config hash); `tidy` keeps one. `batch_setting`
# is the batch asked for ("1", "64" or "auto"); with "auto" the batch measured varies by cell.
CELL_KEY: tuple[str, ...] = (
    "model",
    "infer_img_size",
    "batch_setting",
    "device_name",
    "precision",
    "attn",
    "window",
    "scan_backend",
    "mode",
    "options",
)
SECTION_KEY: tuple[str, ...] = ("device_name", "precision", "batch_setting", "mode")
FAMILY_ORDER: tuple[str, ...] = ("cnn", "gated_cnn", "vit", "windowed_vit", "vim", "vmamba")
SSM_FAMILIES: tuple[str, ...] = ("vim", "vmamba")
ATTENTION_FAMILIES: tuple[str, ...] = ("vit", "windowed_vit")


def tidy(rows: list[dict]) -> pd.DataFrame:
    """Rows (dicts of `COLUMNS`, extra keys ignored) -> DataFrame with one line per cell.

    Adds `ms_per_img` (step time / batch; `train_step_time` on training rows) and `variant`
    (model name plus the settings that tell its measured variants apart). Missing columns become
    NaN or "". Of several rows for one cell, an `error` row loses to any other; otherwise the
    newest (`time`) wins.
    """
    columns = [c for c in COLUMNS if c not in ("options", "mode")]  # `_settings` gives them
    frame = pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)
    settings = pd.DataFrame(
        [_settings(r) for r in rows], columns=["batch_setting", "mode", "options"]
    )
    frame = pd.concat([frame, settings], axis=1)
    for col in NUMERIC_COLUMNS:
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    text_cols = [c for c in columns if c not in NUMERIC_COLUMNS]
    frame[text_cols] = frame[text_cols].astype(object).fillna("").astype(str)
    frame.loc[frame["status"] == "", "status"] = "error"
    frame.loc[frame["device_name"] == "", "device_name"] = frame["device"].replace("", "unknown")
    frame.loc[frame["precision"] == "", "precision"] = "unknown"
    unset = frame["batch_setting"] == ""
    frame.loc[unset, "batch_setting"] = frame.loc[unset, "infer_batch_size"].map(
        lambda b: str(int(b)) if pd.notna(b) else "1"
    )
    frame = frame.dropna(subset=["infer_img_size"])
    frame["infer_img_size"] = frame["infer_img_size"].astype(int)

    frame["_rank"] = (frame["status"] != "error").astype(int)
    frame = frame.sort_values(["_rank", "time"]).drop_duplicates(list(CELL_KEY), keep="last")
    frame = frame.drop(columns="_rank")

    step_ms = frame["infer_step_time"].where(frame["mode"] != "train", frame["train_step_time"])
    frame["ms_per_img"] = step_ms / frame["infer_batch_size"].fillna(1)  # a training step's too
    frame["variant"] = variant_labels(frame)
    order = {f: i for i, f in enumerate(FAMILY_ORDER)}
    frame["_family_rank"] = frame["family"].map(order).fillna(len(order))
    frame = frame.sort_values(
        ["device", "device_name", "precision", "batch_setting", "mode", "_family_rank", "variant"]
        + ["infer_img_size"]
    )
    return frame.drop(columns="_family_rank").reset_index(drop=True)


def _settings(row: dict) -> dict[str, str]:
    """What the row's resolved config says beyond the columns: the batch asked for, inference or a
    training step (the row's `mode`; rows written before it: its config's measure.train), and
    options that change the measured program (the row's ablation `options`
    unless "default", then channels_last, compile)."""
    config = row.get("config") if isinstance(row.get("config"), dict) else {}
    measure = config.get("measure") if isinstance(config.get("measure"), dict) else {}
    batch = config.get("batch")
    return {
        "batch_setting": "" if batch is None else str(batch),
        "mode": row.get("mode") or ("train" if measure.get("train") else "inference"),
        "options": " ".join(
            ([row["options"]] if row.get("options") not in (None, "", "default") else [])
            + [f"+{k}" for k in ("channels_last", "compile") if measure.get(k)]
        ),
    }


def variant_labels(frame: pd.DataFrame) -> pd.Series:
    """`deit_small_patch16_224 (naive)` for ViTs; `swin_tiny_patch4_window7_224 (scaled window)`
    for Swin; `vim_tiny [scan=reference]` only where a model
    was measured with more than one scan backend; `+compile`, `+channels_last` where used; the
    bare model name otherwise."""
    backends = frame.groupby("model")["scan_backend"].nunique()
    many = set(backends[backends > 1].index)

    def label(row: pd.Series) -> str:
        name = row["model"]
        if row["attn"]:
            name += f" ({row['attn']})"
        if row["window"]:
            name += f" ({row['window']} window)"
        if row["model"] in many and row["scan_backend"]:
            name += f" [scan={row['scan_backend']}]"
        if row["options"]:
            name += f" {row['options']}"
        return name

    if frame.empty:
        return pd.Series([], dtype=str)
    return frame.apply(label, axis=1)


def load_table(
    results_dir: str | Path, skipped: list[tuple[Path, str]] | None = None
) -> pd.DataFrame:
    """Every row under `<results_dir>/rows/` as the tidy table of `tidy`.

    Unreadable files and rows with wrong-typed fields are left out and, when `skipped` is a list,
    appended to it as (path, why) (`study.rows.read_rows`).
    """
    return tidy(read_rows(results_dir, skipped))


def read_results_csv(path: str | Path) -> pd.DataFrame:
    """`results.csv` as written by the report, text columns back to "" where empty."""
    frame = pd.read_csv(path)
    extra = ("variant", "batch_setting", "mode", "options")
    text_cols = [
        c for c in dict.fromkeys((*COLUMNS, *extra)) if c in frame and c not in NUMERIC_COLUMNS
    ]
    frame[text_cols] = frame[text_cols].astype(object).fillna("").astype(str)
    return frame


def sections(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Split by (device_name, precision, batch asked for, inference or training):
    [(title, rows)], CPU sections first."""
    out = []
    for key, part in frame.groupby(list(SECTION_KEY), sort=False):
        device_name, precision, batch, mode = key
        title = f"{device_name} · {precision} · batch {batch}"
        out.append((title + (" · training step" if mode == "train" else ""), part))
    return out


def slug(title: str) -> str:
    """A file-name-safe, lower-case form of a section title."""
    text = "".join(ch if ch.isalnum() else "-" for ch in title.lower())
    while "--" in text:
        text = text.replace("--", "-")
    return text.strip("-")[:80]


def finite(value: object) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and bool(np.isfinite(value))
