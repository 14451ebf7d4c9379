"""The report: fixture rows (tests/fixtures/rows.jsonl: two devices, every status, partial grids)
-> results.csv, REPORT.md, plots; exponents and crossovers on synthetic curves; the notebook."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from study.report import build_report, crossover_px, fit_exponent, pareto_front, tidy
from study.report.analysis import crossover_table, exponent_table
from study.report.markdown import metric_table
from study.report.published import DATA_DIR, read_published
from study.rows import row_path, write_row

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "rows.jsonl"


def fixture_rows() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = tmp_path_factory.mktemp("results")
    for row in fixture_rows():
        tag = "cpu" if row["device"] == "cpu" else "cuda-h200"
        write_row(row_path(results, tag, row["config_hash"]), row)
    (results / "rows" / "cpu" / "broken.json").write_text("{not json")  # skipped, not fatal
    build_report(results)
    return results


def test_results_csv_has_one_line_per_cell(report_dir: Path) -> None:
    table = pd.read_csv(report_dir / "results.csv")
    rows = fixture_rows()
    cells = {
        (
            r["model"],
            r["infer_img_size"],
            r["device_name"],
            r["precision"],
            r["attn"],
            r["scan_backend"],
            r["infer_batch_size"],
        )
        for r in rows
    }
    assert len(table) == len(cells) < len(rows)  # the superseded error row is gone
    vmamba_512 = table[
        (table["model"] == "vmamba_tiny")
        & (table["infer_img_size"] == 512)
        & (table["device"] == "cpu")
    ]
    assert list(vmamba_512["status"]) == ["ok"]
    assert set(table["status"]) == {"ok", "oom", "timeout", "error", "invalid"}
    assert {"variant", "ms_per_img"} <= set(table.columns)


def test_report_sections_statuses_and_links(report_dir: Path) -> None:
    text = (report_dir / "REPORT.md").read_text()
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    cpu = headings.index("cpu (2 threads, FIXTURE) · float32 · batch 1")
    gpu = headings.index("NVIDIA H200 (FIXTURE) · bfloat16 · batch 64")
    assert cpu < gpu and "NVIDIA H200 (FIXTURE) · float32 · batch 64" in headings
    for needed in (
        "| OOM |",
        "| timeout |",
        "| invalid |",
        "| error |",
        "none in range",
        "2304 tokens ≈ 768 px",
        "deit_small_patch16_224 (naive)",
        "vim_tiny [scan=reference]",
        "Vim paper, Figure 1",
        "ImageNet top-1",
    ):
        assert needed in text, needed
    assert not re.search(r"\bnan\b", text, flags=re.I)
    assert "|  |  |" not in text.replace("| vit |  |", "")  # no blank metric cells
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) >= 4 * 2
    for link in links:
        assert (report_dir / link).stat().st_size > 10_000, link


def test_failed_cells_show_status_not_blank_or_zero() -> None:
    frame = tidy(fixture_rows())
    gpu = frame[frame["precision"] == "bfloat16"]
    img_per_s = metric_table(gpu, "infer_samples_per_sec", static=False)
    assert img_per_s.loc[("vit", "deit_small_patch16_224 (naive)"), 1024] == "OOM"
    gmacs = metric_table(gpu, "infer_gmacs", static=True)  # known without running: a number
    assert float(gmacs.loc[("vit", "deit_small_patch16_224 (naive)"), 1024]) > 100
    cpu = frame[frame["device"] == "cpu"]
    peak = metric_table(cpu, "measured_peak_mib", static=False)
    assert peak.loc[("vmamba", "vmamba_tiny"), 1024] == "—"  # never run
    assert peak.loc[("vmamba", "vmamba_tiny"), 768] == "error"
    assert peak.loc[("cnn", "convnext_tiny"), 1248] == "invalid"


def test_newest_row_wins_except_errors() -> None:
    base = {
        "model": "resnet50",
        "family": "cnn",
        "infer_img_size": 224,
        "device": "cpu",
        "device_name": "cpu",
        "precision": "float32",
        "attn": "",
        "scan_backend": "",
    }
    old_ok = {**base, "status": "ok", "time": "2025-01-01T00:00:00Z", "infer_gmacs": 4.1}
    new_oom = {**base, "status": "oom", "time": "2025-01-02T00:00:00Z"}
    newer_error = {**base, "status": "error", "time": "2025-01-03T00:00:00Z"}
    frame = tidy([old_ok, new_oom, newer_error])
    assert list(frame["status"]) == ["oom"]


@pytest.mark.parametrize("k", [0.5, 1.0, 2.0])
def test_fit_exponent_recovers_power_laws(k: float) -> None:
    sizes = [224, 384, 512, 768, 1024, 1248]
    values = [3.7 * (s * s) ** k for s in sizes]
    k_top, k_all = fit_exponent(sizes, values)
    assert k_top == pytest.approx(k, abs=1e-12)
    assert k_all == pytest.approx(k, abs=1e-12)


def test_fit_exponent_needs_two_sizes() -> None:
    assert all(math.isnan(k) for k in fit_exponent([224], [4.6]))
    assert all(math.isnan(k) for k in fit_exponent([224, 512], [4.6, float("nan")]))
    # a ViT's FLOPs: 24·D²·L + 4·D·L² per block -> k between 1 and 2, nearing 2 at large L
    sizes = [224, 512, 1024, 2048, 4096]
    tokens = np.array([(s // 16) ** 2 for s in sizes], dtype=float)
    k_top, k_all = fit_exponent(sizes, 24 * 384**2 * tokens + 4 * 384 * tokens**2)
    assert 1.8 < k_top < 2.0 and 1.0 < k_all < k_top


def test_exponent_table_says_na_for_one_size() -> None:
    frame = tidy(fixture_rows())
    cpu = frame[frame["device"] == "cpu"]
    table = exponent_table(cpu).set_index("variant")
    assert math.isnan(table.loc["deit_base_patch16_224 (fused)", "GMACs: k all"])
    assert table.loc["vim_tiny [scan=auto]", "GMACs: k all"] == pytest.approx(1.0, abs=0.01)


def test_crossover_interpolates_on_log_log() -> None:
    sizes = [224, 512, 768, 1024]
    cross = 700.0
    ssm = [(s / cross) ** 2 for s in sizes]  # cost ∝ pixels
    vit = [(s / cross) ** 4 for s in sizes]  # cost ∝ pixels²: the two meet at 700 px
    assert crossover_px(sizes, ssm, vit) == pytest.approx(cross, rel=1e-12)
    assert crossover_px(sizes, [0.5 * v for v in vit], vit) == 224  # cheaper from the start
    assert math.isnan(crossover_px(sizes, [2 * v for v in vit], vit))  # never cheaper
    oom = [1.0, 2.0, 4.0, math.inf]  # the attention model runs out of memory at 1024
    assert crossover_px(sizes, [3.0, 5.0, 7.0, 9.0], oom) == 1024


def test_crossover_table_marks_none_in_range_and_tau() -> None:
    frame = tidy(fixture_rows())
    gpu = frame[frame["precision"] == "bfloat16"]
    table = crossover_table(gpu, read_published("architecture"))
    line = table[
        (table["SSM model"] == "vim_tiny [scan=auto]")
        & (table["attention model"] == "deit_small_patch16_224 (naive)")
    ].iloc[0]
    assert line["peak MiB (measured)"].startswith("≤") or line["peak MiB (measured)"][0].isdigit()
    assert line["τ = 6·D (MambaOut)"] == "2304 tokens ≈ 768 px"
    assert (table == "none in range").any().any()


def test_pareto_front() -> None:
    cost = [1.0, 2.0, 3.0, 2.5, 5.0]
    top1 = [72.0, 76.0, 76.0, 80.0, 79.0]
    assert list(pareto_front(cost, top1)) == [True, True, False, True, False]


def test_published_data_have_sources_and_numbers() -> None:
    for name in ("cost", "accuracy", "architecture", "ablation"):
        frame = read_published(name)
        assert len(frame) > 0 and (frame["source"].str.len() > 0).all(), name
    cost = read_published("cost")
    assert (cost["value"].notna() | cost["note"].str.contains("OOM")).all()
    assert sorted(p.name for p in DATA_DIR.glob("published_*.csv")) == [
        "published_ablation.csv",
        "published_accuracy.csv",
        "published_architecture.csv",
        "published_cost.csv",
    ]


def test_empty_results_dir(tmp_path: Path) -> None:
    report = build_report(tmp_path)
    assert "No result rows" in report.read_text()
    assert (tmp_path / "results.csv").exists()


def test_erf_outputs_are_linked(tmp_path: Path) -> None:
    rows = [r for r in fixture_rows() if r["model"] == "resnet50" and r["device"] == "cpu"]
    for row in rows:
        write_row(row_path(tmp_path, "cpu", row["config_hash"]), row)
    erf = tmp_path / "erf"
    erf.mkdir()
    pd.DataFrame({"model": ["resnet50"], "area_ratio_0.5": [0.12]}).to_csv(erf / "erf.csv")
    (erf / "erf_grid.png").write_bytes(b"png")
    text = build_report(tmp_path).read_text()
    assert "## Effective receptive fields" in text and "(erf/erf_grid.png)" in text


def test_report_imports_no_measuring_code() -> None:
    code = (
        "import sys, study.report, study.report.build\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('kernels', 'torch')\n"
        "       or m.startswith(('study.measure', 'study.sweep', 'study.models'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_notebook_runs_on_fixture(report_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """nbclient is not installed: exec the notebook's code cells in order, as Jupyter would."""
    monkeypatch.setenv("RESULTS_CSV", str(report_dir / "results.csv"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = json.loads((REPO / "notebooks" / "scaling.ipynb").read_text())
    namespace: dict = {"__name__": "__main__"}
    shown: list = []
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "scaling.ipynb", "exec"), namespace)
            namespace["display"] = shown.append  # outside Jupyter: collect what would show
    assert namespace["csv_path"] == Path(os.environ["RESULTS_CSV"])
    assert len(namespace["parts"]) == 3
    figures = [obj for obj in shown if hasattr(obj, "savefig")]
    assert len(figures) >= 3 * 3


