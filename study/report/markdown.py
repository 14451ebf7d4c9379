"""Text for REPORT.md: number formatting, status-aware pivot tables, Markdown tables."""

import numpy as np
import pandas as pd

STATUS_TEXT: dict[str, str] = {
    "oom": "OOM",
    "timeout": "timeout",
    "invalid": "invalid",
    "error": "error",
}
NOT_RUN = "—"  # no row for this cell
NO_VALUE = "n/a"  # the row exists but holds no value for this metric


def fmt(value: object, digits: int = 3) -> str:
    """A number with about `digits` significant figures; text passes through; NaN -> n/a."""
    if isinstance(value, str):
        return value
    if value is None or not np.isfinite(value):
        return NO_VALUE
    value = float(value)
    if value == 0:
        return "0"
    magnitude = int(np.floor(np.log10(abs(value))))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}"


def metric_table(section: pd.DataFrame, col: str, static: bool) -> pd.DataFrame:
    """variant × size table of text: the value where the row is ok, the status (OOM, timeout,
    invalid, error) where not, "—" where the cell was not run. A `static` metric (params, GMACs,
    predicted memory: known without running the model) shows its value even on a failed row."""
    cells: dict[tuple[str, str], dict[int, str]] = {}
    for _, row in section.iterrows():
        value = row[col]
        usable = row["status"] == "ok" or (static and pd.notna(value))
        text = fmt(value) if usable else STATUS_TEXT.get(row["status"], row["status"])
        cells.setdefault((row["family"], row["variant"]), {})[int(row["infer_img_size"])] = text
    sizes = sorted(set(section["infer_img_size"].astype(int)))
    table = pd.DataFrame.from_dict(cells, orient="index").reindex(columns=sizes).fillna(NOT_RUN)
    table.index = pd.MultiIndex.from_tuples(table.index, names=["family", "model"])
    return table


def md_table(frame: pd.DataFrame, index: bool = True, float_digits: int = 3) -> str:
    """A GitHub Markdown table; floats formatted by `fmt`, a repeated family shown once."""
    if frame is None or frame.empty:
        return "_(nothing to show)_\n"
    frame = frame.reset_index() if index else frame
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    last_family = None
    for _, row in frame.iterrows():
        cells = []
        for col in frame.columns:
            value = row[col]
            text = (
                fmt(value, float_digits) if isinstance(value, (float, np.floating)) else str(value)
            )
            if col == "family":
                text, last_family = ("" if value == last_family else text), value
            cells.append(text.replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
