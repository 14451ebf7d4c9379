"""study.sweep, issue 16: rows go stale with the code, limits make oom/timeout final, one writer
per results folder, a quiet-machine check around timings, corrupt rows set aside, bad values
refused up front, a predicted OOM decided on the meta device, progress and Ctrl-C."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from study import lock, sweep
from study import rows as rows_module
from study.measure import quiet
from study.rows import code_files, code_hash, read_rows

ROOT = Path(__file__).resolve().parents[1]
PREDICT_ONLY = ("measure.measured_memory=false", "measure.throughput=false")


def cell_config(tmp_path: Path, *overrides: str):
    with initialize_config_dir(str(sweep.CONF_DIR), version_base="1.3"):
        return compose("sweep", overrides=[f"results_dir={tmp_path}", *overrides])


def run_sweep(tmp_path: Path, *args: str, **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "study.sweep", *args, f"results_dir={tmp_path}"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **popen)  # fmt: skip


def only_row_path(tmp_path: Path) -> Path:
    (path,) = tmp_path.glob("rows/*/*.json")
    return path


# --- 1. rows go stale with the code that measured them ----------------------------------------


def test_code_hash_covers_measuring_code_only(tmp_path):
    names = {p.relative_to(ROOT).as_posix() for p in code_files()}
    assert {"study/sweep.py", "study/rows.py", "study/measure/speed.py"} <= names
    assert {"kernels/ops/selective_scan/cpu.py", "kernels/ops/selective_scan/cpu_scan.c"} <= names
    assert not any(n.startswith(("study/report/", "study/erf/", "tests/")) for n in names)
    assert not {"study/train.py", "study/train_task.py", "study/models/micro.py"} & names
    assert "kernels/bench.py" not in names

    copy = tmp_path / "copy"
    for folder in ("study", "kernels"):
        shutil.copytree(ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    assert code_hash(copy) == code_hash()
    (copy / "study" / "measure" / "README.md").write_text("docs change nothing")
    (copy / "study" / "report" / "build.py").write_text("# the report reads rows only")
    assert code_hash.__wrapped__(copy) == code_hash()
    (copy / "study" / "measure" / "speed.py").write_text("# a change to the timing code")
    assert code_hash.__wrapped__(copy) != code_hash()


def test_row_from_other_code_is_measured_again_unless_kept(tmp_path):
    cfg = cell_config(tmp_path, "model=test_vit", "img_size=64", *PREDICT_ONLY)
    row = sweep.run_cell(cfg)
    assert row["status"] == "ok" and row["code_hash"] == code_hash()
    path = only_row_path(tmp_path)
    path.write_text(json.dumps({**row, "code_hash": "0123456789abcdef", "time": "then"}))
    kept = sweep.run_cell(cell_config(tmp_path, "model=test_vit", "img_size=64",
                                      "keep_old_rows=true", *PREDICT_ONLY))  # fmt: skip
    assert kept["time"] == "then"
    again = sweep.run_cell(cfg)
    assert again["time"] != "then" and again["code_hash"] == code_hash()
    assert json.loads(path.read_text())["code_hash"] == code_hash()


# --- 2. the limits a row was measured under make it final --------------------------------------


def test_oom_row_is_redone_when_the_limit_is_raised(tmp_path):
    low = cell_config(tmp_path, "model=test_vit", "img_size=64", "memory_limit_mib=0.1")
    first = sweep.run_cell(low)
    assert first["status"] == "oom" and first["memory_limit_mib"] == 0.1
    assert sweep.run_cell(low)["time"] == first["time"]  # same limit: final
    path = only_row_path(tmp_path)
    path.write_text(json.dumps({**first, "time": "then"}))
    high = cell_config(tmp_path, "model=test_vit", "img_size=64", "memory_limit_mib=100000")
    row = sweep.run_cell(high)
    assert row["status"] == "ok" and row["memory_limit_mib"] == 100000


def test_measured_oom_is_final_until_the_limit_really_rises(tmp_path):
    cfg = cell_config(tmp_path)
    row = {"status": "oom", "error": "MemoryError: ", "memory_limit_mib": 1000.0,
           "code_hash": code_hash(), "device": "cpu"}  # fmt: skip
    assert sweep.is_final(row, cfg, 1000.0)
    assert sweep.is_final(row, cfg, 1000.0 * (1 + sweep.LIMIT_SLACK))  # MemAvailable drifts
    assert not sweep.is_final(row, cfg, 2000.0)
    predicted = {**row, "error": "PredictedOOM: predicted peak", "predicted_peak_mib": 1500.0}
    assert sweep.is_final(predicted, cfg, 1400.0) and not sweep.is_final(predicted, cfg, 1500.0)


def test_timeout_row_is_redone_when_the_budget_is_raised(tmp_path):
    short = cell_config(tmp_path, "model=test_vit", "img_size=64", "time_budget_s=0.001")
    first = sweep.run_cell(short)
    assert first["status"] == "timeout" and first["time_budget_s"] == 0.001
    only_row_path(tmp_path).write_text(json.dumps({**first, "time": "then"}))
    assert sweep.run_cell(short)["time"] == "then"
    longer = cell_config(tmp_path, "model=test_vit", "img_size=64", "time_budget_s=60",
                         *PREDICT_ONLY)  # fmt: skip
    assert sweep.run_cell(longer)["status"] == "ok"


def test_a_timeout_that_surfaces_as_another_error_is_a_timeout(tmp_path, monkeypatch):
    """Code the alarm interrupts may catch CellTimeout and raise its own error (torch does inside
    its callbacks): the row is still a timeout, redone when the budget rises."""

    def wrapping(cfg, cell, row, stage, limit_mib):
        try:
            while True:
                time.sleep(0.005)
        except sweep.CellTimeout as err:
            raise RuntimeError(f"a callback failed: {err}") from None

    monkeypatch.setattr(sweep, "measure_cell", wrapping)
    row = sweep.run_cell(
        cell_config(tmp_path, "model=test_vit", "img_size=64", "time_budget_s=0.05")
    )
    assert row["status"] == "timeout"
    assert row["error"].startswith("CellTimeout: past its time budget of 0.05 s")
    assert "surfaced as RuntimeError: a callback failed" in row["error"]

    def failing(cfg, cell, row, stage, limit_mib):
        raise RuntimeError("a real failure")

    monkeypatch.setattr(sweep, "measure_cell", failing)  # no alarm: an error stays an error
    row = sweep.run_cell(cell_config(tmp_path, "model=test_vit", "img_size=64", "time_budget_s=60"))
    assert row["status"] == "error" and row["error"] == "RuntimeError: a real failure"


def test_a_cell_that_leaves_torch_state_behind_does_not_pass_it_on(tmp_path, monkeypatch):
    """What a timed-out __enter__ can leave (grad off, autocast on, a mode on torch's stacks, the
    scan backend overridden) is undone before the next cell, which measures as usual."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._python_dispatch import TorchDispatchMode

    from kernels.ops.selective_scan import auto_override

    def leaving_state(cfg, cell, row, stage, limit_mib):
        torch.set_grad_enabled(False)
        torch.set_autocast_enabled("cpu", True)
        FakeTensorMode().__enter__()
        TorchDispatchMode().__enter__()
        auto_override.set("naive")
        raise sweep.CellTimeout("past its time budget (simulated inside __enter__)")

    depth = torch._C._len_torch_dispatch_stack()
    with monkeypatch.context() as patch:
        patch.setattr(sweep, "measure_cell", leaving_state)
        row = sweep.run_cell(cell_config(tmp_path, "model=test_vit", "img_size=64"))
    assert row["status"] == "timeout"
    assert torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu")
    assert torch._C._len_torch_dispatch_stack() == depth and auto_override.get() == "auto"
    train_cell = cell_config(tmp_path, "model=test_vit", "img_size=96", "measure.train=true",
                             *PREDICT_ONLY)  # fmt: skip
    row = sweep.run_cell(train_cell)
    assert row["status"] == "ok", row["error"]