def test_odd_rows_do_not_break_the_report(tmp_path: Path) -> None:
    odd = [
        {"model": "resnet50", "infer_img_size": 224, "status": "ok"},  # almost every column missing
        {"model": "resnet50", "infer_img_size": 512, "status": "skipped", "device": "cpu"},
        {
            "model": "vim_tiny",
            "family": "vim",
            "infer_img_size": 224,
            "status": "oom",
            "device": "cuda",
            "device_name": "GPU X",
            "precision": "float32",
        },
        {"model": "no_size", "status": "ok"},  # no size: dropped
    ]
    auto = {
        "model": "vim_tiny",
        "family": "vim",
        "device": "cuda",
        "device_name": "GPU X",
        "precision": "float32",
        "status": "ok",
        "config": {"batch": "auto"},
    }
    odd += [  # batch=auto: the measured batch varies, the section does not
        {**auto, "infer_img_size": 512, "infer_batch_size": 128, "infer_step_time": 256.0},
        {**auto, "infer_img_size": 1024, "infer_batch_size": 32, "infer_step_time": 256.0},
        {**auto, "infer_img_size": 1248, "infer_batch_size": None, "status": "oom"},
        {**auto, "infer_img_size": 512, "config": {"batch": 8, "measure": {"train": True}}},
        {**auto, "infer_img_size": 768, "infer_gmacs": "bad"},  # wrong type: refused
    ]
    for i, row in enumerate(odd):
        write_row(row_path(tmp_path, "odd", f"h{i}"), row)
    text = build_report(tmp_path).read_text()
    assert "| skipped |" in text and "| OOM |" in text and "## GPU X · float32 · batch 1\n" in text
    assert "## GPU X · float32 · batch auto\n" in text
    assert "## GPU X · float32 · batch 8 · training step\n" in text
    # wrong-typed and size-less rows are refused and named, not shown or dropped silently
    assert "- `rows/odd/h8.json`: infer_gmacs is 'bad', not a number" in text
    assert "- `rows/odd/h3.json`: no infer_img_size" in text
    table = pd.read_csv(tmp_path / "results.csv")
    assert len(table) == 7
    auto_ms = table[table["batch_setting"] == "auto"].set_index("infer_img_size")["ms_per_img"]
    assert auto_ms[512] == 2.0 and auto_ms[1024] == 8.0


