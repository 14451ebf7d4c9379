"""Swin (family windowed_vit) with its window fixed or scaled: the zoo, its FLOPs, the sweep's
`window` axis and the report's window variants."""

import pytest
import torch
from hydra import compose, initialize_config_dir

import study.models as zoo
from study import sweep
from study.measure import count_flops
from study.models.timm_zoo import window_size_for
from study.report import tidy
from study.report.analysis import crossover_table, exponent_table
from study.report.published import read_published

SWIN_T = "swin_tiny_patch4_window7_224"
TEST_SWIN = {"embed_dim": 16, "depths": (2, 2, 2, 2)}  # as study.models.timm_zoo.TEST_VARIANTS


def swin_gmacs(size: int, window: int, embed_dim: int = 96, depths=(2, 2, 6, 2)) -> float:
    """GMACs of one Swin forward at `size` px with a `window`-token window, by hand, in the
    convention of study.measure (1 multiply-add = 1 MAC; layer norm 5 per element; adds, softmax,
    the relative-position bias, rolls and pooling uncounted).

    Patch embedding: a 4x4 conv, stride 4, 3 -> C channels on (size/4)² tokens, then a norm.
    Stage i > 0 first merges 2x2 patches (the side halves, rounded up: timm pads an odd side),
    a norm and a 4C -> 2C linear on each new token. In each of a stage's blocks (N tokens, C
    channels), timm shrinks a window larger than the stage's side to the side and pads the side
    up to a multiple of the window (Np tokens after padding); attention runs on the padded
    windows: qkv 3C² and proj C² per padded token, q·kᵀ and attn·v each w²·C per padded token
    (every token meets the w² tokens of its window, the heads splitting C); the MLP (C -> 4C ->
    C, 8C²) and the two norms run on the N real tokens. Then a final norm and the 1000-way head.
    """
    side, dim = size // 4, embed_dim
    macs = side * side * 3 * 16 * dim + 5 * side * side * dim
    for stage, depth in enumerate(depths):
        if stage > 0:
            dim_in = dim
            side, dim = -(-side // 2), 2 * dim
            macs += side * side * 4 * dim_in * (5 + dim)
        w = min(window, side)
        tokens, padded = side * side, (-(-side // w) * w) ** 2
        attention = 4 * padded * dim * dim + 2 * padded * w * w * dim
        macs += depth * (attention + 8 * tokens * dim * dim + 2 * 5 * tokens * dim)
    macs += 5 * side * side * dim + dim * 1000
    return macs / 1e9


def block_windows(model: torch.nn.Module) -> list[int]:
    """The window side of the first block of each stage."""
    return [stage.blocks[0].window_size[0] for stage in model.layers]


# --- the zoo ----------------------------------------------------------------------------------


def test_window_size_for_fixed_and_scaled():
    assert {window_size_for(s, "fixed") for s in (224, 384, 1248)} == {7}
    # 384 -> 12 is Swin's own 384-px setting (swin_base_patch4_window12_384)
    scaled = [window_size_for(s, "scaled") for s in (224, 384, 512, 768, 1024, 1248)]
    assert scaled == [7, 12, 16, 24, 32, 39]
    assert window_size_for(300, "scaled") == 9  # 9.375 rounds to 9
    assert window_size_for(336, "scaled") == 11  # 10.5 rounds up
    with pytest.raises(ValueError, match="unknown window 'big'; allowed: fixed, scaled"):
        window_size_for(224, "big")


def test_swin_is_built_with_its_window():
    fixed = zoo.create("test_swin", 96, window="fixed")
    scaled = zoo.create("test_swin", 96, window="scaled")
    assert zoo.family_of("test_swin") == "windowed_vit"
    # stage sides 24, 12, 6, 3: timm shrinks a window larger than its stage to the stage
    assert block_windows(fixed) == [7, 7, 6, 3]
    assert block_windows(scaled) == [3, 3, 3, 3]
    assert block_windows(zoo.create("test_swin", 96)) == [7, 7, 6, 3]  # fixed by default
    with torch.device("meta"):
        big = zoo.create(SWIN_T, 768, window="scaled")
    assert block_windows(big) == [24, 24, 24, 24]
    table = big.layers[0].blocks[0].attn.relative_position_bias_table
    assert table.shape == ((2 * 24 - 1) ** 2, 3)


@pytest.mark.parametrize("window", ["fixed", "scaled"])
def test_feature_map_and_logits_at_an_odd_size(window):
    model = zoo.create("test_swin", 100, window=window)  # sides 25, 13, 7, 4: padded merges
    x = torch.randn(2, 3, 100, 100)
    with torch.no_grad():
        logits, fmap = model(x), zoo.feature_map(model, x)
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()
    assert fmap.shape == (2, 128, 4, 4) and torch.isfinite(fmap).all()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: zoo.create("resnet50", 224, window="fixed"), "window= applies only to windowed"),
        (lambda: zoo.create("test_swin", 64, window="big"), "unknown window 'big'; allowed"),
        (lambda: zoo.create("test_swin", 64, attn="naive"), "attn= applies only to ViTs"),
        (
            lambda: zoo.create("test_swin", 64, window="fixed", window_size=5),
            "window= or window_size=, not both",
        ),
        (lambda: zoo.create("test_swin", 64, windw=3), "bad override .*allowed: .*window"),
    ],
)
def test_bad_input_raises_one_clear_line(call, message):
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


