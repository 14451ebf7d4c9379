"""Cross-scan and cross-merge: VMamba's four 2-D scan orders, shared by the models."""

import torch

from kernels.cross_scan.reference import cross_merge_ref, cross_scan_ref


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """(batch, C, H, W) -> (batch, 4, C, H*W): row-major, column-major, and each reversed."""
    if x.dim() != 4:
        raise ValueError(f"cross_scan expects (batch, C, H, W), got shape {tuple(x.shape)}")
    return cross_scan_ref(x)


def cross_merge(y: torch.Tensor) -> torch.Tensor:
    """(batch, 4, C, H, W) -> (batch, C, H*W): undo each order of `cross_scan` and sum."""
    if y.dim() != 5 or y.shape[1] != 4:
        raise ValueError(f"cross_merge expects (batch, 4, C, H, W), got shape {tuple(y.shape)}")
    return cross_merge_ref(y)
