"""Vim: sizes, the middle class token, the backward direction, checkpoints. Tiny models, CPU."""

import math

import pytest
import timm
import torch
import torch.nn.functional as F

import kernels
from kernels.ops.selective_scan.reference import selective_scan_ref
from study.models.registry import available, family_of
from study.models.vim import (
    BiMambaMixer,
    VisionMamba,
    checkpoint_filter_fn,
    depthwise_conv1d,
    resize_pos_embed,
)


def tiny_vim(img_size: int = 32, **kwargs) -> VisionMamba:
    torch.manual_seed(0)
    return timm.create_model("test_vim", img_size=img_size, num_classes=10, **kwargs).eval()


@pytest.mark.parametrize(
    "name, published_m", [("vim_tiny", 7.148), ("vim_small", 25.797), ("vim_base", 97.598)]
)
def test_parameter_count_matches_paper(name, published_m):
    with torch.device("meta"):
        model = timm.create_model(name)
    count = sum(p.numel() for p in model.parameters())
    assert round(count / 1e6, 3) == published_m, count


def test_registered_as_vim_family():
    assert family_of("vim_small") == "vim" and family_of("test_vim") == "vim"
    assert {"vim_tiny", "vim_small", "vim_base"} <= set(available())
    assert "test_vim" not in available()


@pytest.mark.parametrize("pixels", [32, 64])
def test_forward_any_resolution(pixels):
    model = tiny_vim(img_size=32)
    with torch.no_grad():
        logits = model(torch.randn(2, 3, pixels, pixels))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


def test_forward_under_bfloat16_autocast():
    model = tiny_vim()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randn(2, 3, 48, 48))
    assert logits.shape == (2, 10) and torch.isfinite(logits.float()).all()


