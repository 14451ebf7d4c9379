"""VMamba, the Visual State Space Model (Liu et al., NeurIPS 2024; MzeroMiko/VMamba).

Two designs, built from typed arguments and small classes rather than the official forward-type
strings:

- NeurIPS (the official "v05_noz" with "ln2d", downsample "v3", patch embed "v2"): channel-first
  (batch, C, H, W) throughout, LayerNorm over channels; stem = two 3x3 stride-2 convs;
  downsampling = 3x3 stride-2 conv + norm; block = x + SS2D(norm(x)), then x + MLP(norm(x)).
- January 2024 ("vanilla", the official "v0"): channel-last (batch, H, W, C); 4x4 patch stem;
  patch merging (norm over 4C, linear 4C -> 2C); block = x + GatedSS2D(norm(x)), no MLP.

The scan itself goes through `kernels` (cross_scan, one selective_scan over all directions,
cross_merge); the model never picks a scan backend.

Parameter and module names follow the official code, so official checkpoints load through
`checkpoint_filter_fn` with only the stem and downsample Sequential indices renamed.
"""

import math
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, trunc_normal_
from timm.models import register_model

import kernels
from study.models.registry import register_family

__all__ = ["VMamba", "SS2D", "GatedSS2D", "checkpoint_filter_fn"]

Directions = Literal[1, 2, 4]
MIN_IMG_PX = 32  # total stride of the four stages: smaller images leave no token to scan
LN_EPS = 1e-5  # nn.LayerNorm's default, which the official LayerNorm2d inherits


class Linear2d(nn.Linear):
    """A 1x1 convolution on (batch, C, H, W) that stores its weight as nn.Linear does (out, in).

    Same parameter shapes as the official checkpoints, same init as nn.Linear (trunc-normal below).
    Computed as a GEMM in the layout the input has, with no copy: a channels-last map (what
    LayerNorm2d returns) as nn.Linear over its (batch, H, W, C) view, an NCHW map as W @ x over
    (C, H*W), which writes the NCHW output directly. On CPU the NCHW GEMM beats oneDNN's NCHW 1x1
    convolution by 1.1-2.3x at VMamba-T's 1x1 shapes (1024 px, process CPU time), and the
    channels-last GEMM matches oneDNN's channels-last convolution: tools/linear2d_bench.py.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nhwc = x.permute(0, 2, 3, 1)
        if nhwc.is_contiguous() and not x.is_contiguous():  # channels-last strides
            return F.linear(nhwc, self.weight, self.bias).permute(0, 3, 1, 2)
        batch, _, height, width = x.shape
        flat = x.flatten(2)  # (batch, in, H*W): a view of an NCHW-contiguous map
        weight = self.weight if batch == 1 else self.weight.expand(batch, -1, -1)
        if batch == 1:  # one GEMM (bmm with a stride-0 weight is several times slower)
            flat = flat[0]
            y = torch.mm(weight, flat) if self.bias is None else None
        else:
            y = torch.bmm(weight, flat) if self.bias is None else None
        if y is None:
            gemm = torch.addmm if batch == 1 else torch.baddbmm
            y = gemm(self.bias[:, None], weight, flat)
        return y.view(batch, -1, height, width)


def channel_norm(num_channels: int) -> nn.Module:
    """LayerNorm over the channels of a (batch, C, H, W) tensor."""
    return LayerNorm2d(num_channels, eps=LN_EPS)


# ------------------------------------------------------------------------------------------------
# The 2-D selective scan (shared by both designs)
# ------------------------------------------------------------------------------------------------


# Scan direction k (the slot of its parameters) -> (token order, reverse). 4 is VMamba's cross-scan
# (`kernels.cross_scan` orders 0-3: row-major, column-major, each reversed); 2 is row-major and its
# reverse (VMamba's "bidi" ablation); 1 is row-major only ("unidi"). A reversed order is the same
# sequence scanned with reverse=True, whose output is already in the sequence's own positions.
SCAN_ORDERS: dict[int, tuple[tuple[str, bool], ...]] = {
    1: (("rows", False),),
    2: (("rows", False), ("rows", True)),
    4: (("rows", False), ("cols", False), ("rows", True), ("cols", True)),
}


def project(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(out, in) @ (batch, in, L) -> (batch, out, L) as one batched GEMM. (torch.matmul folds the
    batch into one GEMM or not depending on the grad mode, which changes the rounding.)"""
    if x.shape[0] == 1:  # one GEMM; bmm with a stride-0 (expanded) weight is several times slower
        return torch.mm(weight, x[0]).unsqueeze(0)
    return torch.bmm(weight.expand(x.shape[0], -1, -1), x)


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """A, D and delta_bias go to the scan in float32 (mamba_ssm's contract), float64 kept."""
    return t if t.dtype == torch.float64 else t.float()


