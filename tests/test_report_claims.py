"""The Claims section: every claim once with one verdict; verdicts follow the data; missing data
gives `not testable here`. Rows are synthetic power laws (cost ∝ pixels^k) unless they come from
tests/fixtures/rows.jsonl."""

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from study.report import build_report, tidy
from study.report.claims import VERDICTS, Claim, Inputs, check_claims
from study.report.published import DATA_DIR
from study.rows import row_path, write_row

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "rows.jsonl"
NUMBERS = [str(n) for n in range(1, 11)] + ["11 (window fixed)", "11 (window scaled)"]
SIZES = (224, 512, 768, 1024, 1248)


def fixture_rows() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]


def power_rows(
    model: str,
    family: str,
    k_gmacs: float,
    k_mem: float,
    *,
    attn: str = "",
    scan: str = "",
    device: str = "cpu",
    scale: float = 1.0,
    status: dict[int, str] | None = None,
) -> list[dict]:
    """One ok row per size: GMACs ∝ pixels^k_gmacs, activations ∝ pixels^k_mem, time ∝ GMACs."""
    rows = []
    for size in SIZES:
        px = (size / 224) ** 2
        state = (status or {}).get(size, "ok")
        act = scale * 5.0 * px**k_mem
        step_ms = scale * 20.0 * px**k_gmacs
        rows.append(
            {
                "model": model,
                "family": family,
                "infer_img_size": size,
                "infer_batch_size": 1,
                "device": device,
                "device_name": "NVIDIA H200" if device == "cuda" else "cpu (2 threads)",
                "precision": "float32",
                "attn": attn,
                "scan_backend": scan,
                "status": state,
                "param_count": 10.0,
                "infer_gmacs": scale * 2.0 * px**k_gmacs,
                "measured_activations_mib": act if state == "ok" else None,
                "predicted_activations_mib": act,
                "measured_peak_mib": 40.0 + act if state == "ok" else None,
                "infer_step_time": step_ms if state == "ok" else None,
                "infer_samples_per_sec": 1000.0 / step_ms if state == "ok" else None,
                "time": "2026-01-01T00:00:00Z",
            }
        )
    return rows


def frame_with(rows: list[dict], **columns: str) -> pd.DataFrame:
    """tidy(rows) with extra columns set, as rows will carry them (`options`, `window`)."""
    frame = tidy(rows)
    for col, value in columns.items():
        frame[col] = value
    return frame


def by_number(claims: list[Claim]) -> dict[str, Claim]:
    return {c.number: c for c in claims}


def claim(frame: pd.DataFrame, number: str, erf: pd.DataFrame | None = None, **kw) -> Claim:
    inputs = Inputs(frame, pd.DataFrame() if erf is None else erf, **kw)
    return by_number(check_claims(inputs))[number]


def test_every_claim_once_with_one_valid_verdict() -> None:
    claims = check_claims(Inputs(tidy(fixture_rows()), pd.DataFrame()))
    assert [c.number for c in claims] == NUMBERS
    for c in claims:
        assert c.verdict in VERDICTS, c
        assert c.why and c.claim and c.evidence, c


def test_report_has_the_claims_table(tmp_path: Path) -> None:
    for row in fixture_rows():
        write_row(row_path(tmp_path, row["device"], row["config_hash"]), row)
    text = build_report(tmp_path).read_text()
    section = text.split("## Claims", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if re.match(r"^\| (\d|11 )", line)]
    assert [line.split(" | ")[0].removeprefix("| ") for line in lines] == NUMBERS
    for line in lines:
        verdicts = re.findall(r"\*\*([a-z ]+)\*\*", line)
        assert len(verdicts) == 1 and verdicts[0] in VERDICTS, line
    assert not re.search(r"\bnan\b", section, flags=re.I)


def test_missing_data_is_not_testable(tmp_path: Path) -> None:
    claims = check_claims(Inputs(tidy([]), pd.DataFrame(), data_dir=tmp_path))
    assert [c.number for c in claims] == NUMBERS
    for c in claims:
        assert c.verdict == "not testable here", c
        assert "issing" in c.why, c  # the reason names what is missing