def test_micro_models_are_not_swept(tmp_path):
    """study/models/micro.py is outside code_hash, so no row may come from a micro model."""
    with pytest.raises(ValueError, match="is a micro model of the training experiment"):
        sweep.run_cell(cell_config(tmp_path, "model=vmamba_micro", "img_size=64"))
    assert not list(tmp_path.glob("rows/*/*.json"))


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["memory_limit_mib=-5"], "memory_limit_mib must be a number > 0 or null"),
        (["memory_limit_mib=0"], "memory_limit_mib must be a number > 0 or null"),
        (["memory_limit_mib=abc"], "memory_limit_mib must be a number > 0 or null"),
        (["time_budget_s=abc"], "time_budget_s must be a number > 0, got 'abc'"),
        (["time_budget_s=0"], "time_budget_s must be a number > 0, got '0'"),
        (["measure.max_steps=0"], "measure.max_steps must be an integer >= 1, got '0'"),
        (["measure.min_steps=1.5"], "measure.min_steps must be an integer >= 1"),
        (["measure.warmup_steps=-1"], "measure.warmup_steps must be an integer >= 0"),
        (["measure.timing_budget_s=x"], "measure.timing_budget_s must be a number >= 0"),
        (["measure.min_steps=5", "measure.max_steps=2"], "must not exceed measure.max_steps"),
        (["-m", "measure.max_steps=2,0"], "measure.max_steps must be an integer >= 1, got '0'"),
        (["quiet.retries=-1"], "quiet.retries must be an integer >= 0"),
        (["quiet.max_step_spread=nan"], "quiet.max_step_spread must be a number >= 0"),
        (["lock_wait_s=-1"], "lock_wait_s must be a number >= 0"),
        (["keep_old_rows=maybe"], "keep_old_rows must be true or false"),
        (["model=vim_micro"], "model 'vim_micro' is a micro model of the training experiment"),
        (["measure.throughput=2"], "measure.throughput must be true or false"),
    ],
)
def test_bad_numbers_are_refused_up_front(args, complaint):
    assert complaint in sweep.check_args(args)


