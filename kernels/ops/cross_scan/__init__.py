"""Cross-scan and cross-merge: VMamba's four 2-D scan orders, shared by the models."""

from typing import Literal

import torch

from kernels.ops.cross_scan.ops import cross_merge_op, cross_scan_op
from kernels.ops.cross_scan.reference import cross_merge_ref, cross_scan_ref

__all__ = ["cross_merge", "cross_merge_ref", "cross_scan", "cross_scan_ref"]

CrossBackend = Literal["auto", "reference", "triton"]


def _backend(backend: CrossBackend, device: torch.device) -> str:
    """Resolve "auto": Triton on CUDA or inside `kernels.use_backend("triton")`, else reference."""
    from kernels.ops.selective_scan import auto_override

    if backend == "auto":
        wanted = auto_override.get()
        on_gpu = wanted == "auto" and device.type == "cuda"
        backend = "triton" if wanted == "triton" or on_gpu else "reference"
    if backend not in ("reference", "triton"):
        allowed = "auto, reference, triton"
        raise ValueError(f"unknown cross_scan backend {backend!r}; available: {allowed}")
    return backend


def cross_scan(x: torch.Tensor, backend: CrossBackend = "auto") -> torch.Tensor:
    """(batch, C, H, W) -> (batch, 4, C, H*W): row-major, column-major, and each reversed."""
    if x.dim() != 4:
        raise ValueError(f"cross_scan expects (batch, C, H, W), got shape {tuple(x.shape)}")
    return cross_scan_op(x, _backend(backend, x.device))


def cross_merge(y: torch.Tensor, backend: CrossBackend = "auto") -> torch.Tensor:
    """(batch, 4, C, H, W) -> (batch, C, H*W): undo each order of `cross_scan` and sum."""
    if y.dim() != 5 or y.shape[1] != 4:
        raise ValueError(f"cross_merge expects (batch, 4, C, H, W), got shape {tuple(y.shape)}")
    return cross_merge_op(y, _backend(backend, y.device))