# --- issue 16: skipped files named, wrong types refused, noisy timings flagged, bad CLI input ---


def test_report_names_every_file_it_skips(tmp_path: Path) -> None:
    good = fixture_rows()[0]
    write_row(row_path(tmp_path, "cpu", "good"), good)
    write_row(row_path(tmp_path, "cpu", "typed"), {**good, "infer_samples_per_sec": "fast"})
    write_row(row_path(tmp_path, "cpu", "status"), {**good, "status": 3, "infer_img_size": 384})
    (tmp_path / "rows" / "cpu" / "cut.json").write_text('{"model": "resnet50", "infer_')
    (tmp_path / "rows" / "cpu" / "aside.json.corrupt").write_text("{")
    skipped: list = []
    text = build_report(tmp_path, skipped=skipped).read_text()
    assert sorted(p.name for p, _ in skipped) == [
        "aside.json.corrupt",
        "cut.json",
        "status.json",
        "typed.json",
    ]
    assert "## Skipped files" in text
    assert "- `rows/cpu/typed.json`: infer_samples_per_sec is 'fast', not a number" in text
    assert "- `rows/cpu/status.json`: status is 3, not text" in text
    assert "- `rows/cpu/cut.json`: unreadable (JSONDecodeError: " in text
    assert "- `rows/cpu/aside.json.corrupt`: set aside by the sweep as unreadable" in text
    table = pd.read_csv(tmp_path / "results.csv")
    assert len(table) == 1
    assert table["infer_samples_per_sec"].iloc[0] == good["infer_samples_per_sec"]


