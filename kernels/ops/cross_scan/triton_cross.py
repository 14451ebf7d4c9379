"""Triton cross-scan and cross-merge: one read of each input element, no intermediate copies.

Both kernels take any input strides, so channel-first (contiguous) and channel-last
(`torch.channels_last`) inputs are read in place. Position p = h * W + w (row-major) has
column-major index q = w * H + h; the reversed orders use L - 1 - p and L - 1 - q.
Each kernel is the other's adjoint, which is how the custom ops' backward uses them.
"""

import torch
import triton
import triton.language as tl

from kernels.ops.selective_scan.triton_fwd import check_device


@triton.jit
def _cross_scan_kernel(
    x, out, sxb, sxc, sxh, sxw, C, H, W,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    i_p, i_c = tl.program_id(0), tl.program_id(1)
    i_b = tl.program_id(2).to(tl.int64)  # offsets reach batch*4*C*H*W: past 2**31
    L = H * W
    o_p = i_p * BLOCK_P + tl.arange(0, BLOCK_P)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m = (o_c[:, None] < C) & (o_p[None, :] < L)
    o_h, o_w = o_p // W, o_p % W
    o_q = o_w * H + o_h
    b_x = tl.load(x + i_b * sxb + o_c[:, None] * sxc + (o_h * sxh + o_w * sxw)[None, :], mask=m)
    p_out = out + (i_b * 4 * C + o_c[:, None]) * L
    tl.store(p_out + o_p[None, :], b_x, mask=m)
    tl.store(p_out + C * L + o_q[None, :], b_x, mask=m)
    tl.store(p_out + 2 * C * L + (L - 1 - o_p)[None, :], b_x, mask=m)
    tl.store(p_out + 3 * C * L + (L - 1 - o_q)[None, :], b_x, mask=m)


@triton.jit
def _at(p_y, k, j, syk, syh, syw, W):
    """Pointers to sequence index j of order k, which y lays out as (H, W)."""
    return p_y + k * syk + ((j // W) * syh + (j % W) * syw)[None, :]


@triton.jit
def _cross_merge_kernel(
    y, out, syb, syk, syc, syh, syw, C, H, W,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    i_p, i_c = tl.program_id(0), tl.program_id(1)
    i_b = tl.program_id(2).to(tl.int64)  # offsets reach batch*4*C*H*W: past 2**31
    L = H * W
    o_p = i_p * BLOCK_P + tl.arange(0, BLOCK_P)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m = (o_c[:, None] < C) & (o_p[None, :] < L)
    o_q = (o_p % W) * H + o_p // W
    p_y = y + i_b * syb + o_c[:, None] * syc
    b_o = tl.load(_at(p_y, 0, o_p, syk, syh, syw, W), mask=m, other=0.0).to(ACC)
    b_o += tl.load(_at(p_y, 1, o_q, syk, syh, syw, W), mask=m, other=0.0).to(ACC)
    b_o += tl.load(_at(p_y, 2, L - 1 - o_p, syk, syh, syw, W), mask=m, other=0.0).to(ACC)
    b_o += tl.load(_at(p_y, 3, L - 1 - o_q, syk, syh, syw, W), mask=m, other=0.0).to(ACC)
    p_out = out + (i_b * C + o_c[:, None]) * L + o_p[None, :]
    tl.store(p_out, b_o.to(out.dtype.element_ty), mask=m)


def _blocks(channels: int, length: int) -> tuple[int, int]:
    block_p = min(256, triton.next_power_of_2(max(length, 2)))
    block_c = min(16, triton.next_power_of_2(max(channels, 2)))
    return block_c, block_p


def cross_scan_triton(x: torch.Tensor) -> torch.Tensor:
    """(batch, C, H, W), any strides -> (batch, 4, C, H*W) contiguous."""
    check_device(x)
    batch, channels, height, width = x.shape
    length = height * width
    out = torch.empty(batch, 4, channels, length, device=x.device, dtype=x.dtype)
    block_c, block_p = _blocks(channels, length)
    if out.numel():
        grid = (triton.cdiv(length, block_p), triton.cdiv(channels, block_c), batch)
        _cross_scan_kernel[grid](x, out, *x.stride(), channels, height, width, block_c, block_p)
    return out


def cross_merge_triton(y: torch.Tensor) -> torch.Tensor:
    """(batch, 4, C, H, W), any strides -> (batch, C, H*W) contiguous."""
    check_device(y)
    batch, _, channels, height, width = y.shape
    length = height * width
    out = torch.empty(batch, channels, length, device=y.device, dtype=y.dtype)
    block_c, block_p = _blocks(channels, length)
    if out.numel():
        grid = (triton.cdiv(length, block_p), triton.cdiv(channels, block_c), batch)
        acc = tl.float64 if y.dtype == torch.float64 else tl.float32  # sum of 4 in >= float32
        _cross_merge_kernel[grid](
            y, out, *y.stride(), channels, height, width, block_c, block_p, acc
        )
    return out
