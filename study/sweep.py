"""`python -m study.sweep`: the Hydra app that measures cells and writes one row per cell.

One job = one cell: (model, img_size, batch, device, precision, attn, window, scan backend). A
preset (`sweep=default`, conf/sweep/) is a multirun over such cells; any launcher runs the jobs
(basic, submitit_local, SLURM). Each job

    builds the model -> GMACs and predicted peak memory (one forward on fake tensors)
    -> [oom if the prediction exceeds the device] -> measured memory -> throughput

under a per-cell time budget, and writes its row atomically to
`<results_dir>/rows/<device tag>/<config hash>.json`. A cell whose row is already `ok` (or a
final `oom`, `invalid`, or `timeout` within the same budget) is skipped, so a re-run after Ctrl-C
or a lost node redoes nothing. A failing cell becomes a row with status oom | timeout | invalid |
error; the sweep goes on. With measure.measured_memory=false and measure.throughput=false only
the predictions are made: the model is built on the meta device and nothing runs for real.
"""

import gc
import hashlib
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import kernels
from kernels.selective_scan import resolve_backend
from study.measure import peak_memory, predict, throughput
from study.measure.device import device_name, device_tag, memory_mib
from study.models import OPTIONS, ablation, create, family_of, options_of
from study.rows import COLUMNS, row_path, write_row

log = logging.getLogger("study.sweep")

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
SCAN_FAMILIES = ("vim", "vmamba")
DEVICES = ("cpu", "cuda")
PRECISIONS = ("float32", "bfloat16")
ATTNS = ("fused", "naive")
WINDOWS = ("fixed", "scaled")


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
        error="",
        torch_version=torch.__version__,
        triton_version=_version("triton"),
        timm_version=_version("timm"),
        git_commit=git_commit(),
        config_hash=key,
    )
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    row["config"] = config
    return row


def is_final(row: dict | None, cfg: DictConfig) -> bool:
    """Whether an existing row settles its cell: a re-run measures it again only if not."""
    if row is None or row.get("status") in cfg.redo:
        return False
    if row.get("status") == "timeout":  # a bigger budget deserves another try
        return row.get("config", {}).get("time_budget_s", 0) >= cfg.time_budget_s
    return True


