"""The zoo's one API, for every family: create, family_of, available, feature_map, errors."""

import pytest
import torch

import study.models as zoo

FAMILY_STRIDE = {"cnn": 32, "vit": 16, "windowed_vit": 32, "vim": 16, "vmamba": 32, "gated_cnn": 32}
TEST_VARIANTS = ["test_resnet", "test_vit", "test_swin", "test_vim", "test_vmamba"]

# Millions of parameters at 224 (timm; the Vim and VMamba papers and READMEs for theirs) and
# relative tolerance.
PUBLISHED_PARAMS_M = {
    "resnet50": (25.56, 0.001),
    "convnext_tiny": (28.59, 0.001),
    "deit_tiny_patch16_224": (5.72, 0.001),
    "deit_small_patch16_224": (22.05, 0.001),
    "deit_base_patch16_224": (86.57, 0.001),
    "swin_tiny_patch4_window7_224": (28.29, 0.001),
    "swin_small_patch4_window7_224": (49.61, 0.001),
    "mambaout_tiny": (26.55, 0.005),
    "vim_tiny": (7.148, 0.001),
    "vim_small": (25.797, 0.001),
    "vim_base": (97.598, 0.001),
    "vmamba_tiny": (30.25, 0.005),
    "vmamba_small": (50.0, 0.005),
    "vmamba_base": (89.0, 0.005),
    "vmamba_tiny_v0": (22.9, 0.005),
}


def test_zoo_lists_every_family():
    names = zoo.available()
    assert {zoo.family_of(n) for n in names} == set(FAMILY_STRIDE)
    assert set(PUBLISHED_PARAMS_M) == set(names)
    assert not any(n.startswith("test_") for n in names)


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS_M))
def test_full_size_parameter_counts(name):
    with torch.device("meta"):
        model = zoo.create(name, img_size=224)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    published, rel_tol = PUBLISHED_PARAMS_M[name]
    assert millions == pytest.approx(published, rel=rel_tol)


@pytest.mark.parametrize("name", TEST_VARIANTS)
@pytest.mark.parametrize("img_size", [64, 96])
def test_tiny_variants_run_at_two_sizes(name, img_size):
    model = zoo.create(name, img_size=img_size)
    assert not model.training
    x = torch.randn(2, 3, img_size, img_size)
    with torch.no_grad():
        logits = model(x)
        fmap = zoo.feature_map(model, x)
    assert logits.shape[0] == 2 and torch.isfinite(logits).all()
    side = img_size // FAMILY_STRIDE[zoo.family_of(name)]
    assert fmap.shape[0] == 2 and fmap.shape[2:] == (side, side)
    assert torch.isfinite(fmap).all()


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS_M))
def test_every_zoo_model_runs_at_a_small_size(name):
    model = zoo.create(name, img_size=64)
    with torch.no_grad():
        fmap = zoo.feature_map(model, torch.randn(1, 3, 64, 64))
    assert fmap.dim() == 4 and fmap.shape[2:] == (64 // FAMILY_STRIDE[zoo.family_of(name)],) * 2


@pytest.mark.slow
@pytest.mark.parametrize("img_size", [224, 512, 1248])
@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS_M))
def test_every_zoo_model_runs_at_study_sizes(name, img_size):
    model = zoo.create(name, img_size=img_size)
    with torch.no_grad():
        logits = model(torch.randn(1, 3, img_size, img_size))
    assert torch.isfinite(logits).all()


def test_naive_and_fused_attention_agree():
    fused = zoo.create("test_vit", img_size=64, attn="fused")
    naive = zoo.create("test_vit", img_size=64, attn="naive")
    naive.load_state_dict(fused.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(naive(x), fused(x), rtol=1e-4, atol=1e-5)
    assert all(not m.fused_attn for m in naive.modules() if hasattr(m, "fused_attn"))


def test_vit_is_built_for_the_requested_size():
    model = zoo.create("deit_tiny_patch16_224", img_size=512)
    assert model.pos_embed.shape[1] == 1 + (512 // 16) ** 2


def test_family_of_every_test_variant():
    families = ["cnn", "vit", "windowed_vit", "vim", "vmamba"]
    assert [zoo.family_of(n) for n in TEST_VARIANTS] == families


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: zoo.create("resnet5", 224), "unknown model 'resnet5'; available: resnet50"),
        (lambda: zoo.family_of("vit_huge"), "unknown model 'vit_huge'; available:"),
        (lambda: zoo.create("resnet50", 16), "img_size must be an integer >= 32"),
        (lambda: zoo.create("resnet50", 224.0), "img_size must be an integer >= 32"),
        (lambda: zoo.create("resnet50", 224, attn="naive"), "attn= applies only to ViTs"),
        (lambda: zoo.create("test_vit", 64, attn="flash"), "unknown attn 'flash'; allowed"),
        (
            lambda: zoo.create("test_vit", 64, depht=3),
            "bad override for test_vit .*allowed: .*depth",
        ),
    ],
)
def test_bad_input_raises_one_clear_line(call, message):
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)
