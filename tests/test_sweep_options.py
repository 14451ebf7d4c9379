"""The sweep's `options` axis (ablations) and the naive-scan preset (issue 12)."""

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from study import sweep
from study.models import OPTIONS, ablation, options_of

ROOT = Path(__file__).resolve().parents[1]


def cell_config(tmp_path: Path, *overrides: str):
    with initialize_config_dir(str(sweep.CONF_DIR), version_base="1.3"):
        return compose("sweep", overrides=[f"results_dir={tmp_path}", *overrides])


def test_options_are_normalised_away_where_they_do_not_apply(tmp_path):
    def cell(*overrides):
        return sweep.cell_of(cell_config(tmp_path, *overrides))

    def key(*overrides):
        return sweep.config_hash(cell(*overrides))

    assert cell("model=resnet50", "options=unidirectional")["options"] == ""
    assert key("model=resnet50", "options=directions2") == key("model=resnet50")
    assert cell("model=vmamba_tiny", "options=unidirectional")["options"] == "default"
    assert key("model=vmamba_tiny", "options=unidirectional") == key("model=vmamba_tiny")
    assert key("model=vmamba_tiny", "options=directions1") != key("model=vmamba_tiny")
    assert key("model=vmamba_tiny", "options=directions1") != key(
        "model=vmamba_tiny", "options=directions2"
    )
    assert cell("model=vim_tiny", "options=unidirectional")["options"] == "unidirectional"
    assert key("model=vim_tiny", "options=unidirectional") != key("model=vim_tiny")
    assert key("model=vim_tiny", "options=directions2") == key("model=vim_tiny")


def test_default_options_keep_the_hash_of_rows_made_before_the_axis(tmp_path):
    cell = sweep.cell_of(cell_config(tmp_path, "model=vim_tiny"))
    assert cell["options"] == "default"
    before = {k: v for k, v in cell.items() if k != "options"}
    assert sweep.config_hash(cell) == sweep.config_hash(before)


def test_ablation_overrides_and_unknown_option():
    assert ablation("vim_tiny", "unidirectional") == {"bidirectional": False}
    assert ablation("vmamba_tiny", "directions2") == {"directions": 2}
    assert ablation("vmamba_tiny", "unidirectional") is None
    assert ablation("resnet50", "default") == {}
    assert options_of("resnet50") == () and options_of("vim_small") == ("default", "unidirectional")
    with pytest.raises(ValueError, match="unknown options 'both'; allowed: default"):
        ablation("vim_tiny", "both")


def test_unknown_option_is_one_line_and_exit_2(tmp_path):
    assert "unknown options 'twoway'" in sweep.check_args(["options=twoway"])
    cmd = [sys.executable, "-m", "study.sweep", "options=twoway", f"results_dir={tmp_path}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "allowed: " + ", ".join(OPTIONS) in proc.stderr
    assert not (tmp_path / "rows").exists()


@pytest.mark.parametrize(
    ("model", "option"),
    [("test_vim", "unidirectional"), ("test_vmamba", "directions2")],
)
def test_ablation_cell_builds_the_ablated_model_and_records_it(tmp_path, model, option):
    base = ["measure.throughput=false", f"model={model}", "img_size=64"]
    default = sweep.run_cell(cell_config(tmp_path, *base))
    ablated = sweep.run_cell(cell_config(tmp_path, *base, f"options={option}"))
    assert default["status"] == ablated["status"] == "ok", ablated["error"]
    assert default["options"] == "default" and ablated["options"] == option
    # one direction's projections fewer: fewer parameters, less compute
    assert ablated["param_count"] < default["param_count"]
    assert ablated["infer_gmacs"] < default["infer_gmacs"]
    assert ablated["config_hash"] != default["config_hash"]


def test_naive_scan_preset_is_vim_and_vmamba_with_the_naive_scan():
    with initialize_config_dir(str(sweep.CONF_DIR), version_base="1.3"):
        cfg = compose("sweep", overrides=["sweep=naive_scan"], return_hydra_config=True)
    jobs = sweep.expand_jobs(cfg.hydra.sweeper.params, [])
    models = {dict(line.split("=", 1) for line in job)["model"] for job in jobs}
    assert models == {"vim_tiny", "vim_small", "vmamba_tiny"} and len(jobs) == 18
    assert all("scan_backend=naive" in job for job in jobs)
    assert sweep.check_args(["sweep=naive_scan"]) is None
