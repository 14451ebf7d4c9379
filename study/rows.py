"""The contract between the sweep (writes rows) and the report (reads them): one JSON file per cell.

A row is a flat dict of the columns below plus "config", the cell's resolved Hydra config. Rows live
in `<results_dir>/rows/<device_tag>/<config_hash>.json` and are written atomically (temp file +
rename), so a killed sweep never leaves a half-written row.
"""

import json
import os
import tempfile
from pathlib import Path
from typing import Literal

Status = Literal["ok", "oom", "timeout", "error", "invalid"]
STATUSES: tuple[str, ...] = ("ok", "oom", "timeout", "error", "invalid")

# Column names follow timm's benchmark CSV where they overlap (model, infer_*, param_count).
COLUMNS: tuple[str, ...] = (
    "model",  # zoo name
    "family",  # cnn | vit | vim | vmamba | gated_cnn
    "infer_img_size",  # pixels per side
    "infer_batch_size",
    "device",  # "cpu" | "cuda"
    "device_name",  # e.g. "cpu (2 threads, AMD EPYC ...)" or "NVIDIA H200"
    "precision",  # "float32" | "bfloat16"
    "attn",  # "fused" | "naive" for ViTs, "" otherwise
    "scan_backend",  # "reference" | "cpu" | "triton" | "naive" for Vim/VMamba, "" otherwise
    "status",  # one of STATUSES
    "error",  # message for non-ok rows, "" otherwise
    "param_count",  # millions, as timm's CSV
    "infer_gmacs",  # GMACs per batch / batch size (fvcore convention: 1 multiply-add = 1 FLOP)
    "predicted_params_mib",
    "predicted_activations_mib",
    "predicted_peak_mib",
    "measured_params_mib",
    "measured_activations_mib",
    "measured_peak_mib",
    # measured_* above: the dispatcher tracker on real tensors (op outputs + registered kernel
    # workspaces). measured_rss_*: the operating system's view (study/measure/rss.py).
    "measured_rss_activations_mib",  # resident-set growth of one forward, fresh process
    "measured_rss_peak_mib",  # that process's whole resident-set peak (runtime, weights, ...)
    "measured_rss_note",  # why the two above are empty, where the platform cannot give them
    "infer_samples_per_sec",  # images per second (median step)
    "infer_step_time",  # ms per batch step, median
    "step_ms_min",
    "train_samples_per_sec",  # with measure.train=true: images per second of a training step
    "train_step_time",  # ms per training step (forward, loss, backward), median
    "threads",  # torch.get_num_threads() during timing
    "torch_version",
    "triton_version",
    "timm_version",
    "git_commit",
    "time",  # ISO 8601 UTC when the row was written
    # issue 17: Swin (family windowed_vit): its attention window, "fixed" (7) or "scaled"
    # (7·size/224); "" for the other families
    "window",
    # issue 12: the ablation a row measures
    "options",  # "default" | "unidirectional" (Vim) | "directions1" | "directions2" (VMamba); ""
    "config_hash",  # hash of the measured cell's config: resume key
)

# The columns that hold numbers (the rest are text); readers convert these.
NUMERIC_COLUMNS: tuple[str, ...] = (
    "infer_img_size",
    "infer_batch_size",
    "param_count",
    "infer_gmacs",
    "predicted_params_mib",
    "predicted_activations_mib",
    "predicted_peak_mib",
    "measured_params_mib",
    "measured_activations_mib",
    "measured_peak_mib",
    "measured_rss_activations_mib",
    "measured_rss_peak_mib",
    "infer_samples_per_sec",
    "infer_step_time",
    "step_ms_min",
    "train_samples_per_sec",
    "train_step_time",
    "threads",
)


def row_path(results_dir: str | Path, device_tag: str, config_hash: str) -> Path:
    return Path(results_dir) / "rows" / device_tag / f"{config_hash}.json"


def write_row(path: str | Path, row: dict) -> None:
    """Write `row` as JSON atomically: a reader sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(row, f, indent=1, sort_keys=True, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_rows(results_dir: str | Path) -> list[dict]:
    """Every row under `<results_dir>/rows/`, sorted by path; unreadable files are skipped."""
    rows = []
    for path in sorted(Path(results_dir).glob("rows/**/*.json")):
        try:
            rows.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return rows
