"""Vim, Vision Mamba (Zhu et al., ICML 2024; hustvl/Vim `vim/models_mamba.py`, bimamba v2).

Patch tokens with one class token in the middle of the sequence, absolute position embedding, and
24 pre-norm RMSNorm blocks whose mixer scans the tokens forward and backward:

    tokens (batch, L+1, d) -> [RMSNorm -> BiMamba mixer -> + residual (float32)] x depth -> RMSNorm
    logits = head(tokens[:, L // 2])

Parameter names match the official checkpoints. Differences from the official code, on purpose:
the backward direction always runs (the official non-CUDA path silently drops it), it is computed
with a reverse scan and an anti-causal conv instead of flipped copies, any input size is accepted,
and position embeddings are resampled with the class token kept in the middle.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, lecun_normal_, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

import kernels
from study.models.registry import register_family

__all__ = ["BiMambaMixer", "Block", "VisionMamba", "checkpoint_filter_fn", "resize_pos_embed"]


def depthwise_conv1d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, anti_causal: bool = False
) -> torch.Tensor:
    """Depthwise causal conv over (batch, D, L) with weight (D, 1, K): token t sees t-K+1..t.

    With `anti_causal=True` token t sees t..t+K-1 through the flipped kernel: the causal conv of the
    reversed sequence, reversed back, without copying the sequence.
    """
    width = weight.shape[-1]
    if anti_causal:
        x, weight = F.pad(x, (0, width - 1)), weight.flip(-1)
    else:
        x = F.pad(x, (width - 1, 0))
    return F.conv1d(x, weight, bias, groups=weight.shape[0])


def project(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(out, in) @ (batch, in, L) -> (batch, out, L) as one batched GEMM, mamba_ssm's layout for
    the scan. (torch.matmul folds the batch into one GEMM or not depending on the grad mode, which
    changes the rounding.)"""
    if x.shape[0] == 1:  # one GEMM; bmm with a stride-0 (expanded) weight is several times slower
        return torch.mm(weight, x[0]).unsqueeze(0)
    return torch.bmm(weight.expand(x.shape[0], -1, -1), x)


