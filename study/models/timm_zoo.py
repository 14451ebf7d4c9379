"""The CNN, ViT and gated-CNN baselines, taken from timm as they are."""

from typing import Literal

import torch.nn as nn

from study.models.registry import register_family

register_family(["resnet50", "convnext_tiny"], "cnn")
register_family(["deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224"], "vit")
register_family(["mambaout_tiny"], "gated_cnn")
register_family(["test_vit"], "vit", listed=False)  # a 2-block deit for fast tests
register_family(["test_resnet"], "cnn", listed=False)

# Small stand-ins for tests: the same classes as the real ViT and CNN, built in milliseconds.
TEST_VARIANTS: dict[str, tuple[str, dict]] = {
    "test_vit": ("deit_tiny_patch16_224", {"embed_dim": 32, "depth": 2, "num_heads": 2}),
    "test_resnet": ("resnet18", {"layers": (1, 1, 1, 1)}),
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
