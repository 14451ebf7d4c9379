"""study.measure: FLOPs vs published counts and fvcore, predicted vs measured memory, timing."""

import math

import pytest
import torch

from study.measure import StorageTracker, count_flops, peak_memory, throughput
from study.models import create

DEIT_S = "deit_small_patch16_224"


def meta_model(name: str, img_size: int, **overrides) -> torch.nn.Module:
    """No weights, no init time: count_flops and predicted memory need shapes only."""
    with torch.device("meta"):
        return create(name, img_size, **overrides)


# Published GMACs at 224 (timm's results table; VMamba's fvcore count for vmamba_tiny,
# MzeroMiko/VMamba README).
PUBLISHED_GMACS = [
    ("resnet50", {}, 4.11),
    ("convnext_tiny", {}, 4.47),
    ("deit_tiny_patch16_224", {}, 1.26),
    (DEIT_S, {"attn": "fused"}, 4.61),
    (DEIT_S, {"attn": "naive"}, 4.61),
    ("vmamba_tiny", {}, 4.91),
]


@pytest.mark.parametrize(("name", "overrides", "published"), PUBLISHED_GMACS)
def test_flops_at_224_match_published(name, overrides, published):
    gmacs = count_flops(meta_model(name, 224, **overrides), 224)
    assert gmacs == pytest.approx(published, rel=0.02)


def test_flops_count_cpu_fused_attention_and_scale_with_size():
    """The CPU flash kernel, which fvcore and FlopCounterMode both count as 0, is counted."""
    fused = count_flops(meta_model(DEIT_S, 1248, attn="fused"), 1248, by_operator=True)
    naive = count_flops(meta_model(DEIT_S, 1248, attn="naive"), 1248)
    attention = fused["aten._scaled_dot_product_flash_attention_for_cpu"]
    tokens, dim, depth = (1248 // 16) ** 2 + 1, 384, 12
    assert attention == pytest.approx(depth * 2 * tokens**2 * dim / 1e9, rel=1e-6)
    assert sum(fused.values()) == pytest.approx(naive, rel=1e-6)
    assert naive == pytest.approx(472.2, rel=0.005)  # fvcore: 4.61 at 224 -> 472.2 at 1248


def test_flops_linear_in_batch():
    model = meta_model("test_vit", 64)
    assert count_flops(model, 64, batch=3) == pytest.approx(3 * count_flops(model, 64))


# --- cross-check against fvcore, one model per family, with handles for what fvcore lacks ------


def _shape(value):
    from fvcore.nn.jit_handles import get_shape

    return get_shape(value)


def _sdpa_handle(inputs, outputs):
    q, k, v = (_shape(t) for t in inputs[:3])
    return math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1])  # q·kᵀ and attn·v


def _scan_handle(inputs, outputs):
    """9·B·L·D·N for the scan, B·D·L each for the D skip and the z gate (VMamba's
    flops_selective_scan_ref)."""
    batch, dim, length = _shape(inputs[0])
    state = _shape(inputs[2])[1]
    has_d, has_z = _shape(inputs[5]) is not None, _shape(inputs[6]) is not None
    return 9 * batch * length * dim * state + batch * dim * length * (has_d + has_z)


FVCORE_HANDLES = {
    "aten::scaled_dot_product_attention": _sdpa_handle,
    "kernels::selective_scan": _scan_handle,
    "kernels::cross_scan": None,
    "kernels::cross_merge": None,
}


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("resnet50", {}),
        ("mambaout_tiny", {}),
        (DEIT_S, {"attn": "fused"}),
        ("vim_tiny", {}),
        ("vmamba_tiny", {}),
    ],
)
def test_flops_agree_with_fvcore(name, overrides):
    fvcore = pytest.importorskip("fvcore.nn")
    model = create(name, 224, **overrides)
    analysis = fvcore.FlopCountAnalysis(model, torch.randn(1, 3, 224, 224))
    analysis.set_op_handle(**FVCORE_HANDLES)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    assert count_flops(model, 224) == pytest.approx(analysis.total() / 1e9, rel=0.005)


# --- memory ---------------------------------------------------------------------------------


def test_tracker_counts_each_storage_once_and_forgets_freed_ones():
    tracker = StorageTracker()
    with tracker:
        a = torch.zeros(1024)  # 4 KiB
        view = a[:10].view(2, 5)  # same storage: not new memory
        b = a + 1  # 4 KiB more
        del a, view
        c = b * 2  # a is gone: live stays at 8 KiB
    assert tracker.peak_bytes == 2 * 4096
    del b, c
    assert tracker.live_bytes == 0


