"""The effective receptive field of one model: RepLKNet's gradient method.

For each image x (1, 3, H, W): run the model to its final spatial feature map f (1, C, H', W'),
take the target sum_c ReLU(f[0, c, H'//2, W'//2]), differentiate it with respect to x, keep
ReLU(dtarget/dx) and sum it over RGB -> an (H, W) contribution map. Maps that contain NaN are
skipped and counted; the others are averaged.

Parameters are frozen (requires_grad False), so autograd keeps only what the input gradient needs:
the memory is that of one forward and one input-gradient pass, batch 1.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

FeatureFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]


@dataclass
class ErfResult:
    """contribution: (H, W) float64, the mean contribution map over the images used.

    feature_hw: (H', W') of the feature map whose centre is the target; n_images: maps averaged;
    n_nan: maps skipped because they contained NaN.
    """

    contribution: np.ndarray
    feature_hw: tuple[int, int]
    n_images: int
    n_nan: int


def _default_feature_fn(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    from study.models import feature_map  # imported here: the core runs on any module without it

    return feature_map(model, x)


def contribution_map(
    model: nn.Module, x: torch.Tensor, feature_fn: FeatureFn
) -> tuple[torch.Tensor, tuple[int, int]]:
    """x (1, 3, H, W) -> (ReLU(d target / d x) summed over RGB: (H, W), feature map (H', W'))."""
    x = x.detach().requires_grad_(True)
    feats = feature_fn(model, x)
    if feats.dim() != 4:
        raise ValueError(
            f"feature_fn must return (batch, C, H', W'), got shape {tuple(feats.shape)}"
        )
    rows, cols = feats.shape[-2:]
    target = torch.relu(feats[:, :, rows // 2, cols // 2]).sum()
    if not target.requires_grad:  # no path from x to the centre (or all of it is constant)
        return torch.zeros(x.shape[-2:], dtype=torch.float64), (rows, cols)
    (grad,) = torch.autograd.grad(target, x)
    return torch.relu(grad).sum(dim=(0, 1)).double(), (rows, cols)


def erf_map(
    model: nn.Module,
    images: Iterable[torch.Tensor],
    feature_fn: FeatureFn | None = None,
) -> ErfResult:
    """Mean contribution map of `model` over `images`, each (3, H, W) or (1, 3, H, W), normalised.

    feature_fn(model, x) -> (1, C, H', W'); default `study.models.feature_map`. The model is put in
    eval mode and its parameters stop requiring gradients (the caller's model is modified).
    """
    feature_fn = feature_fn or _default_feature_fn
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    total, feature_hw, n_used, n_nan = None, (0, 0), 0, 0
    for image in images:
        x = image if image.dim() == 4 else image.unsqueeze(0)
        if x.shape[0] != 1 or x.shape[1] != 3:
            raise ValueError(f"each image must be (3, H, W) or (1, 3, H, W), got {tuple(x.shape)}")
        contribution, feature_hw = contribution_map(model, x.to(device), feature_fn)
        if torch.isnan(contribution).any():
            n_nan += 1
            continue
        total = contribution if total is None else total + contribution
        n_used += 1
    if total is None:
        if n_nan:
            raise ValueError(f"every contribution map had NaN ({n_nan} images); nothing to average")
        raise ValueError("no images given; need at least one (3, H, W) image")
    return ErfResult((total / n_used).cpu().numpy(), feature_hw, n_used, n_nan)