# --- FLOPs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 96, 100, 160])
@pytest.mark.parametrize("window", ["fixed", "scaled"])
def test_counted_gmacs_match_the_hand_count(size, window):
    with torch.device("meta"):
        model = zoo.create("test_swin", size, window=window)
    expected = swin_gmacs(size, window_size_for(size, window), **TEST_SWIN)
    assert count_flops(model, size) == pytest.approx(expected, rel=1e-9)


def test_swin_t_gmacs_published_and_by_hand():
    counted = {}
    for size, window in [(224, "fixed"), (768, "fixed"), (768, "scaled")]:
        with torch.device("meta"):
            model = zoo.create(SWIN_T, size, window=window)
        counted[size, window] = count_flops(model, size)
        assert counted[size, window] == pytest.approx(
            swin_gmacs(size, window_size_for(size, window)), rel=1e-9
        )
    published = read_published("cost").set_index(["model", "metric"])
    swin_t_224 = published.loc[(SWIN_T, "infer_gmacs"), "value"]
    assert counted[224, "fixed"] == pytest.approx(swin_t_224, abs=0.05)  # 4.51 against 4.5
    assert counted[768, "fixed"] == pytest.approx(54.65, abs=0.005)  # the figure
    assert counted[768, "scaled"] > 1.25 * counted[768, "fixed"]  # the quadratic term is back


# --- the sweep --------------------------------------------------------------------------------


def test_window_is_part_of_swin_cells_only(tmp_path):
    def cell(*overrides):
        with initialize_config_dir(str(sweep.CONF_DIR), version_base="1.3"):
            cfg = compose("sweep", overrides=[f"results_dir={tmp_path}", *overrides])
        return sweep.cell_of(cfg)

    assert cell("model=test_swin", "window=scaled")["window"] == "scaled"
    assert cell("model=test_swin", "attn=naive")["attn"] == ""
    # other families' cells have no window key at all: their config hashes are those from before
    assert "window" not in cell("model=test_resnet") and "window" not in cell("model=test_vit")


def test_swin_cell_row_says_its_window(tmp_path):
    with initialize_config_dir(str(sweep.CONF_DIR), version_base="1.3"):
        cfg = compose("sweep", overrides=[f"results_dir={tmp_path}", "model=test_swin",
                                          "img_size=96", "window=scaled"])  # fmt: skip
    row = sweep.run_cell(cfg)
    assert row["status"] == "ok", row["error"]
    assert row["window"] == "scaled" and row["family"] == "windowed_vit" and row["attn"] == ""
    assert row["infer_gmacs"] == pytest.approx(swin_gmacs(96, 3, **TEST_SWIN), rel=1e-9)


# --- the report -------------------------------------------------------------------------------


def _row(model, family, size, gmacs, **extra):
    return {"model": model, "family": family, "infer_img_size": size, "device": "cpu",
            "device_name": "cpu", "precision": "float32", "status": "ok", "infer_gmacs": gmacs,
            "predicted_peak_mib": gmacs, "time": "2026-01-01T00:00:00Z", "attn": "",
            "scan_backend": "", "window": "", **extra}  # fmt: skip


def test_report_keeps_both_windows_and_compares_ssms_with_swin():
    sizes = [224, 512, 1024]
    rows = []
    for s in sizes:
        px = (s / 224) ** 2
        rows.append(_row(SWIN_T, "windowed_vit", s, 4.5 * px, window="fixed"))
        rows.append(_row(SWIN_T, "windowed_vit", s, 4.5 * px**2, window="scaled"))
        rows.append(_row("vim_tiny", "vim", s, 6.0 * px, scan_backend="cpu"))
    frame = tidy(rows)
    assert len(frame) == 9
    fixed, scaled = f"{SWIN_T} (fixed window)", f"{SWIN_T} (scaled window)"
    assert {fixed, scaled} <= set(frame["variant"])
    k = exponent_table(frame).set_index("variant")["GMACs: k all"]
    assert k[fixed] == pytest.approx(1.0) and k[scaled] == pytest.approx(2.0)
    cross = crossover_table(frame, read_published("architecture"))
    cross = cross.set_index("attention model")["GMACs"]
    assert cross[fixed] == "none in range"  # both linear: Vim-Ti stays 6/4.5 times dearer
    assert float(cross[scaled]) == pytest.approx(224 * (6 / 4.5) ** 0.5, abs=0.5)  # px = 6/4.5
