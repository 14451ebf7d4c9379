"""`torch.ops.kernels.cross_scan` / `cross_merge`: custom ops with fake impls, autograd, 0 FLOPs.

Each op's backward is the other op (they are adjoints), so gradients also run the chosen backend.
"""

import torch
from torch.utils.flop_counter import register_flop_formula

from kernels.ops.cross_scan.reference import cross_merge_ref, cross_scan_ref
from kernels.workspace import nbytes, register_workspace_formula

Tensor = torch.Tensor


@torch.library.custom_op("kernels::cross_scan", mutates_args=())
def cross_scan_op(x: Tensor, backend: str) -> Tensor:
    """(batch, C, H, W) -> (batch, 4, C, H*W); backend "reference" or "triton"."""
    if backend == "triton":
        from kernels.ops.cross_scan.triton_cross import cross_scan_triton

        return cross_scan_triton(x)
    return cross_scan_ref(x).contiguous()


@torch.library.custom_op("kernels::cross_merge", mutates_args=())
def cross_merge_op(y: Tensor, backend: str) -> Tensor:
    """(batch, 4, C, H, W) -> (batch, C, H*W); backend "reference" or "triton"."""
    if backend == "triton":
        from kernels.ops.cross_scan.triton_cross import cross_merge_triton

        return cross_merge_triton(y)
    return cross_merge_ref(y).contiguous()


@cross_scan_op.register_fake
def _(x, backend):
    batch, channels, height, width = x.shape
    return x.new_empty(batch, 4, channels, height * width)


@cross_merge_op.register_fake
def _(y, backend):
    batch, _, channels, height, width = y.shape
    return y.new_empty(batch, channels, height * width)


def _scan_setup(ctx, inputs, output):
    x, ctx.backend = inputs
    ctx.hw = x.shape[2:]


def _scan_backward(ctx, grad):
    batch, _, channels, _ = grad.shape
    merged = cross_merge_op(grad.reshape(batch, 4, channels, *ctx.hw), ctx.backend)
    return merged.reshape(batch, channels, *ctx.hw), None


def _merge_setup(ctx, inputs, output):
    y, ctx.backend = inputs
    ctx.hw = y.shape[3:]


def _merge_backward(ctx, grad):
    batch, channels, _ = grad.shape
    seq = cross_scan_op(grad.reshape(batch, channels, *ctx.hw), ctx.backend)
    return seq.reshape(batch, 4, channels, *ctx.hw), None


cross_scan_op.register_autograd(_scan_backward, setup_context=_scan_setup)
cross_merge_op.register_autograd(_merge_backward, setup_context=_merge_setup)


@register_flop_formula([torch.ops.kernels.cross_scan, torch.ops.kernels.cross_merge])
def _no_flops(*args, out_shape=None, **kwargs) -> int:
    """Data movement only: 0 FLOPs, as VMamba's counter."""
    return 0


@register_workspace_formula(torch.ops.kernels.cross_scan)
def _cross_scan_workspace(x, backend) -> int:
    """cross_scan_ref: the column-major copy and the two flipped copies, stacked into the output
    (a non-contiguous x also costs its row-major copy); the Triton kernel writes the output only."""
    if backend == "triton":
        return 0
    return nbytes(x) * (3 + int(not x.is_contiguous()))


@register_workspace_formula(torch.ops.kernels.cross_merge)
def _cross_merge_workspace(y, backend) -> int:
    """cross_merge_ref: at its peak the row sum, the column sum and a flipped copy (or the
    transposed column sum), each (batch, C, H*W), before the output exists."""
    return 0 if backend == "triton" else 3 * (nbytes(y) // 4)