@pytest.mark.parametrize("height, width", [(32, 32), (48, 48), (48, 64)])
def test_class_token_sits_at_middle_index(height, width):
    # No blocks, zero patch tokens and zero pos_embed: the only non-zero token is the class token.
    model = tiny_vim(depth=0)
    with torch.no_grad():
        model.patch_embed.proj.weight.zero_()
        model.patch_embed.proj.bias.zero_()
        model.pos_embed.zero_()
        model.cls_token.fill_(3.0)
        tokens = model.forward_features(torch.randn(1, 3, height, width))
    num_patches = (height // 16) * (width // 16)
    assert tokens.shape == (1, num_patches + 1, 32)
    nonzero_rows = tokens[0].abs().sum(-1).nonzero().flatten().tolist()
    assert nonzero_rows == [num_patches // 2]
    torch.testing.assert_close(
        model.forward_head(tokens, pre_logits=True), tokens[:, num_patches // 2]
    )


def test_resize_pos_embed_keeps_class_token_in_middle():
    dim, cls_value = 8, 7.0
    old_grid, new_grid = (3, 3), (5, 4)
    patches = torch.ones(1, 9, dim)
    pos_embed = torch.cat([patches[:, :4], torch.full((1, 1, dim), cls_value), patches[:, 4:]], 1)
    resized = resize_pos_embed(pos_embed, old_grid, new_grid)
    assert resized.shape == (1, 21, dim)
    torch.testing.assert_close(resized[0, 10], torch.full((dim,), cls_value))
    others = torch.cat([resized[0, :10], resized[0, 11:]])
    torch.testing.assert_close(others, torch.ones(20, dim))  # a constant grid stays constant
    assert resize_pos_embed(pos_embed, old_grid, old_grid) is pos_embed
    with pytest.raises(ValueError, match="pos_embed must be"):
        resize_pos_embed(pos_embed, (4, 4), new_grid)


def test_set_input_size_matches_on_the_fly_resampling():
    model = tiny_vim(img_size=32)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        on_the_fly = model(x)
        model.set_input_size(64)
        rebuilt = model(x)
    assert model.pos_embed.shape == (1, 17, 32)
    torch.testing.assert_close(rebuilt, on_the_fly)


def test_anti_causal_conv_is_flipped_causal_conv():
    torch.manual_seed(0)
    x, weight, bias = torch.randn(2, 6, 9), torch.randn(6, 1, 4), torch.randn(6)
    anti = depthwise_conv1d(x, weight, bias, anti_causal=True)
    flipped = depthwise_conv1d(x.flip(-1), weight, bias).flip(-1)
    torch.testing.assert_close(anti, flipped)
    official_causal = F.conv1d(x, weight, bias, padding=3, groups=6)[..., :9]
    torch.testing.assert_close(depthwise_conv1d(x, weight, bias), official_causal)


def _forward_direction(x, z, conv, x_proj, dt_proj, A_log, D, rank, d_state):
    """The official forward path (padded conv, then a forward scan) on (batch, Di, L)."""
    length = x.shape[-1]
    x = F.silu(F.conv1d(x, conv.weight, conv.bias, padding=3, groups=x.shape[1])[..., :length])
    dt, B, C = x_proj(x.transpose(1, 2)).split([rank, d_state, d_state], -1)
    dt = F.linear(dt, dt_proj.weight).transpose(1, 2)
    A = -torch.exp(A_log)
    return selective_scan_ref(
        x, dt, A, B.transpose(1, 2), C.transpose(1, 2), D, z, dt_proj.bias, delta_softplus=True
    )


def _flipped_copy_mixer(m: BiMambaMixer, hidden: torch.Tensor) -> torch.Tensor:
    """Official bimamba v2: the backward direction runs forward code on flipped x and z."""
    x, z = m.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)
    sizes = (m.dt_rank, m.d_state)
    y_f = _forward_direction(x, z, m.conv1d, m.x_proj, m.dt_proj, m.A_log, m.D, *sizes)
    y_b = _forward_direction(
        x.flip(-1), z.flip(-1), m.conv1d_b, m.x_proj_b, m.dt_proj_b, m.A_b_log, m.D_b, *sizes
    ).flip(-1)
    return m.out_proj(((y_f + y_b) / 2).transpose(1, 2))


@pytest.mark.parametrize("length", [3, 11])
def test_backward_direction_equals_flipped_copy(length):
    torch.manual_seed(0)
    mixer = BiMambaMixer(dim=16, d_state=4).double()
    with torch.no_grad():  # make the two directions' A and D differ from their init
        mixer.A_b_log.add_(0.3 * torch.randn_like(mixer.A_b_log))
        mixer.D_b.add_(torch.randn_like(mixer.D_b))
    hidden = torch.randn(2, length, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(mixer(hidden), _flipped_copy_mixer(mixer, hidden))


def test_unidirectional_ablation():
    bi, uni = tiny_vim(), tiny_vim(bidirectional=False)
    bi_params = dict(bi.named_parameters())
    uni_params = dict(uni.named_parameters())
    assert set(uni_params) < set(bi_params)
    assert not any(name.endswith(("_b.weight", "_b_log", "D_b")) for name in uni_params)
    uni.load_state_dict({k: v for k, v in bi.state_dict().items() if k in uni_params})
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(bi(x), uni(x), atol=1e-4)


def test_output_depends_on_backward_parameters():
    model = tiny_vim()
    x = torch.randn(1, 3, 32, 32)
    mixer = model.layers[0].mixer
    with torch.no_grad():
        # Steps of softplus(1) ~ 1.3 instead of the init's 0.001..0.1, so that A matters.
        mixer.dt_proj_b.bias.fill_(1.0)
        before = model.forward_features(x)
        mixer.A_b_log.add_(1.0)
        after = model.forward_features(x)
    # At init the mixers add little to the residual stream, so the bar is rounding noise x 100.
    noise = torch.finfo(torch.float32).eps * before.abs().max()
    assert (after - before).abs().max() > 100 * noise


@pytest.mark.parametrize("bidirectional", [True, False])
def test_class_token_sees_later_patches_only_when_bidirectional(bidirectional):
    # One block: the forward scan is causal, so the middle token ignores patches after it.
    model = tiny_vim(depth=1, bidirectional=bidirectional)
    x = torch.randn(1, 3, 32, 32)
    x_changed = x.clone()
    x_changed[..., 16:, 16:] += 1.0  # the last of the 4 patches
    with torch.no_grad():
        cls, cls_changed = (
            model.forward_head(model.forward_features(v), True) for v in (x, x_changed)
        )
    assert torch.equal(cls, cls_changed) != bidirectional


def test_forward_feature_map_drops_class_token():
    model = tiny_vim()
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        fmap = model.forward_feature_map(x)
        tokens = model.forward_features(x)
    assert fmap.shape == (2, 32, 3, 4)
    patches = torch.cat([tokens[:, :6], tokens[:, 7:]], dim=1)  # 12 patches, class token at 6
    torch.testing.assert_close(fmap.flatten(2).transpose(1, 2), patches)


def _official_state_dict(dim: int, depth: int, grid: int, num_classes: int) -> dict:
    """Random tensors under hustvl/Vim's names and shapes (bimamba v2, RMSNorm, middle cls)."""
    inner, rank, d_state, d_conv = 2 * dim, math.ceil(dim / 16), 16, 4
    shapes = {
        "cls_token": (1, 1, dim),
        "pos_embed": (1, grid * grid + 1, dim),
        "patch_embed.proj.weight": (dim, 3, 16, 16),
        "patch_embed.proj.bias": (dim,),
        "norm_f.weight": (dim,),
        "head.weight": (num_classes, dim),
        "head.bias": (num_classes,),
    }
    for i in range(depth):
        mixer = f"layers.{i}.mixer."
        shapes[f"layers.{i}.norm.weight"] = (dim,)
        shapes[mixer + "in_proj.weight"] = (2 * inner, dim)
        shapes[mixer + "out_proj.weight"] = (dim, inner)
        for s in ("", "_b"):
            shapes[mixer + f"conv1d{s}.weight"] = (inner, 1, d_conv)
            shapes[mixer + f"conv1d{s}.bias"] = (inner,)
            shapes[mixer + f"x_proj{s}.weight"] = (rank + 2 * d_state, inner)
            shapes[mixer + f"dt_proj{s}.weight"] = (inner, rank)
            shapes[mixer + f"dt_proj{s}.bias"] = (inner,)
            shapes[mixer + f"D{s}"] = (inner,)
        shapes[mixer + "A_log"] = (inner, d_state)
        shapes[mixer + "A_b_log"] = (inner, d_state)
    return {name: torch.randn(shape) for name, shape in shapes.items()}


def test_checkpoint_filter_loads_official_names_at_another_grid():
    model = tiny_vim(img_size=32)  # grid 2x2
    checkpoint = {"model": _official_state_dict(dim=32, depth=2, grid=14, num_classes=10)}
    filtered = checkpoint_filter_fn(checkpoint, model)
    model.load_state_dict(filtered, strict=True)
    assert model.pos_embed.shape == (1, 5, 32)
    official_cls = checkpoint["model"]["pos_embed"][0, 196 // 2]
    torch.testing.assert_close(model.pos_embed[0, 2].detach(), official_cls)


def test_img_size_smaller_than_patch_is_rejected():
    with pytest.raises(ValueError, match="img_size must be an int >= patch_size=16, got 8"):
        VisionMamba(img_size=8, embed_dim=32, depth=1)
    model = tiny_vim()
    with pytest.raises(ValueError, match="input must be at least 16x16"):
        model(torch.randn(1, 3, 8, 32))


def _centre_token_input_gradient(model: VisionMamba, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_()
    model.forward_feature_map(x)[0, :, 1, 1].sum().backward()  # the centre of a 3x3 grid
    return x.grad


def test_gradient_of_one_token_reaches_both_ends_of_the_image():
    # What an effective-receptive-field map measures: one block already sees both directions.
    model = tiny_vim(depth=1)
    x = torch.randn(1, 3, 48, 48)
    grad = _centre_token_input_gradient(model, x)
    with kernels.use_backend("reference"):
        torch.testing.assert_close(grad, _centre_token_input_gradient(model, x))
    assert grad[..., :16, :16].abs().sum() > 0 and grad[..., 32:, 32:].abs().sum() > 0


# hustvl/Vim's init (vim/models_mamba.py `_init_weights`, mamba-1p1p1 mamba_simple.py): every
# nn.Linear bias is zeroed except dt_proj.bias, the one marked `_no_reinit`.
@pytest.mark.parametrize("bidirectional", [True, False])
def test_init_is_the_official_one(bidirectional):
    model = timm.create_model("test_vim", img_size=64, bidirectional=bidirectional)
    dt_min, dt_max = 0.001, 0.1
    for layer in model.layers:
        mixer = layer.mixer
        bound = mixer.dt_rank**-0.5
        step = F.softplus(mixer.dt_proj.bias)
        assert step.min() >= dt_min * (1 - 1e-6) and step.max() <= dt_max * (1 + 1e-6)
        assert step.std() > 0  # log-uniform draws, not a constant
        if bidirectional:
            assert torch.equal(mixer.dt_proj_b.bias, torch.zeros_like(mixer.dt_proj_b.bias))
            assert mixer.dt_proj_b.weight.abs().max() <= bound
            assert mixer.dt_proj_b.weight.std() > 0
        torch.testing.assert_close(mixer.A_log.exp()[0], torch.arange(1.0, 17.0))
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    for name, module in linears:
        if module.bias is not None and not name.endswith(".dt_proj"):
            assert torch.equal(module.bias, torch.zeros_like(module.bias)), name
