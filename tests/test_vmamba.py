"""VMamba: parameter counts, shapes at several sizes, the 2-D scan against a direct computation,
official checkpoint names, and input errors. Runs on CPU with the reference scan in seconds."""

import re

import pytest
import timm
import torch
import torch.nn.functional as F

from study.models import create, family_of, feature_map
from study.models.vmamba import (
    SS2D,
    ConvStem,
    GatedSS2D,
    Linear2d,
    PatchEmbed,
    VMamba,
    checkpoint_filter_fn,
)

# Published parameter counts (VMamba paper, NeurIPS 2024, Table 1; MzeroMiko/VMamba README),
# in millions.
PUBLISHED_PARAMS_M = {
    "vmamba_tiny": 30.25,
    "vmamba_small": 50.0,
    "vmamba_base": 89.0,
    "vmamba_tiny_v0": 22.9,
}
PARAMS_REL_TOL = 0.005


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS_M))
def test_full_size_param_counts(name):
    with torch.device("meta"):
        model = timm.create_model(name)
    got_m = n_params(model) / 1e6
    assert family_of(name) == "vmamba"
    assert abs(got_m / PUBLISHED_PARAMS_M[name] - 1) < PARAMS_REL_TOL, f"{name}: {got_m:.3f}M"


@pytest.mark.parametrize("img_px", [64, 96])
def test_forward_shapes_and_finite(img_px):
    torch.manual_seed(0)
    model = create("test_vmamba", img_px)
    x = torch.randn(2, 3, img_px, img_px)
    with torch.no_grad():
        logits = model(x)
        fmap = model.forward_feature_map(x)
    assert logits.shape == (2, 1000)
    assert fmap.shape == (2, model.num_features, img_px // 32, img_px // 32)
    assert torch.isfinite(logits).all() and torch.isfinite(fmap).all()
    assert torch.equal(feature_map(model, x), fmap)  # the zoo's entry point uses ours


def test_directions_run_and_scale_parameters():
    counts = {}
    for directions in (1, 2, 4):
        torch.manual_seed(0)
        model = timm.create_model("test_vmamba", directions=directions).eval()
        with torch.no_grad():
            out = model(torch.randn(1, 3, 64, 64))
        assert out.shape == (1, 1000) and torch.isfinite(out).all()
        counts[directions] = n_params(model)
    assert counts[1] < counts[2] < counts[4]
    # per-direction parameters (x_proj, dt_proj, A, D) are the only difference: linear in K
    assert counts[4] - counts[2] == 2 * (counts[2] - counts[1])


def test_jan2024_design_channel_last_and_odd_sizes():
    torch.manual_seed(0)
    model = timm.create_model("vmamba_tiny_v0", depths=(1, 1, 1, 1), embed_dim=16).eval()
    assert isinstance(model.layers[0].blocks[0].op, GatedSS2D)
    assert model.layers[0].blocks[0].mlp is None
    x = torch.randn(1, 3, 70, 70)  # 17x17 after the stem: patch merging pads odd sizes
    with torch.no_grad():
        feats = model.forward_features(x)
        fmap = model.forward_feature_map(x)
    assert feats.shape == (1, 3, 3, 128)  # channel-last, as the official v0
    assert fmap.shape == (1, 128, 3, 3) and torch.isfinite(fmap).all()


@pytest.mark.parametrize("name", ["test_vmamba", "vmamba_tiny_v0"])
def test_final_grid_at_1248_on_meta(name):
    # depth 0: only the stem and the downsampling layers, whose rounding sets the grid
    with torch.device("meta"):
        model = timm.create_model(name, depths=(0, 0, 0, 0), embed_dim=16)
        fmap = model.forward_feature_map(torch.empty(1, 3, 1248, 1248))
    assert fmap.shape == (1, 128, 39, 39)


def test_bfloat16_autocast_and_meta_device():
    torch.manual_seed(0)
    model = timm.create_model("test_vmamba").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    with torch.no_grad():
        ref = model(x)
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()
    with torch.device("meta"):
        meta_model = timm.create_model("test_vmamba")
        assert meta_model(torch.empty(2, 3, 64, 64)).shape == (2, 1000)


# ------------------------------------------------------------------------------------------------
# The 2-D scan, written out directly: each direction as flips and transposes, a plain loop in time
# ------------------------------------------------------------------------------------------------

ORDERS = {  # scan order k: (batch, D, H, W) -> (batch, D, L), and its inverse
    0: (lambda x: x.flatten(2), lambda y, h, w: y.unflatten(2, (h, w))),
    1: (
        lambda x: x.transpose(2, 3).flatten(2),
        lambda y, h, w: y.unflatten(2, (w, h)).transpose(2, 3),
    ),
    2: (lambda x: x.flatten(2).flip(-1), lambda y, h, w: y.flip(-1).unflatten(2, (h, w))),
    3: (
        lambda x: x.transpose(2, 3).flatten(2).flip(-1),
        lambda y, h, w: y.flip(-1).unflatten(2, (w, h)).transpose(2, 3),
    ),
}
ORDERS_USED = {4: [0, 1, 2, 3], 2: [0, 2], 1: [0]}


def direct_ss2d_core(m: SS2D, x: torch.Tensor) -> torch.Tensor:
    batch, dim, height, width = x.shape
    n, r = m.d_state, m.dt_rank
    out = torch.zeros_like(x)
    for slot, order in enumerate(ORDERS_USED[m.directions]):
        to_seq, from_seq = ORDERS[order]
        u = to_seq(x)  # (batch, D, L)
        proj = torch.einsum("cd,bdl->bcl", m.x_proj_weight[slot], u)
        dt, b, c = proj[:, :r], proj[:, r : r + n], proj[:, r + n :]
        dt = torch.einsum("dr,brl->bdl", m.dt_projs_weight[slot], dt)
        dt = F.softplus(dt + m.dt_projs_bias[slot][:, None])
        a = -torch.exp(m.A_logs[slot * dim : (slot + 1) * dim])  # (D, N)
        skip = m.Ds[slot * dim : (slot + 1) * dim]
        h = x.new_zeros(batch, dim, n)
        ys = []
        for t in range(u.shape[-1]):
            step = dt[:, :, t, None]
            h = torch.exp(step * a) * h + step * b[:, None, :, t] * u[:, :, t, None]
            ys.append((h * c[:, None, :, t]).sum(-1) + skip * u[:, :, t])
        out = out + from_seq(torch.stack(ys, dim=-1), height, width)
    return out


@pytest.mark.parametrize("directions", [1, 2, 4])
def test_scan_core_matches_direct_computation(directions):
    torch.manual_seed(directions)
    m = SS2D(d_model=6, d_state=3, ssm_ratio=1.0, directions=directions).double()
    with torch.no_grad():  # move off the init values so every parameter matters
        m.A_logs.add_(0.3 * torch.randn_like(m.A_logs))
        m.Ds.add_(torch.randn_like(m.Ds))
        m.dt_projs_bias.add_(torch.randn_like(m.dt_projs_bias))
    x = torch.randn(2, 6, 3, 5, dtype=torch.float64)  # H != W catches a swapped transpose
    with torch.no_grad():
        got = m.forward_core(x)
        want = direct_ss2d_core(m, x)
    assert got.shape == x.shape
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
    with torch.no_grad():  # a channels-last map (what LayerNorm2d hands the mixer) scans alike
        got_cl = m.forward_core(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got_cl, want, rtol=1e-9, atol=1e-10)


# ------------------------------------------------------------------------------------------------
# Checkpoints in official naming
# ------------------------------------------------------------------------------------------------

# Ours -> official names (regex, replacement). NeurIPS: the nn.Sequential indices of
# VSSM._make_patch_embed_v2 and _make_downsample_v3 (MzeroMiko/VMamba, classification/models/
# vmamba.py). January 2024 checkpoints predate the `classifier` Sequential and name the block's
# norm and mixer ln_1 and self_attention (the official _load_from_state_dict renames them).
TO_OFFICIAL_NEURIPS = [
    (r"^patch_embed\.conv1\.", "patch_embed.0."),
    (r"^patch_embed\.norm1\.", "patch_embed.2."),
    (r"^patch_embed\.conv2\.", "patch_embed.5."),
    (r"^patch_embed\.norm2\.", "patch_embed.7."),
    (r"\.downsample\.conv\.", ".downsample.1."),
    (r"\.downsample\.norm\.", ".downsample.3."),
]
TO_OFFICIAL_JAN2024 = [
    (r"^(layers\.\d+\.blocks\.\d+)\.norm\.", r"\1.ln_1."),
    (r"^(layers\.\d+\.blocks\.\d+)\.op\.", r"\1.self_attention."),
    (r"^classifier\.", ""),
]


def to_official(state_dict: dict, table: list[tuple[str, str]]) -> dict:
    out = {}
    for key, value in state_dict.items():
        for pattern, replacement in table:
            key = re.sub(pattern, replacement, key)
        out[key] = value.clone()
    return out


def test_checkpoint_filter_fn_neurips_official_names():
    torch.manual_seed(0)
    source = timm.create_model("test_vmamba").eval()
    official = to_official(source.state_dict(), TO_OFFICIAL_NEURIPS)
    for key in (
        "patch_embed.0.weight",
        "patch_embed.7.bias",
        "layers.0.downsample.1.weight",
        "layers.2.downsample.3.weight",
        "layers.0.blocks.0.op.x_proj_weight",
        "layers.3.blocks.0.op.A_logs",
        "layers.1.blocks.0.mlp.fc2.bias",
        "classifier.head.weight",
    ):
        assert key in official
    # the official Linear2d also accepts 1x1-conv-shaped weights
    key = "layers.0.blocks.0.op.in_proj.weight"
    official[key] = official[key][:, :, None, None]

    torch.manual_seed(1)
    target = timm.create_model("test_vmamba").eval()
    target.load_state_dict(checkpoint_filter_fn({"model": official}, target), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


def test_checkpoint_filter_fn_jan2024_names():
    kwargs = dict(depths=(1, 1, 1, 1), embed_dim=16)
    torch.manual_seed(0)
    source = timm.create_model("vmamba_tiny_v0", **kwargs).eval()
    official = to_official(source.state_dict(), TO_OFFICIAL_JAN2024)
    assert "layers.0.blocks.0.ln_1.weight" in official
    assert "layers.0.blocks.0.self_attention.dt_projs_bias" in official
    assert "layers.0.downsample.reduction.weight" in official and "head.weight" in official
    assert "patch_embed.proj.weight" in official and "norm.bias" in official
    torch.manual_seed(1)
    target = timm.create_model("vmamba_tiny_v0", **kwargs).eval()
    target.load_state_dict(checkpoint_filter_fn(official, target), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


# The standalone root vmamba.py (MzeroMiko/VMamba): SS2Dv2 stores the K directions' projections as
# grouped 1x1 convs, flat (`x_proj = Linear(Di, K*(R+2N), groups=K)`, `dt_projs = Linear(R, K*Di,
# groups=K)`), and `_make_downsample(version="v1")`, the January-2024 patch merging, is
# Sequential(PatchMerge, LayerNorm, Linear).
TO_OFFICIAL_ROOT_FLAT = [(r"\.op\.x_proj_weight$", ".op.x_proj.weight"),
                         (r"\.op\.dt_projs_weight$", ".op.dt_projs.weight")]  # fmt: skip
TO_OFFICIAL_ROOT_V1 = [
    (r"^patch_embed\.proj\.", "patch_embed.0."),
    (r"^patch_embed\.norm\.", "patch_embed.2."),
    (r"\.downsample\.norm\.", ".downsample.1."),
    (r"\.downsample\.reduction\.", ".downsample.2."),
]


def flatten_projections(state_dict: dict) -> dict:
    """Our stacked (K, R+2N, Di) / (K, Di, R) -> the root vmamba.py's flat 2-D weights."""
    out = to_official(state_dict, TO_OFFICIAL_ROOT_FLAT)
    for key in out:
        if key.endswith((".op.x_proj.weight", ".op.dt_projs.weight")):
            out[key] = out[key].reshape(-1, out[key].shape[-1])
    return out


def assert_same_logits_after_loading(name: str, official: dict, **kwargs) -> None:
    torch.manual_seed(0)
    source = timm.create_model(name, **kwargs).eval()
    torch.manual_seed(1)
    target = timm.create_model(name, **kwargs).eval()
    target.load_state_dict(checkpoint_filter_fn({"model": official(source)}, target), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


@pytest.mark.parametrize("directions", [4, 2])
def test_checkpoint_filter_fn_root_vmamba_flat_projections(directions):
    def official(model):
        state = flatten_projections(to_official(model.state_dict(), TO_OFFICIAL_NEURIPS))
        k, c, di = model.layers[0].blocks[0].op.x_proj_weight.shape
        assert state["layers.0.blocks.0.op.x_proj.weight"].shape == (k * c, di)
        k, di, r = model.layers[0].blocks[0].op.dt_projs_weight.shape
        assert state["layers.0.blocks.0.op.dt_projs.weight"].shape == (k * di, r)
        assert not any(key.endswith(("x_proj_weight", "dt_projs_weight")) for key in state)
        return state

    assert_same_logits_after_loading("test_vmamba", official, directions=directions)


def test_checkpoint_filter_fn_jan2024_patch_merging_as_sequential():
    def official(model):
        state = to_official(model.state_dict(), TO_OFFICIAL_ROOT_V1)
        assert "layers.0.downsample.1.weight" in state and "layers.0.downsample.1.bias" in state
        assert "layers.2.downsample.2.weight" in state and "patch_embed.0.weight" in state
        assert not any(".reduction." in key for key in state)
        return state

    assert_same_logits_after_loading("vmamba_tiny_v0", official, depths=(1, 1, 1, 1), embed_dim=16)


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


def test_bad_input_raises_clear_errors():
    model = timm.create_model("test_vmamba").eval()
    with pytest.raises(ValueError, match="at least 32x32 pixels.*got 16x40"):
        model(torch.randn(1, 3, 16, 40))
    with pytest.raises(ValueError, match=r"expects images \(batch, 3, H, W\)"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="img_size must be an integer >= 32"):
        VMamba(img_size=16)
    with pytest.raises(ValueError, match="directions must be 1, 2 or 4"):
        timm.create_model("test_vmamba", directions=3)
    with pytest.raises(ValueError, match="share one layout"):
        VMamba(mixer_layer=SS2D, stem_layer=PatchEmbed)
    with pytest.raises(ValueError, match="no bundled VMamba weights"):
        timm.create_model("test_vmamba", pretrained=True)
    with pytest.raises(TypeError):  # a typo is not swallowed
        timm.create_model("test_vmamba", direction=2)
    assert ConvStem.channels_last is False


# MzeroMiko/VMamba classification/models/vmamba.py (the code behind the released checkpoints):
# x_proj as nn.Linear's default, mamba_init.init_dt_A_D ("v0"), then VSSM._init_weights:
# trunc-normal(0.02) for every nn.Linear (its Linear2d included), zero biases, LayerNorm 1/0.
@pytest.mark.parametrize("name", ["test_vmamba", "vmamba_tiny_v0"])
def test_init_is_the_official_training_codes(name):
    kwargs = dict(depths=(1, 1, 1, 1), embed_dim=16) if name == "vmamba_tiny_v0" else {}
    model = timm.create_model(name, **kwargs)
    for mixer in (m for m in model.modules() if hasattr(m, "x_proj_weight")):
        k, rank_2n, d_inner = mixer.x_proj_weight.shape
        assert mixer.x_proj_weight.abs().max() <= d_inner**-0.5
        assert mixer.dt_projs_weight.abs().max() <= mixer.dt_rank**-0.5
        step = F.softplus(mixer.dt_projs_bias)
        assert step.min() >= 0.001 * (1 - 1e-6) and step.max() <= 0.1 * (1 + 1e-6)
        a = torch.arange(1.0, mixer.d_state + 1).expand(k * d_inner, -1)
        torch.testing.assert_close(mixer.A_logs.exp(), a)
        assert torch.equal(mixer.Ds, torch.ones_like(mixer.Ds))
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            assert module.weight.abs().max() <= 2.0 and module.weight.std() < 0.03
            assert module.bias is None or not module.bias.any()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_linear2d_is_a_1x1_convolution_in_either_layout(bias, batch, channels_last):
    torch.manual_seed(0)
    layer = Linear2d(6, 5, bias=bias).double()
    x = torch.randn(batch, 6, 3, 4, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    got = layer(x)
    want = F.conv2d(x, layer.weight[:, :, None, None], layer.bias)
    torch.testing.assert_close(got, want)
    assert got.shape == (batch, 5, 3, 4)
    # no copy into the other layout: a channels-last map stays channels-last
    assert got.permute(0, 2, 3, 1).is_contiguous() == channels_last or got.is_contiguous()


@pytest.mark.parametrize("directions", [1, 2, 4])
def test_only_the_token_orders_scanned_are_built(directions, monkeypatch):
    """directions=1|2 scan x itself (row-major tokens, no copy), the reverse one with reverse=True
    instead of flipped copies; 4 scan row- and column-major tokens side by side. One scan call per
    sense (forward, reverse)."""
    import kernels

    calls = []
    real = kernels.selective_scan
    x = torch.randn(1, 6, 3, 5)

    def spy(u, *args, **kwargs):
        calls.append((u.shape[1], u.data_ptr() == x.data_ptr(), kwargs["reverse"]))
        return real(u, *args, **kwargs)

    monkeypatch.setattr(kernels, "selective_scan", spy)
    m = SS2D(d_model=6, d_state=2, directions=directions)
    with torch.no_grad():
        m.forward_core(x)
    in_place = directions < 4
    channels = 12 if directions == 4 else 6
    senses = [False] if directions == 1 else [False, True]
    assert calls == [(channels, in_place, reverse) for reverse in senses]