@pytest.mark.parametrize(
    ("name", "img_size", "overrides"),
    [
        ("test_resnet", 96, {}),
        ("test_vit", 64, {"attn": "fused"}),
        ("test_vit", 64, {"attn": "naive"}),
        ("vim_tiny", 64, {}),
        ("vmamba_tiny", 64, {}),
    ],
)
def test_predicted_memory_equals_measured_on_cpu(name, img_size, overrides):
    model = create(name, img_size, **overrides)
    predicted = peak_memory(model, img_size, batch=2, mode="predicted")
    measured = peak_memory(model, img_size, batch=2, mode="measured")
    assert predicted["params_mib"] == measured["params_mib"]
    assert predicted["peak_mib"] == pytest.approx(measured["peak_mib"], rel=0.03)
    assert predicted["activations_mib"] == pytest.approx(measured["activations_mib"], rel=0.03)
    assert measured["activations_mib"] > 0


def test_predicted_memory_shows_quadratic_attention():
    """deit_small at 1248, batch 1: q·kᵀ and its softmax alive together (2·6·6085²·4 B)."""
    naive = peak_memory(meta_model(DEIT_S, 1248, attn="naive"), 1248)["activations_mib"]
    fused = peak_memory(meta_model(DEIT_S, 1248, attn="fused"), 1248)["activations_mib"]
    heads, tokens = 6, (1248 // 16) ** 2 + 1
    two_score_maps_mib = 2 * heads * tokens**2 * 4 / 2**20
    assert naive > two_score_maps_mib > 10 * fused
    assert naive == pytest.approx(1757.4, rel=0.01)
    assert fused == pytest.approx(107.0, rel=0.01)


def test_predicted_memory_linear_in_batch_without_memory():
    model = meta_model(DEIT_S, 1248, attn="naive")
    one = peak_memory(model, 1248, batch=1)["activations_mib"]
    many = peak_memory(model, 1248, batch=64)["activations_mib"]  # ~110 GiB: only predicted
    assert many == pytest.approx(64 * one, rel=0.01)


def test_peak_memory_rejects_bad_input():
    model = meta_model("test_vit", 64)
    with pytest.raises(ValueError, match="batch"):
        peak_memory(model, 64, batch=0)
    with pytest.raises(ValueError, match="mode"):
        peak_memory(model, 64, mode="guessed")


# --- throughput ---------------------------------------------------------------------------


def test_throughput_inference_and_training_step():
    model = create("test_vit", 64)
    speed = throughput(model, 64, batch=2, warmup_steps=1, min_steps=2, max_steps=3, budget_s=0.5)
    assert 2 <= speed["steps"] <= 3
    assert speed["step_ms_min"] <= speed["step_ms"]
    assert speed["img_per_s"] == pytest.approx(2e3 / speed["step_ms"])
    assert speed["threads"] == torch.get_num_threads()
    train = throughput(model, 64, 2, train=True, precision="bfloat16", min_steps=1, max_steps=1)
    assert train["steps"] == 1 and train["img_per_s"] > 0
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


# --- GPU (make gpu-check) -----------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("name", "overrides", "precision"),
    [
        ("resnet50", {}, "float32"),
        (DEIT_S, {"attn": "fused"}, "float32"),
        (DEIT_S, {"attn": "naive"}, "float32"),
        (DEIT_S, {"attn": "naive"}, "bfloat16"),
        ("vim_tiny", {}, "float32"),
        ("vmamba_tiny", {}, "float32"),
    ],
)
def test_predicted_memory_within_10_percent_of_cuda_measurement(name, overrides, precision):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    model = create(name, 512, **overrides).cuda()
    args = (model, 512, 8)
    predicted = peak_memory(*args, mode="predicted", device="cuda", precision=precision)
    measured = peak_memory(*args, mode="measured", device="cuda", precision=precision)
    print(name, overrides, precision, predicted, measured)
    assert predicted["activations_mib"] == pytest.approx(measured["activations_mib"], rel=0.10)
    speed = throughput(model, 512, 8, "cuda", precision, min_steps=3, max_steps=3)
    assert speed["img_per_s"] > 0