class SelectiveScan2D(nn.Module):
    """Parameters and forward of VMamba's 2-D selective scan; the two mixers below extend it.

    One direction k has its own x_proj (Di -> R + 2N), dt_proj (R -> Di, with bias), A (Di, N) and
    D (Di); they are stored stacked, as the official code does:
        x_proj_weight (K, R + 2N, Di), dt_projs_weight (K, Di, R), dt_projs_bias (K, Di),
        A_logs (K*Di, N), Ds (K*Di).
    The K directions run as one selective scan over K*Di channels, B and C grouped by direction.

    `directions` (1, 2 or 4) is the scan-direction ablation; the per-direction parameters scale with
    it (the official ablation instead kept four parameter sets and repeated the sequences).
    """

    def __init__(
        self,
        d_inner: int,
        d_state: int,
        dt_rank: int,
        directions: Directions = 4,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        if directions not in (1, 2, 4):
            raise ValueError(f"directions must be 1, 2 or 4, got {directions!r}")
        self.directions = directions
        self.d_inner, self.d_state, self.dt_rank = d_inner, d_state, dt_rank
        k = directions
        self.x_proj_weight = nn.Parameter(torch.empty(k, dt_rank + 2 * d_state, d_inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, dt_rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(k, d_inner))
        self.A_logs = nn.Parameter(torch.empty(k * d_inner, d_state))
        self.Ds = nn.Parameter(torch.empty(k * d_inner))
        self._init_scan(dt_min, dt_max, dt_init_floor)

    @torch.no_grad()
    def _init_scan(self, dt_min: float, dt_max: float, dt_init_floor: float) -> None:
        """Mamba's init: x_proj as nn.Linear, dt_proj uniform +-R^-0.5, softplus(dt bias)
        log-uniform in [dt_min, dt_max], S4D-real A = -[1..N], D = 1."""
        bound = 1 / math.sqrt(self.d_inner)  # nn.Linear's default init
        self.x_proj_weight.uniform_(-bound, bound)
        self.dt_projs_weight.uniform_(-(self.dt_rank**-0.5), self.dt_rank**-0.5)
        log_dt = torch.rand_like(self.dt_projs_bias) * (math.log(dt_max) - math.log(dt_min))
        dt = torch.exp(log_dt + math.log(dt_min)).clamp(min=dt_init_floor)
        self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
        a = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=self.A_logs.device)
        self.A_logs.copy_(torch.log(a).expand_as(self.A_logs))
        self.Ds.fill_(1.0)

    def forward_core(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, Di, H, W) -> (batch, Di, H, W): scan the K directions, sum them back in place.

        Only the token orders scanned are built: row-major (a view of x) and, for 4 directions,
        column-major, side by side in one (batch, O*Di, L) tensor (token-major when x is
        channels-last: the scan reads any strides). Reversed
        directions scan the same tensor with reverse=True, their outputs already in its token
        positions, so all K directions take one scan call per sense (forward, reverse) with B and
        C grouped by token order, and no flipped copies. Slot k = v * O + o of the parameters is
        sense v (0 forward, 1 reverse) of order o (SCAN_ORDERS). Projections run as GEMMs into
        the scan's (channels, L) layout.
        """
        batch, d_inner, height, width = x.shape
        n, r, length = self.d_state, self.dt_rank, height * width
        n_orders = len({name for name, _ in SCAN_ORDERS[self.directions]})
        senses = self.directions // n_orders
        if n_orders == 1:  # (batch, 1, Di, L): a view, of an NCHW or a channels-last map
            seqs = x.flatten(2).unsqueeze(1)
        elif x.permute(0, 2, 3, 1).is_contiguous():  # channels-last (after LayerNorm2d, Linear2d)
            tokens = x.new_empty(batch, length, 2, d_inner)  # token-major: rows then columns
            tokens[:, :, 0].view(batch, height, width, d_inner).copy_(x.permute(0, 2, 3, 1))
            tokens[:, :, 1].view(batch, width, height, d_inner).copy_(x.permute(0, 3, 2, 1))
            seqs = tokens.permute(0, 2, 3, 1)  # (batch, 2, Di, L), unit channel stride
        else:
            seqs = x.new_empty(batch, 2, d_inner, length)
            seqs[:, 0].view(batch, d_inner, height, width).copy_(x)
            seqs[:, 1].view(batch, d_inner, width, height).copy_(x.transpose(2, 3))
        c = r + 2 * n
        w_x = self.x_proj_weight.view(senses, n_orders, c, d_inner).transpose(0, 1)
        x_dbl = torch.matmul(w_x.reshape(n_orders, senses * c, d_inner), seqs)
        x_dbl = x_dbl.view(batch, n_orders, senses, c, length).transpose(1, 2)  # (b, V, O, c, L)
        w_dt = self.dt_projs_weight.view(senses, n_orders, d_inner, r)
        dts = torch.matmul(w_dt, x_dbl[:, :, :, :r])  # (batch, V, O, Di, L), contiguous
        A = -torch.exp(at_least_fp32(self.A_logs)).view(senses, n_orders * d_inner, n)
        skip = at_least_fp32(self.Ds).view(senses, n_orders * d_inner)
        bias = at_least_fp32(self.dt_projs_bias).view(senses, n_orders * d_inner)
        u = seqs.reshape(batch, n_orders * d_inner, length)  # a view
        y = None
        for v in range(senses):
            out = kernels.selective_scan(
                u,
                dts[:, v].reshape(batch, n_orders * d_inner, length),  # a view
                A[v],
                x_dbl[:, v, :, r : r + n],  # (batch, O, N, L): group o is token order o
                x_dbl[:, v, :, r + n :],
                skip[v],
                delta_bias=bias[v],
                delta_softplus=True,
                reverse=v == 1,
            )
            y = out if y is None else y + out
        y = y.view(batch, n_orders, d_inner, length)
        merged = y[:, 0].view(batch, d_inner, height, width)
        if n_orders == 2:  # column-major positions back to row-major
            merged = merged + y[:, 1].view(batch, d_inner, width, height).transpose(2, 3)
        return merged


class SS2D(SelectiveScan2D):
    """NeurIPS SS2D mixer, channel-first (batch, d, H, W) -> (batch, d, H, W).

    1x1 in_proj d -> Di (no z branch); depthwise 3x3 conv (no bias) + SiLU; 2-D selective scan;
    LayerNorm over channels; 1x1 out_proj Di -> d.
    """

    channels_last = False

    def __init__(
        self,
        d_model: int,
        d_state: int = 1,
        ssm_ratio: float = 1.0,
        dt_rank: int | None = None,
        directions: Directions = 4,
    ) -> None:
        d_inner = int(ssm_ratio * d_model)
        rank = math.ceil(d_model / 16) if dt_rank is None else dt_rank
        super().__init__(d_inner, d_state, rank, directions)
        self.in_proj = Linear2d(d_model, d_inner, bias=False)
        self.act = nn.SiLU()
        self.conv2d = nn.Conv2d(d_inner, d_inner, 3, padding=1, groups=d_inner, bias=False)
        self.out_norm = channel_norm(d_inner)
        self.out_proj = Linear2d(d_inner, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv2d(self.in_proj(x)))
        y = self.out_norm(self.forward_core(x))
        return self.out_proj(y.to(x.dtype))


class GatedSS2D(SelectiveScan2D):
    """January-2024 SS2D mixer, channel-last (batch, H, W, d) -> (batch, H, W, d).

    Linear in_proj d -> 2*Di split into x and z; x: depthwise 3x3 conv (with bias) + SiLU, 2-D
    selective scan, LayerNorm; output gated by SiLU(z); linear out_proj Di -> d.
    """

    channels_last = True

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        ssm_ratio: float = 2.0,
        dt_rank: int | None = None,
        directions: Directions = 4,
    ) -> None:
        d_inner = int(ssm_ratio * d_model)
        rank = math.ceil(d_model / 16) if dt_rank is None else dt_rank
        super().__init__(d_inner, d_state, rank, directions)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.act = nn.SiLU()
        self.conv2d = nn.Conv2d(d_inner, d_inner, 3, padding=1, groups=d_inner, bias=True)
        self.out_norm = nn.LayerNorm(d_inner, eps=LN_EPS)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, z = self.in_proj(x).chunk(2, dim=-1)  # (batch, H, W, Di) each
        x = self.act(self.conv2d(x.permute(0, 3, 1, 2).contiguous()))
        y = self.out_norm(self.forward_core(x).permute(0, 2, 3, 1))  # (batch, H, W, Di)
        return self.out_proj(y.to(x.dtype) * self.act(z))


# ------------------------------------------------------------------------------------------------
# Blocks, stems, downsampling
# ------------------------------------------------------------------------------------------------


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2; `linear_layer` is Linear2d for channel-first inputs."""

    def __init__(self, dim: int, hidden: int, linear_layer: type[nn.Linear] = nn.Linear) -> None:
        super().__init__()
        self.fc1 = linear_layer(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = linear_layer(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VSSBlock(nn.Module):
    """x + drop_path(op(norm(x))), then x + drop_path(mlp(norm2(x))) when mlp_ratio > 0."""

    def __init__(
        self,
        dim: int,
        op: nn.Module,
        mlp_ratio: float,
        channels_last: bool,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        norm_layer = nn.LayerNorm if channels_last else LayerNorm2d
        self.norm = norm_layer(dim, eps=LN_EPS)
        self.op = op
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = self.mlp = None
        if mlp_ratio > 0:
            self.norm2 = norm_layer(dim, eps=LN_EPS)
            linear = nn.Linear if channels_last else Linear2d
            self.mlp = Mlp(dim, int(dim * mlp_ratio), linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.op(self.norm(x)))
        if self.mlp is not None:
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class ConvStem(nn.Module):
    """NeurIPS stem: conv 3x3/2 -> LN -> GELU -> conv 3x3/2 -> LN; (batch, 3, H, W) -> (batch, d,
    ceil(H/4), ceil(W/4)) channel-first."""

    channels_last = False
    OFFICIAL_NAMES = {"0": "conv1", "2": "norm1", "5": "conv2", "7": "norm2"}  # nn.Sequential ids

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, dim // 2, 3, stride=2, padding=1)
        self.norm1 = channel_norm(dim // 2)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1)
        self.norm2 = channel_norm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))


class ConvDownsample(nn.Module):
    """NeurIPS downsampling: conv 3x3/2 (C -> 2C) + LN, channel-first."""

    channels_last = False
    OFFICIAL_NAMES = {"1": "conv", "3": "norm"}

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim, 3, stride=2, padding=1)
        self.norm = channel_norm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class PatchEmbed(nn.Module):
    """January-2024 stem: conv 4x4/4 + LN; (batch, 3, H, W) -> (batch, H//4, W//4, d) (NHWC)."""

    channels_last = True
    OFFICIAL_NAMES = {"0": "proj", "2": "norm"}

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, 4, stride=4)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """January-2024 downsampling, channel-last: zero-pad odd H/W, concat each 2x2 neighbourhood
    (4C), LayerNorm, linear 4C -> 2C (no bias)."""

    channels_last = True
    # The official root vmamba.py's `_make_downsample` version "v1": Sequential(PatchMerge, norm,
    # reduction); the January-2024 classification code names them norm and reduction, as here.
    OFFICIAL_NAMES = {"1": "norm", "2": "reduction"}

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=LN_EPS)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[1:3]
        x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        # the official concatenation order: (even, even), (odd, even), (even, odd), (odd, odd)
        parts = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]
        return self.reduction(self.norm(torch.cat(parts, dim=-1)))


