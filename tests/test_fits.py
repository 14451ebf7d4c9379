"""The fits table: largest power-of-two batch under a predicted CUDA peak (study.measure.fits)."""

import math

import pandas as pd
import pytest
import torch

from study.measure import fits
from study.models import create
from study.report.fits import fits_section


def test_largest_pow2_batch_arithmetic():
    assert fits.largest_pow2_batch(100.0, 10.0, 99.0) == 0  # batch 1 does not fit
    assert fits.largest_pow2_batch(100.0, 10.0, 100.0) == 1
    assert fits.largest_pow2_batch(100.0, 10.0, 169.0) == 4  # 8 would need 170
    assert fits.largest_pow2_batch(100.0, 10.0, 170.0) == 8
    assert fits.largest_pow2_batch(100.0, 10.0, 180.0) == 8
    assert fits.largest_pow2_batch(100.0, 0.0, 180.0) == fits.MAX_BATCH


def test_rows_fit_their_capacity_and_the_next_power_of_two_does_not():
    rows = fits.fits_rows("resnet50", 224, "float32", capacities_gib=(1.0, 4.0), verify=True)
    assert [r["capacity_gib"] for r in rows] == [1.0, 4.0]
    for r in rows:
        cap_mib = r["capacity_gib"] * fits.GIB_MIB
        b = r["batch"]
        assert b >= 1 and b & (b - 1) == 0
        assert r["verified_peak_gib"] * fits.GIB_MIB <= cap_mib  # predicted at b: it fits
        doubled = r["fit_batch1_mib"] + (2 * b - 1) * r["per_image_mib"]
        assert doubled > cap_mib  # 2b would not
        assert abs(r["linearity_error_pct"]) < fits.NEAR_PCT  # affine in the batch, nearly
        assert r["source"] == "predicted" and r["device"] == "cuda"
    assert rows[1]["batch"] > rows[0]["batch"]


def test_cli_rejects_bad_input_with_exit_code_2(capsys):
    with pytest.raises(SystemExit) as err:
        fits.main(["--sizes", "0", "--out", "/nonexistent/x.csv"])
    assert err.value.code == 2
    assert "positive" in capsys.readouterr().err


def test_cli_writes_the_csv_and_the_report_section_reads_it(tmp_path):
    out = tmp_path / "fits_cuda_predicted.csv"
    args = ["--models", "resnet50", "--sizes", "224", "--precisions", "bfloat16",
            "--capacities-gib", "0.05", "2", "--verify", "--out", str(out)]  # fmt: skip
    assert fits.main(args) == 0
    frame = pd.read_csv(out)
    assert list(frame.columns) == list(fits.COLUMNS)
    assert list(frame["batch"])[0] == 0 and frame["batch"].iloc[1] > 0  # 51 MiB < the weights
    assert math.isnan(frame["verified_peak_gib"].iloc[1])  # --verify with no model: none
    lines = fits_section(tmp_path, tmp_path / "plots")
    text = "\n".join(lines)
    assert "(predicted)" in text and "### Inference, bfloat16" in text
    assert f"| resnet50 | — / {frame['batch'].iloc[1]} |" in text
    assert (tmp_path / "plots" / "fits_cuda_predicted_bfloat16.png").exists()
    assert fits_section(tmp_path / "nothing", tmp_path / "plots") == []


def test_batches_near_a_capacity_are_decided_by_a_prediction_not_the_extrapolation():
    with torch.device("meta"):
        model = create("resnet50", 224)
    low, high = fits.FIT_BATCHES
    p_low = fits._peak_mib(model, 224, low, "bfloat16")
    per_image = (fits._peak_mib(model, 224, high, "bfloat16") - p_low) / (high - low)
    edge_gib = (p_low + (64 - low) * per_image) / fits.GIB_MIB  # batch 64 lands on the capacity
    far_gib = (p_low + (96 - low) * per_image) / fits.GIB_MIB  # between 64 and 128: far from both
    near, far = fits.fits_rows("resnet50", 224, "bfloat16", (edge_gib, far_gib))
    assert not math.isnan(near["verified_peak_gib"])
    assert near["verified_peak_gib"] <= edge_gib
    assert math.isnan(far["verified_peak_gib"]) and far["batch"] == 64


def test_report_and_measurement_agree_on_the_fit_batches():
    from study.report import fits as report_fits

    assert report_fits.FIT_BATCHES == fits.FIT_BATCHES


def test_train_mode_writes_its_own_csv_and_section(tmp_path, capsys):
    out = tmp_path / "fits_cuda_predicted_train.csv"
    args = ["--mode", "train", "--models", "deit_tiny_patch16_224", "--sizes", "224",
            "--capacities-gib", "1", "--verify", "--out", str(out)]  # fmt: skip
    assert fits.main(args) == 0
    frame = pd.read_csv(out)
    assert list(frame["mode"]) == ["train"] and list(frame["precision"]) == ["float32"]
    train_peak = frame["per_image_mib"].iloc[0]
    with torch.device("meta"):
        model = create("deit_tiny_patch16_224", 224)
    low, high = fits.FIT_BATCHES
    infer = (fits._peak_mib(model, 224, high, "float32") - fits._peak_mib(model, 224, low,
             "float32")) / (high - low)  # fmt: skip
    assert train_peak > 2 * infer  # a step keeps every activation for the backward
    text = "\n".join(fits_section(tmp_path, tmp_path / "plots"))
    assert "### Training step, float32" in text and "### Inference" not in text
    assert (tmp_path / "plots" / "fits_cuda_predicted_train_float32.png").exists()
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as err:
            fits.main(["--mode", "train", "--precisions", "bfloat16", "--out", str(out)])
        assert err.value.code == 2
        assert "allowed here: --precisions float32" in capsys.readouterr().err
