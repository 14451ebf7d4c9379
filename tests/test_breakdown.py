"""Where the time goes: op categories, the shares of a real profiled forward, the report section."""

import pandas as pd
import pytest

from study.measure import breakdown
from study.report.breakdown import breakdown_section


@pytest.mark.parametrize(
    ("op", "category"),
    [
        ("aten::addmm", "matmul"),
        ("aten::bmm", "matmul"),
        ("aten::mkldnn_convolution", "convolution"),
        ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
        ("aten::_softmax", "attention"),
        ("kernels::selective_scan", "selective_scan"),
        ("kernels::cross_merge", "cross_scan"),
        ("aten::native_layer_norm", "normalisation"),
        ("aten::_fused_rms_norm", "normalisation"),
        ("aten::gelu", "elementwise"),
        ("aten::copy_", "copies"),
        ("aten::flip", "copies"),
        ("aten::empty", "other"),
    ],
)
def test_category_of(op, category):
    assert breakdown.category_of(op) == category


def test_shares_of_a_real_forward_sum_to_one_and_see_the_scan(tmp_path):
    args = ["--models", "test_vim", "test_vmamba", "--img-sizes", "32", "--repeats", "1"]
    out = breakdown.main([*args, "--out-dir", str(tmp_path)])
    frame = pd.read_csv(out)
    assert sorted(frame["model"]) == ["test_vim", "test_vmamba"]
    shares = frame[[f"time_share_{c}" for c in breakdown.CATEGORIES]]
    assert ((shares.sum(axis=1) - 1).abs() < 1e-3).all()
    assert (frame["time_share_selective_scan"] > 0).all() and (frame["time_share_matmul"] > 0).all()
    assert (frame["gemm_gmacs_per_s"] > 0).all() and (frame["achieved_gmacs_per_s"] >= 0).all()
    # a second run at another size keeps the first rows (merged by device, model, size)
    breakdown.main(["--models", "test_vim", "--img-sizes", "64", "--repeats", "1",
                    "--out-dir", str(tmp_path)])  # fmt: skip
    assert len(pd.read_csv(out)) == 3

    lines = breakdown_section(tmp_path, tmp_path / "plots")
    assert lines[0] == "## Where the time goes"
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("breakdown_*.png"))
    assert len(pngs) == 2 and pngs[0].endswith("_32.png") and pngs[1].endswith("_64.png")
    assert sum(line.startswith("![time by kind of op") for line in lines) == 2


def test_no_breakdown_files_no_section(tmp_path):
    assert breakdown_section(tmp_path, tmp_path / "plots") == []