class VSSStage(nn.Module):
    """`blocks`, then `downsample` (Identity after the last stage), as the official layers."""

    def __init__(self, blocks: list[nn.Module], downsample: nn.Module) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.blocks(x))


class Classifier(nn.Module):
    """norm -> global average pool -> linear head (the official `classifier`)."""

    def __init__(self, dim: int, num_classes: int, channels_last: bool) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.norm = nn.LayerNorm(dim, eps=LN_EPS) if channels_last else channel_norm(dim)
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Normed final features, always channel-first (batch, C, H', W')."""
        x = self.norm(x)
        return x.permute(0, 3, 1, 2) if self.channels_last else x

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.feature_map(x).mean(dim=(2, 3))
        return x if pre_logits else self.head(x)


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------


class VMamba(nn.Module):
    """VMamba backbone and classifier, for any input of at least 32x32 pixels.

    Args:
        img_size: accepted for API uniformity with `study.models.create`; nothing in VMamba depends
            on it (it is only checked to be >= 32).
        depths: blocks per stage; embed_dim: width of stage 0, doubled at each stage.
        ssm_ratio: Di = ssm_ratio * d; d_state: N; dt_rank: R (None: ceil(d/16)).
        mlp_ratio: MLP hidden = mlp_ratio * d; 0 removes the MLP branch.
        directions: scan directions per SS2D: 4 = cross-scan (row-major, column-major and both
            reversed), 2 = row-major and its reverse (VMamba's "bidi"), 1 = row-major only.
        mixer_layer, stem_layer, downsample_layer: SS2D / ConvStem / ConvDownsample (NeurIPS,
            channel-first) or GatedSS2D / PatchEmbed / PatchMerging (January 2024, channel-last).
    """

    def __init__(
        self,
        img_size: int = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        depths: tuple[int, ...] | list[int] = (2, 2, 8, 2),
        embed_dim: int = 96,
        ssm_ratio: float = 1.0,
        d_state: int = 1,
        dt_rank: int | None = None,
        mlp_ratio: float = 4.0,
        directions: Directions = 4,
        drop_path_rate: float = 0.0,
        mixer_layer: type[SS2D] | type[GatedSS2D] = SS2D,
        stem_layer: type[ConvStem] | type[PatchEmbed] = ConvStem,
        downsample_layer: type[ConvDownsample] | type[PatchMerging] = ConvDownsample,
    ) -> None:
        super().__init__()
        if not isinstance(img_size, int) or img_size < MIN_IMG_PX:
            raise ValueError(f"img_size must be an integer >= {MIN_IMG_PX}, got {img_size!r}")
        if directions not in (1, 2, 4):
            raise ValueError(f"directions must be 1, 2 or 4, got {directions!r}")
        layouts = {cls.channels_last for cls in (mixer_layer, stem_layer, downsample_layer)}
        if len(layouts) != 1:
            raise ValueError(
                "mixer_layer, stem_layer and downsample_layer must share one layout: SS2D/ConvStem/"
                "ConvDownsample (channel-first) or GatedSS2D/PatchEmbed/PatchMerging (channel-last)"
            )
        self.channels_last = layouts.pop()
        self.in_chans = in_chans
        self.num_classes = num_classes
        dims = [embed_dim * 2**i for i in range(len(depths))]
        self.num_features = self.head_hidden_size = dims[-1]

        self.patch_embed = stem_layer(in_chans, dims[0])
        total = sum(
            depths
        )  # stochastic depth rising linearly to drop_path_rate (plain floats: meta-safe)
        drop_rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            blocks = [
                VSSBlock(
                    dims[i],
                    mixer_layer(dims[i], d_state, ssm_ratio, dt_rank, directions),
                    mlp_ratio,
                    self.channels_last,
                    drop_rates[sum(depths[:i]) + j],
                )
                for j in range(depth)
            ]
            last = i == len(depths) - 1
            downsample = nn.Identity() if last else downsample_layer(dims[i], dims[i + 1])
            self.layers.append(VSSStage(blocks, downsample))
        self.classifier = Classifier(dims[-1], num_classes, self.channels_last)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # As VSSM._init_weights in the training code (classification/models/vmamba.py). The
        # standalone root vmamba.py stores x_proj and dt_projs as nn.Linear subclasses, so its
        # same rule re-draws them trunc-normal(0.02) too; ours keep the training code's init
        # (nn.Linear default and Mamba's dt init, see SelectiveScan2D._init_scan).
        if isinstance(m, nn.Linear):  # Linear2d included
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"VMamba expects images (batch, {self.in_chans}, H, W), got shape {tuple(x.shape)}"
            )
        if x.shape[2] < MIN_IMG_PX or x.shape[3] < MIN_IMG_PX:
            raise ValueError(
                f"VMamba needs images of at least {MIN_IMG_PX}x{MIN_IMG_PX} pixels (its total "
                f"stride), got {x.shape[2]}x{x.shape[3]}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, 3, H, W) -> final-stage features before the classifier norm, in the model's own
        layout: (batch, C, H', W') for the NeurIPS design, (batch, H', W', C) for January 2024."""
        self._check_input(x)
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features from `forward_features` -> logits (batch, num_classes), or pooled (batch, C)."""
        return self.classifier(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, 3, H, W) -> (batch, C, H', W'), normed as the classifier sees it (H' = H/32
        rounded as the convs round it: ceil for the NeurIPS design)."""
        return self.classifier.feature_map(self.forward_features(x))


# ------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------


def _rename_official(key: str, model: VMamba) -> str:
    """One official key -> ours (old January-2024 names included)."""
    parts = key.split(".")
    if parts[0] == "patch_embed" and len(parts) == 3:
        parts[1] = type(model.patch_embed).OFFICIAL_NAMES.get(parts[1], parts[1])
    elif parts[0] == "layers" and len(parts) > 3 and parts[2] == "downsample":
        downsample = model.layers[int(parts[1])].downsample
        parts[3] = getattr(type(downsample), "OFFICIAL_NAMES", {}).get(parts[3], parts[3])
    elif parts[0] == "layers" and len(parts) > 4 and parts[2] == "blocks":
        parts[4] = {"ln_1": "norm", "self_attention": "op"}.get(parts[4], parts[4])
    elif parts[0] in ("norm", "head"):  # before the `classifier` Sequential existed
        parts.insert(0, "classifier")
    if parts[-2:] in (["x_proj", "weight"], ["dt_projs", "weight"]):  # root vmamba.py, flat
        parts[-2:] = [f"{parts[-2]}_weight"]
    return ".".join(parts)


def checkpoint_filter_fn(state_dict: dict, model: VMamba) -> dict[str, torch.Tensor]:
    """Official VMamba checkpoint (optionally wrapped as {"model": ...}) -> our state dict.

    Layouts (MzeroMiko/VMamba): the training code `classification/models/vmamba.py` (the released
    checkpoints) and the standalone root `vmamba.py`. Renames the official stem/downsample
    nn.Sequential indices (patch_embed.0, layers.i.downsample.1, ...; the January-2024 patch
    merging as Sequential: downsample.1 the norm, downsample.2 the reduction) and the January-2024
    names (ln_1, self_attention, top-level norm and head); reshapes 1x1-conv weights
    (out, in, 1, 1) stored for our Linear2d (out, in), and the root vmamba.py's flat grouped
    projections `op.x_proj.weight` (K*(R+2N), Di) and `op.dt_projs.weight` (K*Di, R) to our
    stacked x_proj_weight (K, R+2N, Di) and dt_projs_weight (K, Di, R). Everything else is already
    identical.
    """
    if "model" in state_dict and isinstance(state_dict["model"], dict):
        state_dict = state_dict["model"]
    ours = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        name = _rename_official(key, model)
        target = ours.get(name)
        if target is not None and value.dim() == 4 and target.dim() == 2:
            value = value.reshape(target.shape)
        elif (
            target is not None
            and target.dim() == 3
            and value.dim() == 2
            and value.numel() == target.numel()
        ):
            value = value.reshape(target.shape)  # root vmamba.py's flat x_proj / dt_projs
        out[name] = value
    return out


# ------------------------------------------------------------------------------------------------
# Variants
# ------------------------------------------------------------------------------------------------

_TIMM_ONLY = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")  # passed by timm, unused


def _create(pretrained: bool, defaults: dict, overrides: dict) -> VMamba:
    if pretrained:
        raise ValueError(
            "no bundled VMamba weights; build with pretrained=False and load an official "
            "checkpoint through checkpoint_filter_fn"
        )
    kwargs = {k: v for k, v in overrides.items() if k not in _TIMM_ONLY}
    return VMamba(**{**defaults, **kwargs})


_JAN2024 = dict(mixer_layer=GatedSS2D, stem_layer=PatchEmbed, downsample_layer=PatchMerging)


@register_model
def vmamba_tiny(pretrained: bool = False, **kwargs) -> VMamba:
    args = dict(depths=(2, 2, 8, 2), embed_dim=96, ssm_ratio=1.0, d_state=1)
    return _create(pretrained, args, kwargs)


@register_model
def vmamba_small(pretrained: bool = False, **kwargs) -> VMamba:
    args = dict(depths=(2, 2, 15, 2), embed_dim=96, ssm_ratio=2.0, d_state=1)
    return _create(pretrained, args, kwargs)


@register_model
def vmamba_base(pretrained: bool = False, **kwargs) -> VMamba:
    args = dict(depths=(2, 2, 15, 2), embed_dim=128, ssm_ratio=2.0, d_state=1)
    return _create(pretrained, args, kwargs)


@register_model
def vmamba_tiny_v0(pretrained: bool = False, **kwargs) -> VMamba:
    args = dict(depths=(2, 2, 9, 2), embed_dim=96, ssm_ratio=2.0, d_state=16, mlp_ratio=0.0)
    return _create(pretrained, {**args, **_JAN2024}, kwargs)


@register_model
def test_vmamba(pretrained: bool = False, **kwargs) -> VMamba:
    args = dict(depths=(1, 1, 1, 1), embed_dim=16, ssm_ratio=1.0, d_state=1)
    return _create(pretrained, args, kwargs)


# The sweep's `options` axis: ablation name -> constructor overrides (VMamba paper's scan-direction
# ablation: one or two directions instead of the four of cross-scan).
ABLATIONS = {"directions1": {"directions": 1}, "directions2": {"directions": 2}}

register_family(["vmamba_tiny", "vmamba_small", "vmamba_base", "vmamba_tiny_v0"], "vmamba")
register_family(["test_vmamba"], "vmamba", listed=False)