def test_cnn_verdict_follows_the_exponent() -> None:
    linear = tidy(power_rows("resnet50", "cnn", 1.0, 1.0))
    assert claim(linear, "1").verdict == "holds"
    quadratic = tidy(power_rows("resnet50", "cnn", 1.0, 2.0))
    assert claim(quadratic, "1").verdict == "does not hold"


def test_vit_verdict_follows_the_memory_exponent() -> None:
    naive = power_rows("deit_small_patch16_224", "vit", 1.8, 2.0, attn="naive")
    fused = power_rows("deit_small_patch16_224", "vit", 1.8, 1.0, attn="fused")
    both = claim(tidy(naive + fused), "2")
    assert both.verdict == "holds with a caveat"
    assert "SDPA" in both.why and "1.00" in both.why
    assert claim(tidy(naive), "2").verdict == "holds"
    flat = power_rows("deit_small_patch16_224", "vit", 1.0, 1.0, attn="naive")
    assert claim(tidy(flat), "2").verdict == "does not hold"


def erf_frame(*rows: tuple[str, str, str, float, float]) -> pd.DataFrame:
    cols = ["model", "family", "weights", "r50_frac", "cross_index"]
    frame = pd.DataFrame(rows, columns=cols)
    return frame.assign(img_size=1024, area_ratio_99=0.5)


def test_ssm_claim_needs_a_trained_erf_for_the_global_field() -> None:
    rows = tidy(power_rows("vim_tiny", "vim", 1.0, 1.0, scan="cpu"))
    init = erf_frame(("vim_small", "vim", "random init", 0.007, 1.06))
    untrained = claim(rows, "3", init)
    assert untrained.verdict == "holds with a caveat"
    assert "random init is not a trained ERF" in untrained.why
    trained = erf_frame(("vim_small", "vim", "trained", 0.3, 1.0))
    assert claim(rows, "3", trained).verdict == "holds"
    quadratic = tidy(power_rows("vim_tiny", "vim", 1.0, 2.0, scan="cpu"))
    assert claim(quadratic, "3", trained).verdict == "does not hold"


def test_erf_claims_follow_the_erf_rows() -> None:
    empty = tidy([])
    init = erf_frame(
        ("resnet50", "cnn", "random init", 0.004, 1.0),
        ("deit_small_patch16_224", "vit", "random init", 0.22, 1.0),
        ("vmamba_tiny", "vmamba", "random init", 0.04, 0.97),
    )
    assert claim(empty, "5", init).verdict == "holds with a caveat"
    assert claim(empty, "6", init).verdict == "not testable here"
    cross = erf_frame(("vmamba_tiny", "vmamba", "trained", 0.3, 2.0))
    assert claim(empty, "6", pd.concat([init, cross])).verdict == "holds"
    no_cross = erf_frame(("vmamba_tiny", "vmamba", "trained", 0.3, 1.0))
    assert claim(empty, "6", pd.concat([init, no_cross])).verdict == "holds with a caveat"
    local = erf_frame(("vmamba_tiny", "vmamba", "trained", 0.02, 1.0))
    assert claim(empty, "6", pd.concat([init, local])).verdict == "does not hold"
    trained = erf_frame(
        ("resnet50", "cnn", "trained", 0.2, 1.0),
        ("deit_small_patch16_224", "vit", "trained", 0.3, 1.0),
    )
    assert claim(empty, "5", trained).verdict == "does not hold"  # a global trained CNN ERF