def test_good_limits_pass():
    assert sweep.check_args(["memory_limit_mib=512", "time_budget_s=0.5"]) is None
    assert sweep.check_args(["memory_limit_mib=null", "measure.max_steps=1"]) is None


def test_bad_limit_exits_2_with_one_line_and_no_row(tmp_path):
    proc = run_sweep(tmp_path, "model=test_vit", "memory_limit_mib=abc")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert out.strip().count("\n") == 0 and "memory_limit_mib must be" in out
    assert not (tmp_path / "rows").exists()


def test_run_cell_refuses_bad_values(tmp_path):
    with pytest.raises(ValueError, match="memory_limit_mib must be a number > 0"):
        sweep.run_cell(cell_config(tmp_path, "model=test_vit", "memory_limit_mib=0"))
    assert not (tmp_path / "rows").exists()


# --- 5. a predicted OOM is decided on the meta device -------------------------------------------


def test_predicted_oom_builds_no_real_weights(tmp_path, monkeypatch):
    devices = []

    def create(*args, **kwargs):
        model = real_create(*args, **kwargs)
        devices.append(next(model.parameters()).device.type)
        return model

    real_create = sweep.create
    monkeypatch.setattr(sweep, "create", create)
    row = sweep.run_cell(cell_config(tmp_path, "model=test_vit", "img_size=64",
                                     "memory_limit_mib=0.1"))  # fmt: skip
    assert row["status"] == "oom" and row["predicted_peak_mib"] > 0.1
    assert devices == ["meta"]
    devices.clear()
    row = sweep.run_cell(cell_config(tmp_path, "model=test_vit", "img_size=96"))
    assert row["status"] == "ok" and devices == ["meta", "cpu"]


# --- 4. a corrupt row is set aside and named ----------------------------------------------------


def test_truncated_row_is_moved_aside_and_measured_again(tmp_path, caplog):
    cfg = cell_config(tmp_path, "model=test_vit", "img_size=64", *PREDICT_ONLY)
    sweep.run_cell(cfg)
    path = only_row_path(tmp_path)
    path.write_text(path.read_text()[:50])  # as a full disk or a copy cut short leaves it
    with caplog.at_level(logging.WARNING, logger="study.sweep"):
        row = sweep.run_cell(cfg)
    assert row["status"] == "ok" and json.loads(path.read_text())["status"] == "ok"
    aside = path.with_name(path.name + ".corrupt")
    assert aside.exists()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0] and aside.name in warnings[0]


def test_wrong_typed_row_is_moved_aside_and_measured_again(tmp_path, caplog):
    cfg = cell_config(tmp_path, "model=test_vit", "img_size=64", *PREDICT_ONLY)
    row = sweep.run_cell(cfg)
    path = only_row_path(tmp_path)
    path.write_text(json.dumps({**row, "infer_gmacs": "many", "time": "then"}))
    with caplog.at_level(logging.WARNING, logger="study.sweep"):
        again = sweep.run_cell(cfg)
    assert again["time"] != "then" and isinstance(again["infer_gmacs"], float)
    assert "infer_gmacs is 'many', not a number" in caplog.text
    assert path.with_name(path.name + ".corrupt").exists()


# --- 3. one writer per results folder; a quiet-machine check ----------------------------------


def test_second_sweep_exits_naming_the_holder(tmp_path):
    with lock.results_lock(tmp_path):
        holder = (tmp_path / ".sweep.lock").read_text()
        assert f"pid {os.getpid()} on host " in holder
        proc = run_sweep(tmp_path, "sweep=smoke")
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 1, out
        lines = out.strip().splitlines()
        assert len(lines) == 1 and holder.strip() in lines[0] and "lock_wait_s" in lines[0]
        assert not (tmp_path / "rows").exists()
        # jobs of the sweep that holds the lock (this process) share it
        assert sweep.run_cell(cell_config(tmp_path, "model=test_vit", *PREDICT_ONLY))
    assert not (tmp_path / ".sweep.lock").exists()


