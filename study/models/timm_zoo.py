"""The CNN, ViT, windowed-ViT (Swin) and gated-CNN baselines, taken from timm as they are."""

import math
from typing import Literal

import torch.nn as nn

from study.models.registry import register_family

register_family(["resnet50", "convnext_tiny"], "cnn")
register_family(["deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224"], "vit")
register_family(["swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224"], "windowed_vit")
register_family(["mambaout_tiny"], "gated_cnn")
register_family(["test_vit"], "vit", listed=False)  # a 2-block deit for fast tests
register_family(["test_resnet"], "cnn", listed=False)
register_family(["test_swin"], "windowed_vit", listed=False)  # one shifted pair per stage

# Small stand-ins for tests: the same classes as the real ViT and CNN, built in milliseconds.
TEST_VARIANTS: dict[str, tuple[str, dict]] = {
    "test_vit": ("deit_tiny_patch16_224", {"embed_dim": 32, "depth": 2, "num_heads": 2}),
    "test_resnet": ("resnet18", {"layers": (1, 1, 1, 1)}),
    "test_swin": (
        "swin_tiny_patch4_window7_224",
        {"embed_dim": 16, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 2, 4)},
    ),
}

Attn = Literal["fused", "naive"]


def set_attention(model: nn.Module, attn: Attn) -> None:
    """Switch every timm attention block between SDPA ("fused") and softmax(q·kᵀ)·v ("naive")."""
    if attn not in ("fused", "naive"):
        raise ValueError(f"unknown attn {attn!r}; allowed: fused, naive")
    blocks = [m for m in model.modules() if hasattr(m, "fused_attn")]
    if not blocks:
        raise ValueError(f"attn= applies only to ViTs; {type(model).__name__} has no attention")
    for block in blocks:
        block.fused_attn = attn == "fused"


Window = Literal["fixed", "scaled"]
# Swin-T/S attend within 7x7-token windows at 224 px (Swin paper, arXiv 2103.14030, Section 4.1;
# timm's swin_*_patch4_window7_224). Its 384-px fine-tuning grows the window to 12 = 7·384/224.
WINDOW_AT_224 = 7


def window_size_for(img_size: int, window: Window) -> int:
    """Swin's attention window, in tokens per side, for `img_size`-px inputs.

    "fixed": 7 at every size, so attention costs grow linearly with the pixels. "scaled": 7 ·
    img_size / 224 rounded to the nearest integer (timm takes any positive integer: it pads a
    stage whose grid the window does not divide, and shrinks a window larger than its stage's
    grid to that grid), so each window covers the same share of the image as at 224 and the
    attention term grows with the square of the pixels again.
    """
    if window not in ("fixed", "scaled"):
        raise ValueError(f"unknown window {window!r}; allowed: fixed, scaled")
    if window == "fixed":
        return WINDOW_AT_224
    return max(1, math.floor(WINDOW_AT_224 * img_size / 224 + 0.5))