# ---------------------------------------------------------------------------------------------
# Measuring one cell


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise CellTimeout in this (main) thread after `seconds`; a no-op in other threads.

    The alarm interrupts Python between bytecodes: a cell stops within one torch op of its budget.
    """
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _alarm(signum, frame):
        raise CellTimeout(f"past its time budget of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


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
    while candidate <= cell["max_batch"]:
        mem = peak_memory(model, cell["img_size"], candidate, "predicted", cell["device"],
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


def measure_cell(cfg: DictConfig, cell: dict, row: dict, stage: list[str]) -> None:
    """Fill `row` step by step, so a cell stopped half-way keeps what it measured."""
    opts = cell["measure"]
    device, size, precision = cell["device"], cell["img_size"], cell["precision"]
    channels_last = opts["channels_last"]
    limit_mib = cfg.memory_limit_mib or memory_mib(device)

    stage[0] = "build"
    overrides = {"attn": cell["attn"]} if cell["family"] == "vit" else {}
    if cell["family"] == "windowed_vit":
        overrides = {"window": cell["window"]}
    overrides.update(ablation(cell["model"], cell["options"] or "default") or {})
    runs = runs_for_real(cell)
    if runs:
        model = create(cell["model"], size, **overrides).to(device)
    else:  # fake tensors only: no weights, no init time
        with torch.device("meta"):
            model = create(cell["model"], size, **overrides)
    row["param_count"] = sum(p.numel() for p in model.parameters()) / 1e6
    # The first fake forward: a size the model cannot take fails here, as `invalid`.
    batch = largest_batch(model, cell, limit_mib) if cell["batch"] == "auto" else cell["batch"]
    row["infer_batch_size"] = batch
    pred = predict(model, size, batch, device, precision, channels_last)
    row["infer_gmacs"] = pred["gmacs"] / batch
    row.update({f"predicted_{k}": pred[k] for k in ("params_mib", "activations_mib", "peak_mib")})
    if runs and pred["peak_mib"] > limit_mib:
        raise PredictedOOM(
            f"predicted peak {pred['peak_mib']:.0f} MiB exceeds the {limit_mib:.0f} MiB available"
        )

    stage[0] = "run"
    if opts["measured_memory"]:
        mem = peak_memory(model, size, batch, "measured", device, precision, channels_last)
        row.update({f"measured_{k}": v for k, v in mem.items() if k != "input_mib"})
    if opts["throughput"]:
        # An inference forward that just ran (measured memory) is a warm-up step already.
        warmed = opts["measured_memory"] and not opts["train"] and not opts["compile"]
        warmup_steps = max(0, opts["warmup_steps"] - 1) if warmed else opts["warmup_steps"]
        speed = throughput(
            model,
            size,
            batch,
            device,
            precision,
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


@lru_cache
def _jobs_in_sweep(sweep_dir: str) -> int | None:
    """How many jobs the multirun owning `sweep_dir` launches (from the sweeper's multirun.yaml)."""
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.exists():
        return None
    conf = OmegaConf.load(path)
    return len(expand_jobs(conf.hydra.sweeper.params or {}, list(conf.hydra.overrides.task)))


def _progress_prefix() -> str:
    if not HydraConfig.initialized():
        return "[cell]"
    hc = HydraConfig.get()
    if hc.mode is None or hc.mode.name != "MULTIRUN":
        return "[cell]"
    num = hc.job.num
    total = _jobs_in_sweep(str(Path(hc.runtime.output_dir).parent))
    if total is None:
        return f"[job {num + 1}]"
    return f"[job {num + 1}/{total}, {total - num - 1} to go]"


def run_cell(cfg: DictConfig) -> dict:
    """Measure the cell `cfg` describes, unless its row is final already; return its row."""
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
    old = json.loads(path.read_text()) if path.exists() else None
    if is_final(old, cfg):
        log.info(f"{prefix} {name}: {old['status']} row exists, skipped")
        return old
    log.info(f"{prefix} {name}: measuring")

    row = new_row(cfg, cell, key)
    stage = ["build"]
    start = time.perf_counter()
    try:
        with time_limit(cfg.time_budget_s), kernels.use_backend(cell["scan_backend"] or "auto"):
            measure_cell(cfg, cell, row, stage)
        row["status"] = "ok"
    except Exception as err:  # one cell never ends the sweep; its row says what happened
        row["status"] = status_of(err, stage[0])
        row["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:500]}"
    finally:
        if runs_for_real(cell):  # free the last cell's memory before the next one (0.1-0.3 s)
            gc.collect()
            if torch.device(cell["device"]).type == "cuda":
                torch.cuda.empty_cache()
    row["time"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_row(path, row)
    elapsed = time.perf_counter() - start
    detail = f" ({row['error']})" if row["error"] else ""
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


def _check_value(key: str, value: str) -> str | None:
    """The one-line complaint about `key=value`, or None if it is fine."""
    from study.models import available

    if key == "model":
        try:
            family_of(value)
        except ValueError:
            return f"unknown model {value!r}; available: {', '.join(available())}"
    elif key in ("batch", "img_size", "max_batch"):
        if not (value.isdigit() and int(value) > 0) and not (key == "batch" and value == "auto"):
            allowed = "a positive integer" + (" or auto" if key == "batch" else "")
            return f"{key} must be {allowed}, got {value!r}"
    elif key in ("device", "precision", "attn", "window"):
        options = {"device": DEVICES, "precision": PRECISIONS, "attn": ATTNS, "window": WINDOWS}
        allowed = options[key]
        if value not in allowed:
            return f"unknown {key} {value!r}; allowed: {', '.join(allowed)}"
        if key == "device" and value == "cuda" and not torch.cuda.is_available():
            return "device=cuda, but this machine has no CUDA GPU that torch can use"
    elif key == "options" and value not in OPTIONS:
        return f"unknown options {value!r}; allowed: {', '.join(OPTIONS)}"
    elif key == "scan_backend":
        try:
            resolve_backend(value, torch.device("cpu"))
        except ValueError as err:
            return str(err)
    return None


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
    base = {k: str(v) for k, v in cfg.items() if k != "hydra" and not isinstance(v, DictConfig)}
    for job in expand_jobs(params, sweep_args):
        values = dict(base)
        values.update(line.lstrip("+~").split("=", 1) for line in job)
        for key, value in values.items():
            if (complaint := _check_value(key, value)) is not None:
                return complaint
    return None


def main() -> None:
    complaint = check_args(sys.argv[1:])
    if complaint is not None:
        print(f"study.sweep: {complaint}", file=sys.stderr)
        sys.exit(2)
    app()


if __name__ == "__main__":
    # Run the imported module, not __main__: launchers that pickle the job (submitit) need
    # `study.sweep.app` to be importable by name in their workers.
    from study.sweep import main as _main

    _main()
