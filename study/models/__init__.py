"""The model zoo: one entry point for every family, at any input size.

create(name, img_size, **overrides) -> model in eval mode built for img_size
family_of(name) -> "cnn" | "vit" | "windowed_vit" | "vim" | "vmamba" | "gated_cnn"
available() -> the zoo's names
options_of(name) -> the ablations that apply to a model ("default" first), () if none does
ablation(name, option) -> constructor overrides of a named ablation, or None where it does not apply
feature_map(model, x) -> final spatial feature map (batch, C, H', W')
"""

import inspect
from typing import Literal

import timm
import torch
import torch.nn as nn

from study.models import micro, timm_zoo, vim, vmamba  # noqa: F401  (importing registers them)
from study.models.registry import Family, available, family_of

__all__ = ["OPTIONS", "Family", "Option", "ablation", "available", "create", "family_of",
           "feature_map", "options_of"]  # fmt: skip

# Named ablations (the sweep's `options` axis): each family file lists its own as ABLATIONS.
Option = Literal["default", "unidirectional", "directions1", "directions2"]
_ABLATIONS: dict[str, dict[str, dict]] = {"vim": vim.ABLATIONS, "vmamba": vmamba.ABLATIONS}
OPTIONS: tuple[str, ...] = ("default", *(o for a in _ABLATIONS.values() for o in a))

# Families whose timm constructors take img_size; timm CNNs are fully convolutional and take none.
_SIZED_FAMILIES = ("vit", "windowed_vit", "vim", "vmamba")


def _build(name: str, kwargs: dict) -> nn.Module:
    if name in timm_zoo.TEST_VARIANTS:
        base, defaults = timm_zoo.TEST_VARIANTS[name]
        return timm.create_model(base, pretrained=False, **{**defaults, **kwargs})
    return timm.create_model(name, pretrained=False, **kwargs)


def _allowed_overrides(name: str, kwargs: dict) -> str:
    """The constructor arguments of `name`'s class, for an error message (built on meta)."""
    with torch.device("meta"):
        model_cls = type(_build(name, {k: v for k, v in kwargs.items() if k == "img_size"}))
    params = inspect.signature(model_cls.__init__).parameters
    return ", ".join(p for p in params if p not in ("self", "args", "kwargs", "img_size"))


def create(name: str, img_size: int, **overrides) -> nn.Module:
    """Build zoo model `name` for `img_size`×`img_size` inputs, in eval mode, random init.

    overrides: constructor arguments (e.g. `bidirectional=False` for Vim, `directions=2` for VMamba,
    `num_classes=0`), plus `attn="fused"|"naive"` for ViTs and `window="fixed"|"scaled"` for
    windowed ViTs (Swin; default "fixed": 7 tokens per side at every size, see
    `timm_zoo.window_size_for`).
    """
    family = family_of(name)
    if not isinstance(img_size, int) or img_size < 32:
        raise ValueError(f"img_size must be an integer >= 32, got {img_size!r}")
    attn = overrides.pop("attn", None)
    if attn is not None and family != "vit":
        raise ValueError(f"attn= applies only to ViTs (family 'vit'); {name} is {family!r}")
    window = overrides.pop("window", None)
    if window is not None and family != "windowed_vit":
        raise ValueError(
            f"window= applies only to windowed ViTs (family 'windowed_vit'); {name} is {family!r}"
        )
    kwargs = dict(overrides)
    if family in _SIZED_FAMILIES:
        kwargs["img_size"] = img_size
    if family == "windowed_vit":
        if window is not None and "window_size" in kwargs:
            raise ValueError(f"give {name} window= or window_size=, not both")
        kwargs.setdefault("window_size", timm_zoo.window_size_for(img_size, window or "fixed"))
    try:
        model = _build(name, kwargs)
    except TypeError as err:
        option = {"vit": ", attn", "windowed_vit": ", window"}.get(family, "")
        allowed = _allowed_overrides(name, kwargs) + option
        raise ValueError(f"bad override for {name} ({err}); allowed: {allowed}") from None
    if attn is not None:
        timm_zoo.set_attention(model, attn)
    return model.eval()


def options_of(name: str) -> tuple[str, ...]:
    """The options that change model `name` ("default" first); () for a family without ablations."""
    names = tuple(_ABLATIONS.get(family_of(name), {}))
    return ("default", *names) if names else ()


def ablation(name: str, option: Option) -> dict | None:
    """Constructor overrides of ablation `option` for zoo model `name` ("default": {}).

    None where the option does not apply to the model's family (e.g. "unidirectional" for
    VMamba): the sweep normalises such a cell to its default. ValueError for an unknown option.
    """
    if option not in OPTIONS:
        raise ValueError(f"unknown options {option!r}; allowed: {', '.join(OPTIONS)}")
    if option == "default":
        return {}
    overrides = _ABLATIONS.get(family_of(name), {}).get(option)
    return None if overrides is None else dict(overrides)


def feature_map(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The final-stage spatial feature map (batch, C, H', W') of any zoo model.

    ViT tokens lose their prefix (class) tokens and are laid back on the patch grid; channel-last
    outputs (MambaOut) are permuted to channel-first. Vim and VMamba define `forward_feature_map`.
    """
    if hasattr(model, "forward_feature_map"):
        return model.forward_feature_map(x)
    feats = model.forward_features(x)
    if feats.dim() == 3:  # ViT: (batch, prefix + H'*W', C)
        tokens = feats[:, model.num_prefix_tokens :]
        height, width = model.patch_embed.dynamic_feat_size(x.shape[-2:])
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, height, width)
    if getattr(model, "output_fmt", "NCHW") == "NHWC":
        return feats.permute(0, 3, 1, 2)
    return feats