def test_noisy_timings_are_flagged_in_the_report(tmp_path: Path) -> None:
    row = fixture_rows()[0]
    note = "noisy in 2 tries: other processes kept 1.6 cores busy (limit 0.5)"
    write_row(row_path(tmp_path, "cpu", "a"), {**row, "timing_note": note, "step_spread": 0.1})
    text = build_report(tmp_path).read_text()
    assert "## Noisy timings" in text and note in text
    assert pd.read_csv(tmp_path / "results.csv")["timing_note"].iloc[0] == note


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["NOPE"], "no results folder"),
        (["RESULTS", "--accuracy-size", "0"], "must be a positive integer (pixels), got '0'"),
        (["RESULTS", "--accuracy-size", "abc"], "must be a positive integer (pixels), got 'abc'"),
    ],
)
def test_report_cli_refuses_bad_input_with_one_line(tmp_path: Path, args, complaint) -> None:
    (tmp_path / "results").mkdir()
    paths = {"NOPE": str(tmp_path / "no" / "such"), "RESULTS": str(tmp_path / "results")}
    proc = subprocess.run(
        [sys.executable, "-m", "study.report", *(paths.get(a, a) for a in args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and complaint in lines[0], proc.stderr
    assert not (tmp_path / "no").exists()  # nothing created
    assert not (tmp_path / "results" / "REPORT.md").exists()  # no work done


# --- issue 14: training-step rows (mode "train") beside inference ------------------------------


def _train_rows() -> list[dict]:
    """deit_tiny (quadratic) and vim_tiny (linear) training steps at three sizes, plus the same
    cells at inference: the report gives the training section its own tables and crossovers."""
    rows = []
    for mode in ("inference", "train"):
        for model, family, k in (("deit_tiny_patch16_224", "vit", 2.0), ("vim_tiny", "vim", 1.0)):
            for size in (224, 512, 1024):
                scale = (size / 224) ** (2 * k)
                base = 3.0 if mode == "train" else 1.0
                cost = base * scale * (4.0 if family == "vim" else 1.0)
                step = {"infer_step_time": 10 * cost} if mode == "inference" else {}
                if mode == "train":
                    step = {"train_step_time": 10 * cost, "train_samples_per_sec": 100 / cost}
                rows.append({
                    "model": model, "family": family, "infer_img_size": size,
                    "infer_batch_size": 1, "device": "cpu", "device_name": "cpu (test)",
                    "precision": "float32", "attn": "fused" if family == "vit" else "",
                    "scan_backend": "cpu" if family == "vim" else "", "status": "ok",
                    "infer_gmacs": cost, "predicted_peak_mib": 5 * cost,
                    "measured_peak_mib": 5 * cost, "measured_activations_mib": 4 * cost,
                    "predicted_activations_mib": 4 * cost,
                    "measured_rss_activations_mib": 4.2 * cost, "mode": mode,
                    "time": "2026-12-05T00:00:00+00:00",
                    "config": {"batch": 1, "measure": {"train": mode == "train"}}, **step,
                })  # fmt: skip
    return rows


def test_training_rows_get_their_own_tables_exponents_and_crossovers(tmp_path: Path) -> None:
    for i, row in enumerate(_train_rows()):
        write_row(row_path(tmp_path, "cpu", f"t{i}"), row)
    text = build_report(tmp_path, baseline="deit_tiny_patch16_224 (fused)").read_text()
    train = text.split("## cpu (test) · float32 · batch 1 · training step\n")[1].split("\n## ")[0]
    assert "GMACs per image of a training step (forward + backward)" in train
    assert "Training throughput (img/s)" in train and "Published figures" not in train
    # time per image from train_step_time: vim 4x dearer, linear; deit quadratic -> they cross
    exponents = train.split("### Scaling exponents")[1].split("### Crossovers")[0]
    assert "2.00 / 2.00" in exponents and "1.00 / 1.00" in exponents
    crossover = train.split("### Crossovers")[1]
    assert "448" in crossover  # (224 px)·√4: where 4·(s/224)² = (s/224)⁴
    table = pd.read_csv(tmp_path / "results.csv")
    timed = table[(table["mode"] == "train") & (table["infer_img_size"] == 224)]
    assert sorted(timed["ms_per_img"]) == [30.0, 120.0]
    # the memory check names training rows and the ±15% check at the largest size
    assert "Training step, at each model's largest measured size:" in text
    assert "(2 of 2 within ±15%)" in text and "vim_tiny @1024 batch 1 -4.8%" in text


def test_claims_read_inference_rows_only(tmp_path: Path) -> None:
    from study.report.claims_common import default_rows

    frame = tidy(_train_rows())
    assert set(default_rows(frame)["mode"]) == {"inference"}
