"""study.sweep: presets, rows per cell, oom/invalid/timeout rows, resume, launchers, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from kernels import malloc
from study import sweep
from study.rows import COLUMNS, read_rows

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (ROOT / "conf" / "sweep").glob("*.yaml"))


def cell_config(tmp_path: Path, *overrides: str):
    with initialize_config_dir(str(sweep.CONF_DIR), version_base="1.3"):
        return compose("sweep", overrides=[f"results_dir={tmp_path}", *overrides])


def run_sweep(tmp_path: Path, *args: str, **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "study.sweep", *args, f"results_dir={tmp_path}"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **popen)  # fmt: skip


# --- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_names_real_models(preset):
    assert sweep.check_args([f"sweep={preset}", "device=cpu"]) is None  # cpu: GPU presets too


def test_cuda_without_a_gpu_is_named():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert "no CUDA GPU" in sweep.check_args(["sweep=gpu_check"])


def _preset_cells(preset: str) -> set[str]:
    with initialize_config_dir(str(sweep.CONF_DIR), version_base="1.3"):
        cfg = compose("sweep", overrides=[f"sweep={preset}"], return_hydra_config=True)
    jobs = sweep.expand_jobs(cfg.hydra.sweeper.params, [])
    cells = set()
    for job in jobs:
        values = dict(line.split("=", 1) for line in job)
        cell = cfg.copy()
        with open_dict(cell):
            cell.merge_with({k: v for k, v in values.items()})
        cells.add(sweep.config_hash(sweep.cell_of(cell)))
    return cells


def test_default_preset_is_the_issue_grid():
    default, ablations = _preset_cells("default"), _preset_cells("ablations")
    # 3 CNNs + 3 Mamba-family + 2 DeiTs x 2 attn + Swin-T x 2 windows = 12 cells per size, 6 sizes
    assert len(default) == 72
    # Vim-Ti and Vim-S unidirectional, VMamba-T with 1 and 2 directions: 4 new cells per size; the
    # jobs whose option belongs to the other family are the 3 models' default cells, already in
    # sweep=default
    assert len(ablations - default) == 24 and len(ablations & default) == 18


def test_slurm_launcher_config_composes():
    with initialize_config_dir(str(sweep.CONF_DIR), version_base="1.3"):
        cfg = compose("sweep", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.partition and cfg.hydra.launcher.gpus_per_node == 1


def test_config_hash_ignores_options_a_model_does_not_take_and_output_paths(tmp_path):
    def key(*overrides):
        return sweep.config_hash(sweep.cell_of(cell_config(tmp_path, *overrides)))

    assert key("model=resnet50", "attn=fused") == key("model=resnet50", "attn=naive")
    assert key("model=resnet50", "window=fixed") == key("model=resnet50", "window=scaled")
    assert key("model=test_swin", "attn=fused") == key("model=test_swin", "attn=naive")
    assert key("model=test_swin", "window=fixed") != key("model=test_swin", "window=scaled")
    assert key("model=test_vit", "attn=fused") != key("model=test_vit", "attn=naive")
    assert key("model=test_vit") == key("model=test_vit", "results_dir=/elsewhere")
    assert key("model=test_vit") == key("model=test_vit", "time_budget_s=5")
    assert key("model=test_vit", "img_size=64") != key("model=test_vit", "img_size=96")


# --- bad input: one line, non-zero exit, no work ------------------------------------------------


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["model=nope"], "unknown model 'nope'"),
        (["-m", "model=resnet50,nope"], "unknown model 'nope'"),
        (["sweep=smoke", "model=test_vit,nope"], "unknown model 'nope'"),
        (["batch=-4"], "batch must be a positive integer"),
        (["batch=0"], "batch must be a positive integer"),
        (["sweep=nope"], "unknown preset 'nope'"),
        (["device=tpu"], "unknown device 'tpu'"),
        (["window=huge"], "unknown window 'huge'; allowed: fixed, scaled"),
        (["scan_backend=cuda_only"], "unknown selective_scan backend"),
        (["measure.malloc=jemalloc"], "unknown measure.malloc 'jemalloc'; allowed: keep_freed, "),
    ],
)
def test_bad_input_is_named(args, complaint):
    assert complaint in sweep.check_args(args)


def test_bad_input_exits_non_zero_with_one_line(tmp_path):
    proc = run_sweep(tmp_path, "model=nope")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert out.strip().count("\n") == 0 and "unknown model 'nope'" in out
    assert not (tmp_path / "rows").exists()


# --- one cell: ok, oom, invalid, timeout ------------------------------------------------------


def test_cell_row_has_every_column_and_agrees_with_itself(tmp_path):
    row = sweep.run_cell(cell_config(tmp_path, "model=test_vit", "img_size=64", "batch=2"))
    assert row["status"] == "ok", row["error"]
    assert set(COLUMNS) <= set(row) and row["config"]["model"] == "test_vit"
    assert row["infer_batch_size"] == 2 and row["infer_samples_per_sec"] > 0
    assert row["malloc"] == ("keep_freed" if malloc._glibc() else "system (not glibc)")
    assert row["predicted_peak_mib"] == pytest.approx(row["measured_peak_mib"], rel=0.03)
    assert read_rows(tmp_path) == [json.loads(json.dumps(row, default=str))]


def test_predicted_oom_is_an_oom_row_without_running(tmp_path):
    cfg = cell_config(tmp_path, "model=test_vit", "img_size=64", "memory_limit_mib=0.1")
    row = sweep.run_cell(cfg)
    assert row["status"] == "oom" and "exceeds" in row["error"]
    assert row["predicted_peak_mib"] > 0.1 and row["measured_peak_mib"] is None


def test_size_a_model_cannot_take_is_an_invalid_row(tmp_path):
    row = sweep.run_cell(cell_config(tmp_path, "model=test_vit", "img_size=16"))
    assert row["status"] == "invalid" and "img_size" in row["error"]
    assert [r["status"] for r in read_rows(tmp_path)] == ["invalid"]


def test_cell_past_its_budget_is_a_timeout_row(tmp_path):
    row = sweep.run_cell(cell_config(tmp_path, "model=test_vit", "time_budget_s=0.001"))
    assert row["status"] == "timeout"


@pytest.mark.parametrize(
    ("err", "stage", "status"),
    [
        (MemoryError(), "run", "oom"),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB"), "run", "oom"),
        (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), "run", "oom"),
        (sweep.CellTimeout("budget"), "run", "timeout"),
        (ValueError("img_size must be"), "build", "invalid"),
        (ValueError("something else"), "run", "error"),
        (KeyError("x"), "build", "error"),
    ],
)
def test_status_of_exceptions(err, stage, status):
    assert sweep.status_of(err, stage) == status


def test_rerun_skips_final_rows_and_redoes_errors(tmp_path):
    cfg = cell_config(tmp_path, "model=test_vit", "img_size=64", "memory_limit_mib=0.1")
    first = sweep.run_cell(cfg)
    assert sweep.run_cell(cfg)["time"] == first["time"]  # oom is final: not redone
    path = next((tmp_path / "rows").glob("*/*.json"))
    path.write_text(json.dumps({**first, "status": "error", "time": "then"}))
    assert sweep.run_cell(cfg)["time"] != "then"  # an error row is measured again


# --- whole sweeps in a subprocess: launchers and resume -----------------------------------------


def test_smoke_sweep_through_submitit_local(tmp_path):
    proc = run_sweep(tmp_path, "sweep=smoke", "model=test_vit", "hydra/launcher=submitit_local")
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-3000:]
    rows = read_rows(tmp_path)
    assert sorted(r["infer_img_size"] for r in rows) == [64, 96]
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]


def test_killed_sweep_resumes_without_redoing_cells(tmp_path):
    proc = run_sweep(tmp_path, "sweep=smoke", start_new_session=True)
    deadline = time.monotonic() + 180
    while not list(tmp_path.glob("rows/*/*.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # as a lost node: no cleanup at all
    proc.wait()
    before = {r["config_hash"]: r["time"] for r in read_rows(tmp_path)}
    assert 1 <= len(before) < 4
    assert not list(tmp_path.glob("rows/*/*.tmp"))

    proc = run_sweep(tmp_path, "sweep=smoke")
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-3000:]
    after = {r["config_hash"]: r["time"] for r in read_rows(tmp_path)}
    assert len(after) == 4
    assert all(after[key] == when for key, when in before.items())  # done cells were not redone
    assert out.count("row exists, skipped") == len(before)
    assert "[job 4/4, 0 to go, " in out and " elapsed, about " in out
