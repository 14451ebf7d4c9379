"""`python -m study.sweep`: the Hydra app that measures cells and writes one row per cell.

One job = one cell: (model, img_size, batch, device, precision, attn, window, scan backend). A
preset (`sweep=default`, conf/sweep/) is a multirun over such cells; any launcher runs the jobs
(basic, submitit_local, SLURM). Each job

    builds the model -> GMACs and predicted peak memory (one forward on fake tensors)
    -> [oom if the prediction exceeds the device] -> measured memory -> throughput

under a per-cell time budget, and writes its row atomically to
`<results_dir>/rows/<device tag>/<config hash>.json`. A cell whose row is final is skipped, so a
re-run after Ctrl-C or a lost node redoes nothing. A row is final when it came from the same code
(`code_hash`; keep_old_rows=true keeps rows of other code) and is `ok` or `invalid`, an `oom`
under a memory limit no lower than today's, or a `timeout` under a budget no lower than today's.
A failing cell becomes a row with status oom | timeout | invalid | error; the sweep goes on. With
measure.measured_memory=false and measure.throughput=false only the predictions are made: the
model is built on the meta device and nothing runs for real.

One sweep writes a results folder at a time (study/lock.py: `<results_dir>/.sweep.lock` names its
pid and host). Every timing is checked for a quiet machine (study/measure/quiet.py): other
processes' CPU use and the spread of the timed steps are recorded in the row, and a noisy timing
is taken again, then flagged in `timing_note`.
"""

import gc
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

import kernels
from kernels.malloc import MALLOC_SETTINGS, release, set_malloc
from kernels.ops.selective_scan import auto_override, resolve_backend
from study.lock import LOCK_ENV, LockBusy, lock_path, results_lock
from study.measure import peak_memory, predict, predict_train, train_memory
from study.measure.device import device_name, device_tag, memory_mib
from study.measure.quiet import quiet_throughput
from study.models import OPTIONS, ablation, create, family_of, options_of
from study.models.micro import MICRO_MODELS
from study.rows import COLUMNS, code_hash, row_path, row_problem, write_row

log = logging.getLogger("study.sweep")

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def batch_pixels_at_most(img_size: int, batch: int, limit_px: int) -> bool:
    """Whether batch·img_size² <= limit_px²: a preset measures for real only the cells this small
    (`measured_memory: ${batch_pixels_at_most:${img_size},${batch},640}`) and predicts the rest."""
    if str(batch) == "auto":
        raise ValueError("batch_pixels_at_most needs a number for batch, not auto")
    return int(batch) * int(img_size) ** 2 <= int(limit_px) ** 2


OmegaConf.register_new_resolver("batch_pixels_at_most", batch_pixels_at_most, replace=True)
SCAN_FAMILIES = ("vim", "vmamba")
DEVICES = ("cpu", "cuda")
PRECISIONS = ("float32", "bfloat16")
ATTNS = ("fused", "naive")
WINDOWS = ("fixed", "scaled")
SKIPPED_KEYS = ("input_mib", "optimizer_mib")  # memory keys with no row column
LIMIT_SLACK = 0.05  # an oom row's limit counts as raised only past this (MemAvailable drifts)


class CellTimeout(Exception):
    """The cell ran past its time budget."""


class PredictedOOM(Exception):
    """The predicted peak memory exceeds what the device has."""


# ---------------------------------------------------------------------------------------------
# The cell: its identity (config hash) and its row


def cell_of(cfg: DictConfig) -> dict:
    """The measurement-relevant config of one job, with options that do not apply normalised away.

    attn is "" except for ViTs, scan_backend "" except for Vim/VMamba (and "auto" resolved to the
    backend that runs), options "" for families without ablations and "default" where the named
    ablation belongs to another family, so jobs that differ only in an option their model ignores
    are one cell. window is a key only for windowed ViTs (Swin): it came after rows of the other
    families existed, and leaving it out of their cells keeps their config hashes.
    """
    family = family_of(cfg.model)
    if cfg.model in MICRO_MODELS:
        raise ValueError(_check_value("model", cfg.model))
    backend = ""
    if family in SCAN_FAMILIES:
        backend = resolve_backend(cfg.scan_backend, torch.device(cfg.device))
    overrides = ablation(cfg.model, cfg.options)  # ValueError for an unknown option
    options = "" if not options_of(cfg.model) else cfg.options if overrides else "default"
    cell = {
        "model": cfg.model,
        "family": family,
        "img_size": int(cfg.img_size),
        "batch": cfg.batch if cfg.batch == "auto" else int(cfg.batch),
        "max_batch": int(cfg.max_batch) if cfg.batch == "auto" else None,
        "device": cfg.device,
        "precision": cfg.precision,
        "attn": cfg.attn if family == "vit" else "",
        "scan_backend": backend,
        "options": options,
        "measure": OmegaConf.to_container(cfg.measure, resolve=True),
    }
    if family == "windowed_vit":
        cell["window"] = cfg.window
    return cell