def test_vim_figure1_oom_reproduced_or_not() -> None:
    vim = power_rows("vim_tiny", "vim", 1.0, 1.0, scan="triton", device="cuda")
    deit = power_rows("deit_tiny_patch16_224", "vit", 1.8, 2.0, attn="naive", device="cuda")
    ran = claim(tidy(vim + deit), "4")
    assert ran.verdict == "holds with a caveat"
    assert "does not reproduce on the measured device (NVIDIA H200" in ran.why
    oom = power_rows(
        "deit_tiny_patch16_224", "vit", 1.8, 2.0, attn="naive", device="cuda", status={1248: "oom"}
    )
    assert claim(tidy(vim + oom), "4").verdict == "holds"
    slow = power_rows("vim_tiny", "vim", 1.0, 1.0, scan="triton", device="cuda", scale=1e4)
    assert claim(tidy(slow + deit), "4").verdict == "does not hold"
    # the claim is about GPUs: a GPU section decides, a CPU section only adds evidence
    cpu = power_rows("vim_tiny", "vim", 1.0, 1.0, scan="cpu") + power_rows(
        "deit_tiny_patch16_224", "vit", 1.8, 2.0, attn="naive"
    )
    mixed = claim(tidy(vim + oom + cpu), "4")
    assert mixed.verdict == "holds" and "cpu (2 threads)" in mixed.evidence
    assert "crossovers Vim-Ti against DeiT-Ti (naive)" in mixed.evidence


def test_naive_scan_memory_against_the_fused_one() -> None:
    fused = power_rows("vim_tiny", "vim", 1.0, 1.0, scan="cpu")
    naive = power_rows("vim_tiny", "vim", 1.0, 1.0, scan="naive", scale=10.0)
    on_cpu = claim(tidy(fused + naive), "8")
    assert on_cpu.verdict == "holds with a caveat" and "SRAM" in on_cpu.why
    assert "10.0× memory" in on_cpu.evidence
    gpu_fused = power_rows("vim_tiny", "vim", 1.0, 1.0, scan="triton", device="cuda")
    gpu_naive = power_rows("vim_tiny", "vim", 1.0, 1.0, scan="naive", device="cuda", scale=10.0)
    assert claim(tidy(gpu_fused + gpu_naive), "8").verdict == "holds"
    same = power_rows("vim_tiny", "vim", 1.0, 1.0, scan="naive")
    assert claim(tidy(fused + same), "8").verdict == "does not hold"
    # a naive row without a measurement still compares predicted memory
    timed_out = power_rows(
        "vim_tiny", "vim", 1.0, 1.0, scan="naive", scale=10.0, status={1248: "timeout"}
    )
    assert "1248 px 10.0× memory (predicted)" in claim(tidy(fused + timed_out), "8").evidence


def test_naive_scan_verdict_is_vims_vmambas_ratio_only_shown() -> None:
    """Claim 8 is about Vim's scan (d_state 16): VMamba's (d_state 1, little to materialise) is
    shown as evidence and named in the why, but does not turn a Vim result into "does not hold"."""
    vim = power_rows("vim_tiny", "vim", 1.0, 1.0, scan="cpu") + power_rows(
        "vim_tiny", "vim", 1.0, 1.0, scan="naive", scale=5.0
    )
    vmamba = power_rows("vmamba_tiny", "vmamba", 1.0, 1.0, scan="cpu") + power_rows(
        "vmamba_tiny", "vmamba", 1.0, 1.0, scan="naive", scale=1.1
    )
    both = claim(tidy(vim + vmamba), "8")
    assert both.verdict == "holds with a caveat"
    assert "vmamba_tiny naive/fused scan" in both.evidence and "vmamba_tiny 1.10×" in both.why
    assert claim(tidy(vmamba), "8").verdict == "not testable here"