def test_two_concurrent_sweeps_measure_each_cell_once(tmp_path):
    first = run_sweep(tmp_path, "sweep=smoke")
    deadline = time.monotonic() + 120
    while not (tmp_path / ".sweep.lock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    second = run_sweep(tmp_path, "sweep=smoke", "lock_wait_s=600")  # waits for the first
    out1, _ = first.communicate(timeout=600)
    out2, _ = second.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, out1[-2000:] + out2[-2000:]
    assert out1.count(": measuring") == 4 and out2.count(": measuring") == 0, out2
    assert out2.count("row exists, skipped") == 4
    assert len(read_rows(tmp_path)) == 4


def test_jobs_in_joblib_workers_share_the_launchers_lock(tmp_path):
    proc = run_sweep(tmp_path, "sweep=smoke", "model=test_vit", *PREDICT_ONLY,
                     "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")  # fmt: skip
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert sorted(r["infer_img_size"] for r in read_rows(tmp_path)) == [64, 96]


def test_other_cpu_load_sees_a_busy_process():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        since = quiet._cpu_seconds()
        time.sleep(1.0)
        load = quiet.other_cpu_load(since)
    finally:
        busy.kill()
        busy.wait()
    assert load is not None and load > 0.5


def _fake_timings(step_ms: list[tuple[float, float]], calls: list):
    def throughput(*args, **kwargs):
        median, fastest = step_ms[min(len(calls), len(step_ms) - 1)]
        calls.append(kwargs["warmup_steps"])
        return {"img_per_s": 1e3 / median, "step_ms": median, "step_ms_min": fastest,
                "steps": 5, "threads": 1}  # fmt: skip

    return throughput


def test_noisy_timing_is_retried_then_flagged(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(quiet, "throughput", _fake_timings([(30.0, 10.0), (20.0, 10.0)], calls))
    monkeypatch.setattr(quiet, "other_cpu_load", lambda since: 0.0)
    row = sweep.run_cell(cell_config(tmp_path, "model=test_vit", "img_size=64"))
    assert len(calls) == 2 and calls[1] == 0  # retried once, without a second warm-up
    assert row["status"] == "ok" and row["infer_step_time"] == 20.0  # the faster try is kept
    assert row["step_spread"] == pytest.approx(1.0)
    assert row["timing_note"].startswith("noisy in 2 tries: median step 100% slower")
    assert row["load_avg_1m"] >= 0 and row["other_cpu_load"] == 0.0


def test_competing_load_is_flagged_and_a_quiet_retry_is_clean(tmp_path, monkeypatch):
    calls: list = []
    loads = iter([1.7, 0.1])
    monkeypatch.setattr(quiet, "throughput", _fake_timings([(10.0, 9.5)], calls))
    monkeypatch.setattr(quiet, "other_cpu_load", lambda since: next(loads))
    row = sweep.run_cell(cell_config(tmp_path, "model=test_vit", "img_size=64"))
    assert len(calls) == 2 and row["timing_note"] == "" and row["other_cpu_load"] == 0.1
    calls.clear()
    monkeypatch.setattr(quiet, "other_cpu_load", lambda since: 1.7)
    row = sweep.run_cell(cell_config(tmp_path, "model=test_vit", "img_size=96",
                                     "quiet.retries=2"))  # fmt: skip
    assert len(calls) == 3
    assert row["timing_note"] == "noisy in 3 tries: other processes kept 1.7 cores busy (limit 0.5)"


# --- 7. progress with time left; Ctrl-C ends with one line ----------------------------------------


def test_progress_text_has_elapsed_and_time_left():
    assert sweep.progress_text(0, 10, 3.0) == "[job 1/10, 9 to go, 3s elapsed]"
    assert (
        sweep.progress_text(4, 10, 100.0) == "[job 5/10, 5 to go, 1m40s elapsed, about 2m30s left]"
    )
    assert sweep.progress_text(4, None, 100.0) == "[job 5]"


def test_ctrl_c_ends_with_one_line_saying_what_was_kept(tmp_path):
    proc = run_sweep(tmp_path, "sweep=smoke")
    deadline = time.monotonic() + 180
    while not list(tmp_path.glob("rows/*/*.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-3000:]
    assert "Traceback" not in out
    last = out.strip().splitlines()[-1]
    kept = len(read_rows(tmp_path))
    assert last.startswith(f"study.sweep: interrupted; kept {kept} rows under {tmp_path}/rows/")
    assert last.endswith("run the same command again to resume")


def test_rows_module_has_the_issue_columns():
    for col in ("code_hash", "memory_limit_mib", "time_budget_s", "load_avg_1m",
                "other_cpu_load", "step_spread", "timing_note"):  # fmt: skip
        assert col in rows_module.COLUMNS