def config_hash(cell: dict) -> str:
    """Stable 16-hex-digit hash of a cell (not of output paths or budgets): the resume key."""
    if cell.get("options") in ("", "default"):  # rows from before the options axis keep their key
        cell = {k: v for k, v in cell.items() if k != "options"}
    blob = json.dumps(cell, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@lru_cache
def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def new_row(cfg: DictConfig, cell: dict, key: str) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(
        model=cell["model"],
        family=cell["family"],
        infer_img_size=cell["img_size"],
        infer_batch_size=cell["batch"] if cell["batch"] != "auto" else None,
        device=cell["device"],
        device_name=device_name(cell["device"]),
        precision=cell["precision"],
        attn=cell["attn"],
        window=cell.get("window", ""),
        scan_backend=cell["scan_backend"],
        options=cell["options"],
        mode="train" if cell["measure"]["train"] else "inference",
        error="",
        torch_version=torch.__version__,
        triton_version=_version("triton"),
        timm_version=_version("timm"),
        git_commit=git_commit(),
        code_hash=code_hash(),
        time_budget_s=float(cfg.time_budget_s),
        timing_note="",
        config_hash=key,
    )
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    row["config"] = config
    return row


def memory_limit(cfg: DictConfig, device: str) -> float:
    """The memory (MiB) a cell may use: memory_limit_mib, else what the device has now."""
    if cfg.memory_limit_mib is None:
        return memory_mib(device)
    return float(cfg.memory_limit_mib)


def _oom_is_final(row: dict, limit_mib: float) -> bool:
    """An oom row stands unless the limit it hit has been raised."""
    predicted = row.get("predicted_peak_mib")
    if str(row.get("error", "")).startswith("PredictedOOM") and predicted is not None:
        return limit_mib < predicted  # the prediction is exact: redo as soon as it fits
    old = row.get("memory_limit_mib", row.get("config", {}).get("memory_limit_mib"))
    if old is None:  # rows from before limits were recorded
        return True
    return limit_mib <= old * (1 + LIMIT_SLACK)


def is_final(row: dict | None, cfg: DictConfig, limit_mib: float | None = None) -> bool:
    """Whether an existing row settles its cell: a re-run measures it again only if not.

    `limit_mib`: today's memory limit (default `memory_limit(cfg, ...)` for the row's device).
    """
    if row is None or row.get("status") in cfg.redo:
        return False
    if row.get("code_hash") != code_hash() and not cfg.keep_old_rows:
        return False
    if row.get("status") == "timeout":  # a bigger budget deserves another try
        budget = row.get("time_budget_s", row.get("config", {}).get("time_budget_s", 0))
        return budget >= cfg.time_budget_s
    if row.get("status") == "oom":
        if limit_mib is None:
            limit_mib = memory_limit(cfg, row.get("device") or cfg.device)
        return _oom_is_final(row, limit_mib)
    return True


def read_row(path: Path) -> dict | None:
    """The row at `path`, or None if there is none; an unreadable one is moved aside, said once."""
    if not path.exists():
        return None
    try:
        row = json.loads(path.read_text())
        if (problem := row_problem(row)) is not None:
            raise ValueError(problem)
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
        aside, n = path.with_name(path.name + ".corrupt"), 1
        while aside.exists():  # an earlier corrupt copy is kept too
            aside, n = path.with_name(f"{path.name}.{n}.corrupt"), n + 1
        os.replace(path, aside)
        reason = str(err).splitlines()[0][:200]
        log.warning(f"{path}: unreadable row ({reason}), moved to {aside.name}; measuring again")
        return None
    return row


# ---------------------------------------------------------------------------------------------
# Measuring one cell


@contextmanager
def time_limit(seconds: float) -> Iterator[dict]:
    """Raise CellTimeout in this (main) thread after `seconds`; a no-op in other threads.

    The alarm interrupts Python between bytecodes: a cell stops within one torch op of its budget.
    Yields a dict whose "fired" turns True when the alarm went off: code the alarm interrupts may
    catch CellTimeout and raise something else (torch wraps errors raised inside its callbacks), so
    the flag, not the exception's type, says whether the cell ran out of time.
    """
    state = {"fired": False}
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield state
        return

    def _alarm(signum, frame):
        state["fired"] = True
        raise CellTimeout(f"past its time budget of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield state
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


AUTOCAST = ("cpu", "cuda")  # the autocast states restored_torch_state keeps
INFRA_MODES = tuple(torch._C._TorchDispatchModeKey.__members__.values())


@contextmanager
def restored_torch_state() -> Iterator[None]:
    """Leave grad mode, autocast, torch's mode stacks and the scan-backend override as they were.

    The time limit raises from a signal handler between any two bytecodes, so it can interrupt a
    context manager's __enter__ after it changed global state and before its __exit__ was armed
    (torch.no_grad: grad mode left off; a TorchDispatchMode: left on the stack). Without this the
    next cell in the process would run in that state (a fresh-clone test run once saw 13 later
    failures: "element 0 of tensors does not require grad").
    """
    grad = torch.is_grad_enabled()
    autocast = {d: (torch.is_autocast_enabled(d), torch.get_autocast_dtype(d)) for d in AUTOCAST}
    infra_modes = {key: torch._C._get_dispatch_mode(key) for key in INFRA_MODES}  # fake, proxy, ...
    dispatch_depth = torch._C._len_torch_dispatch_stack()
    function_depth = torch._C._len_torch_function_stack()
    backend = auto_override.get()
    try:
        yield
    finally:
        torch.set_grad_enabled(grad)
        for device, (enabled, dtype) in autocast.items():
            torch.set_autocast_enabled(device, enabled)
            torch.set_autocast_dtype(device, dtype)
        for key, mode in infra_modes.items():
            if mode is None and torch._C._get_dispatch_mode(key) is not None:
                torch._C._unset_dispatch_mode(key)
        while torch._C._len_torch_dispatch_stack() > dispatch_depth:
            torch._C._pop_torch_dispatch_stack(None)
        while torch._C._len_torch_function_stack() > function_depth:
            torch._C._pop_torch_function_stack()
        auto_override.set(backend)


def status_of(err: BaseException, stage: str) -> str:
    """oom | timeout | invalid (the model rejects the input size) | error."""
    if isinstance(err, CellTimeout):
        return "timeout"
    if isinstance(err, MemoryError | torch.OutOfMemoryError | PredictedOOM):
        return "oom"
    text = str(err).lower()
    if isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate" in text):
        return "oom"
    if stage == "build" and isinstance(err, ValueError | AssertionError):
        return "invalid"
    return "error"


def largest_batch(model, cell: dict, limit_mib: float) -> int:
    """The largest power of two <= max_batch whose predicted peak fits in `limit_mib`."""
    batch = 0
    candidate = 1
    memory = train_memory if cell["measure"]["train"] else peak_memory
    while candidate <= cell["max_batch"]:
        mem = memory(model, cell["img_size"], candidate, "predicted", cell["device"],
                     cell["precision"], cell["measure"]["channels_last"])  # fmt: skip
        if mem["peak_mib"] > limit_mib:
            break
        batch, candidate = candidate, 2 * candidate
    if batch == 0:
        raise PredictedOOM(f"batch 1 is predicted to need more than {limit_mib:.0f} MiB")
    return batch


def runs_for_real(cell: dict) -> bool:
    """Whether the cell computes anything for real (else: fake tensors only)."""
    return cell["measure"]["measured_memory"] or cell["measure"]["throughput"]


def measure_cell(
    cfg: DictConfig, cell: dict, row: dict, stage: list[str], limit_mib: float | None = None
) -> None:
    """Fill `row` step by step, so a cell stopped half-way keeps what it measured.

    The model is first built on the meta device (no weights): GMACs, predicted memory and a
    predicted OOM are settled before real weights exist.
    """
    opts = cell["measure"]
    device, size, precision = cell["device"], cell["img_size"], cell["precision"]
    channels_last = opts["channels_last"]
    if limit_mib is None:
        limit_mib = memory_limit(cfg, device)
    row["memory_limit_mib"] = limit_mib

    stage[0] = "build"
    overrides = {"attn": cell["attn"]} if cell["family"] == "vit" else {}
    if cell["family"] == "windowed_vit":
        overrides = {"window": cell["window"]}
    overrides.update(ablation(cell["model"], cell["options"] or "default") or {})
    runs = runs_for_real(cell)
    with torch.device("meta"):  # fake tensors only: no weights, no init time
        model = create(cell["model"], size, **overrides)
    row["param_count"] = sum(p.numel() for p in model.parameters()) / 1e6
    # The first fake forward: a size the model cannot take fails here, as `invalid`.
    batch = largest_batch(model, cell, limit_mib) if cell["batch"] == "auto" else cell["batch"]
    row["infer_batch_size"] = batch
    # measure.train: a training step (forward, loss, backward, AdamW), mode "train" in the row
    pred = (predict_train if opts["train"] else predict)(
        model, size, batch, device, precision, channels_last
    )
    row["infer_gmacs"] = pred["gmacs"] / batch
    row.update({f"predicted_{k}": pred[k] for k in ("params_mib", "activations_mib", "peak_mib")})
    if runs and pred["peak_mib"] > limit_mib:
        raise PredictedOOM(
            f"predicted peak {pred['peak_mib']:.0f} MiB exceeds the {limit_mib:.0f} MiB available"
        )
    if not runs:
        return
    del model
    model = create(cell["model"], size, **overrides).to(device)

    stage[0] = "run"
    row["malloc"] = set_malloc(opts.get("malloc", "system"))  # configs from before it: system
    if opts["measured_memory"]:
        memory = train_memory if opts["train"] else peak_memory
        mem = memory(model, size, batch, "measured", device, precision, channels_last)
        row.update({f"measured_{k}": v for k, v in mem.items() if k not in SKIPPED_KEYS})
    if opts["throughput"]:
        # An inference forward that just ran (measured memory) is a warm-up step already.
        warmed = opts["measured_memory"] and not opts["train"] and not opts["compile"]
        warmup_steps = max(0, opts["warmup_steps"] - 1) if warmed else opts["warmup_steps"]
        speed = quiet_throughput(
            device,
            cfg.quiet.max_other_cores,
            cfg.quiet.max_step_spread,
            cfg.quiet.retries,
            model=model,
            img_size=size,
            batch=batch,
            precision=precision,
            train=opts["train"],
            channels_last=channels_last,
            compile=opts["compile"],
            warmup_steps=warmup_steps,
            min_steps=opts["min_steps"],
            max_steps=opts["max_steps"],
            budget_s=opts["timing_budget_s"],
        )
        prefix = "train" if opts["train"] else "infer"
        row[f"{prefix}_samples_per_sec"] = speed["img_per_s"]
        row[f"{prefix}_step_time"] = speed["step_ms"]
        row["step_ms_min"] = speed["step_ms_min"]
        row["threads"] = speed["threads"]
        for key in ("load_avg_1m", "other_cpu_load", "step_spread", "timing_note"):
            row[key] = speed[key]


@lru_cache
def _jobs_in_sweep(sweep_dir: str) -> int | None:
    """How many jobs the multirun owning `sweep_dir` launches (from the sweeper's multirun.yaml)."""
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.exists():
        return None
    conf = OmegaConf.load(path)
    return len(expand_jobs(conf.hydra.sweeper.params or {}, list(conf.hydra.overrides.task)))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def progress_text(num: int, total: int | None, elapsed_s: float | None) -> str:
    """`[job 5/96, 91 to go, 2m10s elapsed, about 53m left]` for job index `num` (0-based)."""
    if total is None:
        return f"[job {num + 1}]"
    text = f"[job {num + 1}/{total}, {total - num - 1} to go"
    if elapsed_s is not None:
        text += f", {_duration(elapsed_s)} elapsed"
        if num > 0:  # the jobs before this one took elapsed_s: the rest at the same pace
            text += f", about {_duration(elapsed_s / num * (total - num))} left"
    return text + "]"


def _progress_prefix() -> str:
    if not HydraConfig.initialized():
        return "[cell]"
    hc = HydraConfig.get()
    if hc.mode is None or hc.mode.name != "MULTIRUN":
        return "[cell]"
    num = hc.job.num
    sweep_dir = Path(hc.runtime.output_dir).parent
    total = _jobs_in_sweep(str(sweep_dir))
    try:  # the sweeper writes multirun.yaml as the sweep starts, in any launcher
        elapsed_s = time.time() - (sweep_dir / "multirun.yaml").stat().st_mtime
    except OSError:
        elapsed_s = None
    return progress_text(num, total, elapsed_s)


def run_cell(cfg: DictConfig) -> dict:
    """Measure the cell `cfg` describes, unless its row is final already; return its row.

    ValueError (one line) on a bad value; LockBusy if another sweep writes cfg.results_dir.
    """
    complaint = check_cfg(cfg)
    if complaint is not None:
        raise ValueError(complaint)
    with results_lock(cfg.results_dir, float(cfg.lock_wait_s)):
        return _run_cell(cfg)


def _run_cell(cfg: DictConfig) -> dict:
    cell = cell_of(cfg)
    key = config_hash(cell)
    path = row_path(cfg.results_dir, device_tag(cell["device"]), key)
    name = f"{cell['model']} @{cell['img_size']} batch {cell['batch']} {cell['device']} "
    name += f"{cell['precision']}" + "".join(
        f" {k}={cell[k]}"
        for k in ("attn", "window", "scan_backend", "options")
        if cell.get(k) not in (None, "", "default")
    )
    prefix = _progress_prefix()
    old = read_row(path)
    limit_mib = memory_limit(cfg, cell["device"])
    if is_final(old, cfg, limit_mib):
        stale = old.get("code_hash") != code_hash()
        kept = " (from other code, kept: keep_old_rows=true)" if stale else ""
        log.info(f"{prefix} {name}: {old['status']} row exists, skipped{kept}")
        return old
    why = ""
    if old is not None:
        why = " again"
        if old.get("code_hash") != code_hash():
            why += " (its row came from other code)"
        elif old.get("status") in ("oom", "timeout"):
            why += f" (its {old['status']} row had a lower limit)"
    log.info(f"{prefix} {name}: measuring{why}")

    row = new_row(cfg, cell, key)
    stage = ["build"]
    start = time.perf_counter()
    alarm = {"fired": False}
    try:
        with (
            restored_torch_state(),
            time_limit(cfg.time_budget_s) as alarm,
            kernels.use_backend(cell["scan_backend"] or "auto"),
        ):
            measure_cell(cfg, cell, row, stage, limit_mib)
        row["status"] = "ok"
    except Exception as err:  # one cell never ends the sweep; its row says what happened
        row["status"] = status_of(err, stage[0])
        row["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:500]}"
        if alarm["fired"] and not isinstance(err, CellTimeout):  # the timeout, wrapped
            row["status"] = "timeout"
            row["error"] = (
                f"CellTimeout: past its time budget of {cfg.time_budget_s:g} s "
                + (f"(surfaced as {row['error']})")[:600]
            )
    finally:
        if runs_for_real(cell):  # free the last cell's memory before the next one (0.1-0.3 s)
            gc.collect()
            release()  # what malloc=keep_freed kept goes back to the OS
            if torch.device(cell["device"]).type == "cuda":
                torch.cuda.empty_cache()
    row["time"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_row(path, row)
    elapsed = time.perf_counter() - start
    detail = f" ({row['error']})" if row["error"] else ""
    if row.get("timing_note"):
        detail += f" [{row['timing_note']}]"
    log.info(f"{prefix} {name}: {row['status']} in {elapsed:.1f} s{detail}")
    return row


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="sweep")
def app(cfg: DictConfig) -> str:
    return run_cell(cfg)["status"]


# ---------------------------------------------------------------------------------------------
# Bad input: one clear line and a non-zero exit before any job starts


def expand_jobs(sweeper_params: dict, overrides: list[str]) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of preset params and command-line overrides."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in sweeper_params.items()] + list(overrides)
    parsed = OverridesParser.create().parse_overrides(params)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


# key -> (kind, smallest allowed, whether the bound is excluded, whether null is allowed)
NUMBERS: dict[str, tuple[type, float, bool, bool]] = {
    "memory_limit_mib": (float, 0, True, True),
    "time_budget_s": (float, 0, True, False),
    "lock_wait_s": (float, 0, False, False),
    "measure.warmup_steps": (int, 0, False, False),
    "measure.min_steps": (int, 1, False, False),
    "measure.max_steps": (int, 1, False, False),
    "measure.timing_budget_s": (float, 0, False, False),
    "quiet.max_other_cores": (float, 0, False, False),
    "quiet.max_step_spread": (float, 0, False, False),
    "quiet.retries": (int, 0, False, False),
}
FLAGS = (
    "keep_old_rows",
    "measure.measured_memory",
    "measure.throughput",
    "measure.train",
    "measure.channels_last",
    "measure.compile",
)


def _check_number(key: str, value: str) -> str | None:
    kind, low, strict, nullable = NUMBERS[key]
    if nullable and value.lower() in ("null", "none", ""):
        return None
    try:
        number = kind(value)
    except ValueError:
        number = None
    if number is None or number != number or (number <= low if strict else number < low):
        bound = f"{'>' if strict else '>='} {low:g}"
        what = "an integer" if kind is int else "a number"
        allowed = f"{what} {bound}" + (" or null (what the device has)" if nullable else "")
        return f"{key} must be {allowed}, got {value!r}"
    return None


def _check_value(key: str, value: str) -> str | None:
    """The one-line complaint about `key=value`, or None if it is fine."""
    from study.models import available

    if key in NUMBERS:
        return _check_number(key, value)
    if key in FLAGS and value.lower() not in ("true", "false"):
        return f"{key} must be true or false, got {value!r}"

    if key == "model":
        try:
            family_of(value)
        except ValueError:
            return f"unknown model {value!r}; available: {', '.join(available())}"
        if value in MICRO_MODELS:  # outside code_hash (study/rows.py): their rows could go stale
            return (
                f"model {value!r} is a micro model of the training experiment "
                f"(python -m study.train), which the sweep does not measure; available: "
                f"{', '.join(available())}"
            )
    elif key in ("batch", "img_size", "max_batch"):
        if not (value.isdigit() and int(value) > 0) and not (key == "batch" and value == "auto"):
            allowed = "a positive integer" + (" or auto" if key == "batch" else "")
            return f"{key} must be {allowed}, got {value!r}"
    elif key in ("device", "precision", "attn", "window"):
        options = {"device": DEVICES, "precision": PRECISIONS, "attn": ATTNS, "window": WINDOWS}
        allowed = options[key]
        if value not in allowed:
            return f"unknown {key} {value!r}; allowed: {', '.join(allowed)}"
    elif key == "measure.malloc" and value not in MALLOC_SETTINGS:
        return f"unknown measure.malloc {value!r}; allowed: {', '.join(MALLOC_SETTINGS)}"
    elif key == "options" and value not in OPTIONS:
        return f"unknown options {value!r}; allowed: {', '.join(OPTIONS)}"
    elif key == "scan_backend":
        try:
            resolve_backend(value, torch.device("cpu"))
        except ValueError as err:
            return str(err)
    return None


def _check_values(values: dict[str, str]) -> str | None:
    """The first complaint about one job's flattened `key: value` settings, or None."""
    for key, value in values.items():
        if (complaint := _check_value(key, value)) is not None:
            return complaint
    real = [k for k in ("measure.measured_memory", "measure.throughput") if values.get(k) == "True"]
    if values.get("device") == "cuda" and not torch.cuda.is_available() and real:
        off = " ".join(f"{k}=false" for k in real)
        return (f"device=cuda, but this machine has no CUDA GPU that torch can use: without one "
                f"only predictions run (set {off}, or use sweep=gpu_predicted)")  # fmt: skip
    low, high = values.get("measure.min_steps"), values.get("measure.max_steps")
    if low is not None and high is not None and int(low) > int(high):
        return f"measure.min_steps ({low}) must not exceed measure.max_steps ({high})"
    return None


def _flat(cfg: DictConfig) -> dict[str, str]:
    """`{"model": "resnet50", "measure.max_steps": "20", ...}`: all settings but lists, hydra."""
    out = {}
    for key, value in cfg.items():
        if key == "hydra" or isinstance(value, ListConfig):
            continue
        if isinstance(value, DictConfig):
            out.update({f"{key}.{k}": v for k, v in _flat(value).items()})
        else:
            out[str(key)] = "null" if value is None else str(value)
    return out


def check_cfg(cfg: DictConfig) -> str | None:
    """The first complaint about one composed job config, or None (what run_cell checks)."""
    return _check_values(_flat(cfg))


def check_args(argv: list[str]) -> str | None:
    """Compose the sweep as Hydra will, check every cell's values: the first complaint or None."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    args = [a for a in argv if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except HydraException as err:
        return f"bad override: {str(err).splitlines()[0]}"
    presets = sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml"))
    plain = []
    for override in parsed:
        key = override.get_key_element().lstrip("+~")
        if key.startswith("hydra"):
            continue
        if key == "sweep":
            value = override.get_value_element_as_str()
            if value not in presets:
                return f"unknown preset {value!r}; available: {', '.join(presets)}"
        if not override.is_sweep_override():
            plain.append(override.input_line)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("sweep", overrides=plain, return_hydra_config=True)
    except HydraException as err:
        return str(err).splitlines()[0]
    finally:
        GlobalHydra.instance().clear()
    params = cfg.hydra.sweeper.params or {}
    sweep_args = [o.input_line for o in parsed if not o.get_key_element().startswith("hydra")]
    base = _flat(cfg)
    for job in expand_jobs(params, sweep_args):
        values = dict(base)
        values.update(line.lstrip("+~").split("=", 1) for line in job)
        if (complaint := _check_values(values)) is not None:
            return complaint
    return None


def _results_settings(argv: list[str]) -> tuple[str, float]:
    """(results_dir, lock_wait_s) of the command line, as Hydra will compose them.

    A sweep over results_dir (results_dir=a,b) has no one folder: ("", 0), and each job locks its
    own folder.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    plain = [a for a in argv if not a.startswith("-") and a.split("=", 1)[0].lstrip("+~")
             in ("results_dir", "lock_wait_s", "sweep")]  # fmt: skip
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("sweep", overrides=plain)
    except HydraException:
        return "", 0.0
    finally:
        GlobalHydra.instance().clear()
    return str(cfg.results_dir), float(cfg.lock_wait_s)


def _rows_written_since(results_dir: str, start: float) -> tuple[int, int]:
    """(rows under results_dir, how many of them were written after `start`)."""
    paths = list(Path(results_dir).glob("rows/**/*.json"))
    fresh = 0
    for path in paths:
        with suppress(OSError):
            fresh += path.stat().st_mtime >= start
    return len(paths), fresh


def main() -> None:
    argv = sys.argv[1:]
    complaint = check_args(argv)
    if complaint is not None:
        print(f"study.sweep: {complaint}", file=sys.stderr)
        sys.exit(2)
    results_dir, wait_s = _results_settings(argv)
    start = time.time()
    try:
        if not results_dir:
            app()
            return
        with results_lock(results_dir, wait_s):
            os.environ[LOCK_ENV] = str(lock_path(results_dir))  # for job processes of launchers
            app()
    except LockBusy as err:
        print(f"study.sweep: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        total, fresh = _rows_written_since(results_dir, start)
        print(
            f"study.sweep: interrupted; kept {total} rows under {results_dir}/rows/ ({fresh} "
            "written by this run, the cell in progress not recorded); run the same command "
            "again to resume",
            file=sys.stderr,
        )
        sys.exit(130)


if __name__ == "__main__":
    # Run the imported module, not __main__: launchers that pickle the job (submitit) need
    # `study.sweep.app` to be importable by name in their workers.
    from study.sweep import main as _main

    _main()