class BiMambaMixer(nn.Module):
    """Mamba mixer scanning both ways ("bimamba v2"): (batch, L, d) -> (batch, L, d).

    in_proj d -> 2*Di (x, z). Each direction: depthwise conv + SiLU, x_proj Di -> R + 2N,
    dt_proj R -> Di, selective scan gated by SiLU(z). Output out_proj((y_fwd + y_bwd) / 2).
    The backward direction owns `conv1d_b`, `x_proj_b`, `dt_proj_b`, `A_b_log`, `D_b`.
    """

    def __init__(
        self,
        dim: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        bidirectional: bool = True,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        self.d_inner = expand * dim
        self.d_state = d_state
        self.dt_rank = math.ceil(dim / 16)
        self.bidirectional = bidirectional
        self.in_proj = nn.Linear(dim, 2 * self.d_inner, bias=False)
        suffixes = ("", "_b") if bidirectional else ("",)
        for s in suffixes:
            conv = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, bias=True)
            setattr(self, f"conv1d{s}", conv)
            setattr(self, f"x_proj{s}", nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, False))
            dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
            self._init_dt_proj(dt_proj, dt_min, dt_max, dt_init_floor)
            if s:  # as hustvl/Vim: only dt_proj.bias is marked _no_reinit, so its
                # `_init_weights` zeroes dt_proj_b.bias (vim/models_mamba.py; mamba_simple.py)
                nn.init.zeros_(dt_proj.bias)
            setattr(self, f"dt_proj{s}", dt_proj)
            # S4D-real: A = -[1..N] for every channel; kept as log(-A) in float32.
            a_log = torch.log(torch.arange(1, d_state + 1, dtype=torch.float32))
            setattr(
                self, "A_log" if not s else "A_b_log", nn.Parameter(a_log.repeat(self.d_inner, 1))
            )
            setattr(self, f"D{s}", nn.Parameter(torch.ones(self.d_inner)))
        self.out_proj = nn.Linear(self.d_inner, dim, bias=False)

    def _init_dt_proj(
        self, dt_proj: nn.Linear, dt_min: float, dt_max: float, dt_init_floor: float
    ) -> None:
        # Mamba's init: weight ~ U(+-R^-0.5); softplus(bias) log-uniform in [dt_min, dt_max].
        std = self.dt_rank**-0.5
        nn.init.uniform_(dt_proj.weight, -std, std)
        log_dt = torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        dt = torch.exp(log_dt).clamp(min=dt_init_floor)
        with torch.no_grad():
            dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus

    def scan_direction(self, x: torch.Tensor, z: torch.Tensor, backward: bool) -> torch.Tensor:
        """One direction of the mixer on x, z (batch, Di, L) -> gated y (batch, Di, L).

        The projections are computed as W @ x into (batch, channels, L), the scan's layout
        (mamba_ssm does the same), so no operand of the scan is a transposed copy.
        """
        s = "_b" if backward else ""
        conv, x_proj, dt_proj = (getattr(self, f"{n}{s}") for n in ("conv1d", "x_proj", "dt_proj"))
        A_log, D = (self.A_b_log, self.D_b) if backward else (self.A_log, self.D)
        x = F.silu(depthwise_conv1d(x, conv.weight, conv.bias, anti_causal=backward))
        x_dbl = project(x_proj.weight, x)  # (batch, R + 2N, L)
        dt, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=1)
        dt = project(dt_proj.weight, dt)  # (batch, Di, L); the bias goes to the scan
        A = -torch.exp(A_log.float())  # (Di, N)
        return kernels.selective_scan(
            x,
            dt,
            A,
            B,  # (batch, N, L) views of x_dbl
            C,
            D=D.float(),
            z=z,
            delta_bias=dt_proj.bias.float(),
            delta_softplus=True,
            reverse=backward,
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # in_proj as W @ hidden^T: (batch, 2Di, L), so x and z are views with unit stride along L
        # that the scan reads in place (a transposed (batch, L, 2Di) output would be copied)
        xz = project(self.in_proj.weight, hidden.transpose(1, 2))
        x, z = xz.chunk(2, dim=1)  # each (batch, Di, L)
        y = self.scan_direction(x, z, backward=False)
        if self.bidirectional:
            y = (y + self.scan_direction(x, z, backward=True)) / 2
        return self.out_proj(y.transpose(1, 2))


class Block(nn.Module):
    """Pre-norm residual block: residual + drop_path(mixer(norm(residual))), residual in float32."""

    def __init__(
        self,
        dim: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        bidirectional: bool = True,
        drop_path: float = 0.0,
        norm_layer: type[nn.Module] = nn.RMSNorm,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm = norm_layer(dim, eps=norm_eps)
        self.mixer = BiMambaMixer(dim, d_state, d_conv, expand, bidirectional)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        """residual (batch, L, d) float32 -> (batch, L, d) float32."""
        hidden = self.norm(residual.to(self.norm.weight.dtype))
        return residual + self.drop_path(self.mixer(hidden))  # promotes to float32


class PatchEmbed(nn.Module):
    """Conv patchify: (batch, C, H, W) -> (batch, (H // p) * (W // p), d); floors like the conv."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.img_size = img_size
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)

    def feat_size(self, height: int, width: int) -> tuple[int, int]:
        """The token grid (rows, cols) for an input of height x width pixels."""
        return height // self.patch_size, width // self.patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def resize_pos_embed(
    pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> torch.Tensor:
    """Resample (1, old_L + 1, d) -> (1, new_L + 1, d) bicubically; the class token stays mid-way.

    The class-token row sits at index old_L // 2 and is reinserted, unchanged, at new_L // 2.
    """
    old_len, new_len = old_grid[0] * old_grid[1], new_grid[0] * new_grid[1]
    if pos_embed.dim() != 3 or pos_embed.shape[1] != old_len + 1:
        raise ValueError(
            f"pos_embed must be (1, {old_len + 1}, d) for grid {old_grid}, "
            f"got {tuple(pos_embed.shape)}"
        )
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    mid = old_len // 2
    cls_row = pos_embed[:, mid : mid + 1]
    grid = torch.cat([pos_embed[:, :mid], pos_embed[:, mid + 1 :]], dim=1)
    grid = grid.reshape(1, *old_grid, -1).permute(0, 3, 1, 2).float()  # (1, d, rows, cols)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", antialias=True)
    grid = grid.permute(0, 2, 3, 1).flatten(1, 2).to(pos_embed.dtype)  # (1, new_L, d)
    new_mid = new_len // 2
    return torch.cat([grid[:, :new_mid], cls_row, grid[:, new_mid:]], dim=1)


class VisionMamba(nn.Module):
    """Vim: images (batch, 3, H, W) -> logits (batch, num_classes), at any H, W >= patch_size."""

    def __init__(
        self,
        img_size: int,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 192,
        depth: int = 24,
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        bidirectional: bool = True,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_layer: type[nn.Module] = nn.RMSNorm,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if not isinstance(img_size, int) or img_size < patch_size:
            raise ValueError(
                f"img_size must be an int >= patch_size={patch_size}, got {img_size!r}"
            )
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
        self.bidirectional = bidirectional
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.grid_size[0] * self.patch_embed.grid_size[1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linear decay rule
        self.layers = nn.ModuleList(
            Block(embed_dim, d_state, d_conv, expand, bidirectional, dpr[i], norm_layer, norm_eps)
            for i in range(depth)
        )
        self.norm_f = norm_layer(embed_dim, eps=norm_eps)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(depth)

    def _init_weights(self, depth: int) -> None:
        # As the official code: patch conv lecun-normal, head and tokens trunc-normal(0.02),
        # out_proj Kaiming-uniform / sqrt(depth) (GPT-2 residual scheme), every Linear bias zero
        # but the forward dt_proj's (Mamba's dt init; dt_proj_b.bias is 0, see BiMambaMixer).
        # dt_proj_b.weight: official nn.Linear default = U(+-R^-0.5), the same law as Mamba's.
        # Left different: the order of random draws, so equal seeds give other values.
        lecun_normal_(self.patch_embed.proj.weight)
        nn.init.zeros_(self.patch_embed.proj.bias)
        if isinstance(self.head, nn.Linear):
            trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        for layer in self.layers:
            nn.init.kaiming_uniform_(layer.mixer.out_proj.weight, a=math.sqrt(5))
            with torch.no_grad():
                layer.mixer.out_proj.weight /= math.sqrt(depth)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    def set_input_size(self, img_size: int) -> None:
        """Rebuild for img_size x img_size inputs: resamples pos_embed in place."""
        patch = self.patch_embed.patch_size
        if not isinstance(img_size, int) or img_size < patch:
            raise ValueError(f"img_size must be an int >= patch_size={patch}, got {img_size!r}")
        new_grid = (img_size // patch, img_size // patch)
        with torch.no_grad():
            resized = resize_pos_embed(self.pos_embed.data, self.patch_embed.grid_size, new_grid)
        self.pos_embed = nn.Parameter(resized)
        self.patch_embed.img_size, self.patch_embed.grid_size = img_size, new_grid

    def _grid_of(self, x: torch.Tensor) -> tuple[int, int]:
        height, width = x.shape[-2:]
        patch = self.patch_embed.patch_size
        if height < patch or width < patch:
            raise ValueError(f"input must be at least {patch}x{patch} pixels, got {height}x{width}")
        return self.patch_embed.feat_size(height, width)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, C, H, W) -> normalized tokens (batch, L + 1, d); class token at index L // 2."""
        grid = self._grid_of(x)
        x = self.patch_embed(x)  # (batch, L, d)
        mid = x.shape[1] // 2
        cls_token = self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([x[:, :mid], cls_token, x[:, mid:]], dim=1)
        pos_embed = resize_pos_embed(self.pos_embed, self.patch_embed.grid_size, grid)
        residual = self.pos_drop(x + pos_embed).float()
        for layer in self.layers:
            residual = layer(residual)
        return self.norm_f(residual.to(self.norm_f.weight.dtype))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (batch, L + 1, d) -> logits (batch, num_classes), read from the middle token."""
        cls = x[:, (x.shape[1] - 1) // 2]
        return cls if pre_logits else self.head(cls)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, C, H, W) -> final normed patch tokens (batch, d, H // p, W // p), no class."""
        rows, cols = self._grid_of(x)
        tokens = self.forward_features(x)
        mid = rows * cols // 2
        patches = torch.cat([tokens[:, :mid], tokens[:, mid + 1 :]], dim=1)
        return patches.transpose(1, 2).reshape(x.shape[0], -1, rows, cols)


def checkpoint_filter_fn(state_dict: dict, model: VisionMamba) -> dict[str, torch.Tensor]:
    """Official hustvl/Vim checkpoint -> our state dict, pos_embed resampled to `model`'s grid.

    Our names are the official ones; this unwraps {"model": ...}, strips a DDP "module." prefix
    and resamples pos_embed (its grid is read from its length: a square of L tokens plus one).
    """
    state_dict = state_dict.get("model", state_dict)
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if key == "pos_embed" and value.shape != model.pos_embed.shape:
            side = math.isqrt(value.shape[1] - 1)
            if side * side != value.shape[1] - 1:
                raise ValueError(f"pos_embed of {value.shape[1]} tokens is not a square grid + 1")
            value = resize_pos_embed(value, (side, side), model.patch_embed.grid_size)
        out[key] = value
    return out


def _create(variant: str, pretrained: bool = False, **kwargs) -> VisionMamba:
    return build_model_with_cfg(
        VisionMamba, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn, **kwargs
    )


def _cfg(**kwargs) -> dict:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "license": "apache-2.0",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {name: _cfg() for name in ("vim_tiny", "vim_small", "vim_base", "test_vim")}
)


@register_model
def vim_tiny(pretrained: bool = False, **kwargs) -> VisionMamba:
    model_args = dict(img_size=224, embed_dim=192, depth=24)
    return _create("vim_tiny", pretrained, **dict(model_args, **kwargs))


@register_model
def vim_small(pretrained: bool = False, **kwargs) -> VisionMamba:
    model_args = dict(img_size=224, embed_dim=384, depth=24)
    return _create("vim_small", pretrained, **dict(model_args, **kwargs))


@register_model
def vim_base(pretrained: bool = False, **kwargs) -> VisionMamba:
    model_args = dict(img_size=224, embed_dim=768, depth=24)
    return _create("vim_base", pretrained, **dict(model_args, **kwargs))


@register_model
def test_vim(pretrained: bool = False, **kwargs) -> VisionMamba:
    model_args = dict(img_size=224, embed_dim=32, depth=2)
    return _create("test_vim", pretrained, **dict(model_args, **kwargs))


# The sweep's `options` axis: ablation name -> constructor overrides (Vim paper, Table 4's
# bidirectional ablation; see study/data/published_accuracy.csv).
ABLATIONS = {"unidirectional": {"bidirectional": False}}

register_family(["vim_tiny", "vim_small", "vim_base"], "vim")
register_family(["test_vim"], "vim", listed=False)