def test_ablation_cost_beside_the_published_change() -> None:
    default = frame_with(power_rows("vim_tiny", "vim", 1.0, 1.0, scan="cpu"), options="default")
    uni = frame_with(
        power_rows("vim_tiny", "vim", 1.0, 1.0, scan="cpu", scale=0.6), options="unidirectional"
    )
    assert claim(default, "7").verdict == "not testable here"
    result = claim(pd.concat([default, uni], ignore_index=True), "7")
    # Vim Table 4: +0.7 top-1 (little) but +3.6 mIoU (not little)
    assert result.verdict == "holds with a caveat"
    assert "GMACs −40%" in result.evidence and "+3.6" in result.evidence
    assert "VMamba's directions are not measured" in result.why
    vm_default = frame_with(power_rows("vmamba_tiny", "vmamba", 1.0, 1.0, scan="cpu"), options="")
    one = frame_with(
        power_rows("vmamba_tiny", "vmamba", 1.0, 1.0, scan="cpu", scale=0.3), options="directions1"
    )
    both = claim(pd.concat([default, uni, vm_default, one], ignore_index=True), "7")
    assert both.verdict == "holds with a caveat"
    assert "no accuracy change at equal width" in both.why and "GMACs −70%" in both.evidence
    # the ablated rows leave the other claims' default variants alone
    assert "unidirectional" not in claim(pd.concat([default, uni]), "3").evidence


def test_windowed_attention_verdict_per_window() -> None:
    fixed = frame_with(power_rows("swin_tiny", "windowed_vit", 1.0, 1.0), window="fixed")
    scaled = frame_with(power_rows("swin_tiny", "windowed_vit", 1.9, 2.0), window="scaled")
    claims = by_number(check_claims(Inputs(pd.concat([fixed, scaled]), pd.DataFrame())))
    assert claims["11 (window fixed)"].verdict == "does not hold"
    assert claims["11 (window scaled)"].verdict == "holds"


def test_published_figures_decide_claims_9_and_10(tmp_path: Path) -> None:
    empty = tidy([])
    assert claim(empty, "10").verdict == "holds with a caveat"  # COCO: no comparable Vim figure
    shutil.copy(DATA_DIR / "published_cost.csv", tmp_path)
    accuracy = pd.read_csv(DATA_DIR / "published_accuracy.csv")
    accuracy.loc[accuracy["model"] == "vim_small", "value"] = 99.0
    accuracy.to_csv(tmp_path / "published_accuracy.csv", index=False)
    assert claim(empty, "10", data_dir=tmp_path).verdict == "does not hold"

    assert claim(empty, "9").verdict == "holds with a caveat"  # only vmamba_tiny_v0 has no MLP
    blocks = pd.read_csv(DATA_DIR / "block_costs.csv")
    blocks.to_csv(tmp_path / "block_costs.csv", index=False)
    assert claim(empty, "9", data_dir=tmp_path).verdict == "holds with a caveat"
    blocks[blocks["model"] != "vmamba_tiny"].to_csv(tmp_path / "block_costs.csv", index=False)
    assert claim(empty, "9", data_dir=tmp_path).verdict == "holds"
    blocks.assign(pos_embed=True).to_csv(tmp_path / "block_costs.csv", index=False)
    assert claim(empty, "9", data_dir=tmp_path).verdict == "does not hold"


@pytest.mark.parametrize("name", ["ablation_accuracy.csv", "claim_figures.csv", "block_costs.csv"])
def test_claim_data_have_sources(name: str) -> None:
    frame = pd.read_csv(DATA_DIR / name, keep_default_na=False)
    assert len(frame) and (frame["source"].str.len() > 0).all()


def test_block_costs_csv_is_what_the_script_computes() -> None:
    from study.data.block_costs import block_rows

    committed = pd.read_csv(DATA_DIR / "block_costs.csv")
    for model in ("deit_tiny_patch16_224", "vmamba_tiny_v0"):
        ours = pd.DataFrame(block_rows(model))
        theirs = committed[committed["model"] == model].drop(columns="source")
        pd.testing.assert_frame_equal(ours.reset_index(drop=True), theirs.reset_index(drop=True))
    deit = committed[committed["model"] == "deit_tiny_patch16_224"].iloc[0]
    assert deit["params_over_d2"] == pytest.approx(12, abs=0.1)  # 12·d² plus norms and biases
    assert bool(deit["pos_embed"]) and bool(deit["mlp"]) and deit["blocks"] == 12
