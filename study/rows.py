"""The contract between the sweep (writes rows) and the report (reads them): one JSON file per cell.

A row is a flat dict of the columns below plus "config", the cell's resolved Hydra config. Rows live
in `<results_dir>/rows/<device_tag>/<config_hash>.json` and are written atomically (temp file +
rename), so a killed sweep never leaves a half-written row.

`code_hash()` names the code that measured a row (column `code_hash`); the sweep measures a cell
again when its row came from other code. It hashes every .py and .c file under study/ and kernels/
except what cannot change a measured number: study/report/ (reads rows, re-run by `make report`),
study/erf/ (its outputs are not rows), and kernels/bench.py, gpu_check.py, testing.py (benchmark
and test helpers the sweep never imports). conf/ is left out on purpose: every setting that
changes a measurement is in the cell's config hash or recorded in the row (limits, budget). Docs,
tests and data files are not hashed.
"""

import hashlib
import json
import math
import os
import tempfile
from functools import lru_cache
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
    # issue 16: the code and limits a row was measured under, and how quiet the machine was
    "code_hash",  # code_hash() of the measuring code; a row from other code is measured again
    "memory_limit_mib",  # the memory limit the cell ran under (oom rows are redone when raised)
    "time_budget_s",  # the cell's time budget (timeout rows are redone when raised)
    "load_avg_1m",  # os.getloadavg()[0] when the timing started
    "other_cpu_load",  # cores other processes kept busy during the timed steps (/proc/stat)
    "step_spread",  # median step time / fastest step time - 1
    "timing_note",  # "" for a quiet timing; why it is not trusted otherwise
    "config_hash",  # hash of the measured cell's config: resume key
    # issue 14: "inference" (one forward) or "train" (a training step: forward, cross-entropy,
    # backward, AdamW step; measure.train=true). A train row holds the step's figures in the
    # same columns: infer_gmacs = forward + backward GMACs per image; *_activations_mib =
    # everything the step allocates beyond weights, AdamW's state and input (activations,
    # gradients, temporaries); *_peak_mib includes AdamW's state; train_* the step's timing.
    # Rows written before it have no mode: inference unless their config says measure.train.
    "mode",
    # issue 11: what the C allocator did with freed memory during timing (kernels/malloc.py):
    # "keep_freed" | "system" | "system (not glibc)"; empty in rows written before it
    "malloc",
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
    # issue 16: limits and the quiet-machine check
    "memory_limit_mib",
    "time_budget_s",
    "load_avg_1m",
    "other_cpu_load",
    "step_spread",
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


ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS: tuple[str, ...] = ("study", "kernels")
CODE_SUFFIXES: tuple[str, ...] = (".py", ".c")
CODE_EXCLUDED: tuple[str, ...] = (
    "study/report/",
    "study/erf/",
    # The training experiment (README.md, "Receptive fields through training"): it measures no
    # row, and the sweep refuses its micro models, so no row depends on these files.
    "study/models/micro.py",
    "study/train.py",
    "study/train_task.py",
    "kernels/bench.py",
    "kernels/compile_check.py",  # compiles the Triton kernels for ptxas; runs nothing
    "kernels/gpu_check.py",
    "kernels/testing.py",
)


def code_files(root: str | Path = ROOT) -> list[Path]:
    """The source files `code_hash` covers, sorted by their path relative to `root`."""
    root = Path(root)
    files = []
    for folder in CODE_DIRS:
        for path in (root / folder).rglob("*.*"):
            rel = path.relative_to(root).as_posix()
            if path.suffix in CODE_SUFFIXES and not rel.startswith(CODE_EXCLUDED):
                files.append(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


@lru_cache
def code_hash(root: str | Path = ROOT) -> str:
    """16 hex digits of sha256 over the paths and bytes of `code_files(root)`."""
    digest = hashlib.sha256()
    for path in code_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def row_problem(row: object) -> str | None:
    """Why `row` cannot be used (wrong type, no model or size), or None if it can."""
    if not isinstance(row, dict):
        return f"not a JSON object but {type(row).__name__}"
    for key in ("model", "infer_img_size"):
        if row.get(key) in (None, ""):
            return f"no {key}"
    for col in COLUMNS:
        value = row.get(col)
        if value is None:
            continue
        if col in NUMERIC_COLUMNS:
            if not _is_number(value):
                return f"{col} is {value!r}, not a number"
            if col == "infer_img_size" and not (math.isfinite(value) and value == int(value)):
                return f"infer_img_size is {value!r}, not a whole number"
        elif not isinstance(value, str):
            return f"{col} is {value!r}, not text"
    if row.get("config") is not None and not isinstance(row["config"], dict):
        return f"config is {type(row['config']).__name__}, not an object"
    return None


def read_rows(results_dir: str | Path, skipped: list[tuple[Path, str]] | None = None) -> list[dict]:
    """Every usable row under `<results_dir>/rows/`, sorted by path.

    Files that are not valid JSON, rows with wrong-typed fields (`row_problem`) and row files the
    sweep set aside as unreadable (`*.corrupt`) are left out; each is appended to `skipped` as
    (path, why) when a list is given.
    """
    rows = []
    found = Path(results_dir).glob("rows/**/*.json"), Path(results_dir).glob("rows/**/*.corrupt")
    for path in sorted(p for paths in found for p in paths):
        if path.suffix == ".corrupt":
            problem = "set aside by the sweep as unreadable"
        else:
            try:
                row = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                problem = f"unreadable ({type(err).__name__}: {err})"
            else:
                problem = row_problem(row)
        if problem is None:
            rows.append(row)
        elif skipped is not None:
            skipped.append((path, problem))
    return rows
