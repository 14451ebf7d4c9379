"""Triton selective scan, backward: kernel, launcher, and `bwd` for the custom op.

Same programs as the forward (batch, group, block of channels), walking the chunks last to first.
Per chunk: restart from the chunk-start state the forward saved and redo the forward scan (states
h_l), then run the adjoint recurrence g_l = gy_l C_l + a_{l+1} g_{l+1} as a reverse
`tl.associative_scan`, with the gradient flowing in from the later chunks carried in float32.
Nothing of size (batch, D, L, N) is stored. The gradients, with x_l = dt_l u_l B_l:

    dA  += sum_l g_l dt_l (h_l - x_l)            (h_l - x_l = a_l h_{l-1}, no division)
    ddt  = sum_n g_l (A (h_l - x_l) + B_l u_l)   du = sum_n g_l dt_l B_l + D gy
    dB_l = sum_d g_l dt_l u_l                    dC_l = sum_d gy_l h_l

dB, dC (shared by a group's channels), dA (shared by the batch), dD and ddelta_bias are summed
across programs with float32 atomics.
"""

import torch
import triton
import triton.language as tl

from kernels.selective_scan.ops import CHUNK
from kernels.selective_scan.triton_fwd import (
    _combine,
    _softplus,
    block_sizes,
    check_device,
    prepare,
)


@triton.jit
def _load_dt(delta, p, m, b_bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """(raw, dt): delta + bias and its softplus; zero where masked (identity steps)."""
    b_raw = tl.load(delta + p, mask=m, other=0.0).to(tl.float32)
    if HAS_BIAS:
        b_raw += b_bias[None, :]
    b_dt = _softplus(b_raw) if SOFTPLUS else b_raw
    return b_raw, tl.where(m, b_dt, 0.0)


@triton.jit
def _selective_scan_bwd_kernel(
    u, delta, A, B, C, D, z, bias, states, gout, glast,
    du, ddelta, dz, dA, dB, dC, dD, dbias,
    L, DIM: tl.constexpr, N: tl.constexpr, DG: tl.constexpr, G: tl.constexpr,
    NCHUNK, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_GLAST: tl.constexpr,
    SOFTPLUS: tl.constexpr, REVERSE: tl.constexpr,
):  # fmt: skip
    i_d, i_g = tl.program_id(0), tl.program_id(1)
    i_b = tl.program_id(2).to(tl.int64)  # offsets reach batch*D*L: past 2**31 at batch 64
    o_dg = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_d = o_dg < DG
    o_d = i_g * DG + o_dg
    o_n = tl.arange(0, BLOCK_N)
    m_n = o_n < N
    m_dn = m_d[:, None] & m_n[None, :]
    p_dn = o_d[:, None] * N + o_n[None, :]
    b_A = tl.load(A + p_dn, mask=m_dn, other=0.0).to(tl.float32)
    b_Dskip = tl.zeros((BLOCK_D,), dtype=tl.float32)
    b_bias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_D:
        b_Dskip = tl.load(D + o_d, mask=m_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        b_bias = tl.load(bias + o_d, mask=m_d, other=0.0).to(tl.float32)
    p_seq = i_b * DIM * L + o_d[None, :] * L
    p_bc = (i_b * G + i_g) * N * L + o_n[None, :] * L
    p_states = (i_b * DIM + o_d[:, None]) * (NCHUNK + 1) * N + o_n[None, :]
    b_g = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)  # dLoss/dh at the end of the chunk
    if HAS_GLAST:
        b_g = tl.load(glast + (i_b * DIM) * N + p_dn, mask=m_dn, other=0.0).to(tl.float32)
    b_dA = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    b_dD = tl.zeros((BLOCK_D,), dtype=tl.float32)
    b_dbias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for i in range(NCHUNK):
        c = NCHUNK - 1 - i
        o_l = tl.arange(0, BLOCK_L)
        o_s = c * BLOCK_L + o_l
        m_l = o_s < L
        o_t = (L - 1 - o_s) if REVERSE else o_s
        m_ld = m_l[:, None] & m_d[None, :]
        m_ln = m_l[:, None] & m_n[None, :]
        # the next step in scan order, inside this chunk (its decay feeds the adjoint)
        m_next = (o_l < BLOCK_L - 1)[:, None] & (o_s + 1 < L)[:, None] & m_d[None, :]
        o_tn = (o_t - 1) if REVERSE else (o_t + 1)
        b_u = tl.load(u + p_seq + o_t[:, None], mask=m_ld, other=0.0).to(tl.float32)
        b_raw, b_dt = _load_dt(delta, p_seq + o_t[:, None], m_ld, b_bias, HAS_BIAS, SOFTPLUS)
        _, b_dtn = _load_dt(delta, p_seq + o_tn[:, None], m_next, b_bias, HAS_BIAS, SOFTPLUS)
        b_B = tl.load(B + p_bc + o_t[:, None], mask=m_ln, other=0.0).to(tl.float32)
        b_C = tl.load(C + p_bc + o_t[:, None], mask=m_ln, other=0.0).to(tl.float32)
        b_go = tl.load(gout + p_seq + o_t[:, None], mask=m_ld, other=0.0).to(tl.float32)
        # forward again from the saved chunk-start state
        b_h0 = tl.load(states + p_states + c * N, mask=m_dn, other=0.0)
        b_a = tl.exp(b_dt[:, :, None] * b_A[None, :, :])
        b_x = (b_dt * b_u)[:, :, None] * b_B[:, None, :]
        b_acum, b_h = tl.associative_scan((b_a, b_x), 0, _combine)
        b_h += b_acum * b_h0[None, :, :]
        # gradient of the scan output (before the D skip and the gate)
        b_gy = b_go
        if HAS_Z:
            b_z = tl.load(z + p_seq + o_t[:, None], mask=m_ld, other=0.0).to(tl.float32)
            b_sig = tl.sigmoid(b_z)
            b_y = tl.sum(b_h * b_C[:, None, :], axis=2) + b_Dskip[None, :] * b_u
            b_dz = b_go * b_y * b_sig * (1.0 + b_z * (1.0 - b_sig))
            tl.store(dz + p_seq + o_t[:, None], b_dz, mask=m_ld)
            b_gy = b_go * b_z * b_sig
        # adjoint: g_l = gy_l C_l + a_{l+1} g_{l+1}, plus the carry from later chunks
        b_an = tl.exp(b_dtn[:, :, None] * b_A[None, :, :])
        b_gc = b_gy[:, :, None] * b_C[:, None, :]
        b_aprod, b_gl = tl.associative_scan((b_an, b_gc), 0, _combine, reverse=True)
        b_gl += b_aprod * b_g[None, :, :]
        b_hx = b_h - b_x  # a_l h_{l-1}
        b_gdt = b_gl * b_dt[:, :, None]
        b_du = tl.sum(b_gdt * b_B[:, None, :], axis=2)
        b_ddt = tl.sum(b_gl * (b_A[None, :, :] * b_hx + b_B[:, None, :] * b_u[:, :, None]), axis=2)
        b_dA += tl.sum(b_gdt * b_hx, axis=0)
        b_dBl = tl.sum(b_gdt * b_u[:, :, None], axis=1)  # (BLOCK_L, BLOCK_N)
        b_dCl = tl.sum(b_gy[:, :, None] * b_h, axis=1)
        tl.atomic_add(dB + p_bc + o_t[:, None], b_dBl, mask=m_ln)
        tl.atomic_add(dC + p_bc + o_t[:, None], b_dCl, mask=m_ln)
        if HAS_D:
            b_du += b_Dskip[None, :] * b_gy
            b_dD += tl.sum(b_gy * b_u, axis=0)
        if SOFTPLUS:
            b_ddt *= tl.sigmoid(b_raw)
        b_ddt = tl.where(m_ld, b_ddt, 0.0)
        b_dbias += tl.sum(b_ddt, axis=0)
        tl.store(du + p_seq + o_t[:, None], b_du, mask=m_ld)
        tl.store(ddelta + p_seq + o_t[:, None], b_ddt, mask=m_ld)
        # dLoss/dh before this chunk = a_0 g_0
        first = (o_l == 0)[:, None, None]
        b_g = tl.sum(tl.where(first, b_a * b_gl, 0.0), axis=0)
    tl.atomic_add(dA + p_dn, b_dA, mask=m_dn)
    if HAS_D:
        tl.atomic_add(dD + o_d, b_dD, mask=m_d)
    if HAS_BIAS:
        tl.atomic_add(dbias + o_d, b_dbias, mask=m_d)


def bwd(grad_y, grad_last, states, u, delta, A, B, C, D=None, z=None, delta_bias=None,
        delta_softplus=False, reverse=False):  # fmt: skip
    """Gradients (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias); absent inputs get None."""
    check_device(u)
    u_, delta_, A_, B_, C_, D_, z_, bias_ = prepare(u, delta, A, B, C, D, z, delta_bias)
    batch, dim, length = u.shape
    n, groups = A.shape[1], B_.shape[1]
    dim_group = dim // groups
    nchunk = triton.cdiv(length, CHUNK)

    def zeros(*shape):
        return torch.zeros(*shape, device=u.device, dtype=torch.float32)

    du, ddelta = zeros(batch, dim, length), zeros(batch, dim, length)
    dz = zeros(batch, dim, length) if z is not None else None
    dA, dD, dbias = zeros(dim, n), zeros(dim), zeros(dim)
    dB, dC = zeros(*B_.shape), zeros(*C_.shape)
    block_d, block_n = block_sizes(dim_group, n)
    glast = None if grad_last is None else grad_last.float().contiguous()
    if du.numel():
        grid = (triton.cdiv(dim_group, block_d), groups, batch)
        _selective_scan_bwd_kernel[grid](
            u_, delta_, A_, B_, C_, D_, z_, bias_, states.float().contiguous(),
            grad_y.contiguous(), glast, du, ddelta, dz, dA, dB, dC, dD, dbias,
            length, dim, n, dim_group, groups, nchunk, CHUNK, block_d, block_n,
            D is not None, z is not None, delta_bias is not None, glast is not None,
            delta_softplus, reverse,
        )  # fmt: skip
    if B.dim() == 3:
        dB, dC = dB.squeeze(1), dC.squeeze(1)
    return (
        du.to(u.dtype),
        ddelta.to(delta.dtype),
        dA.to(A.dtype),
        dB.to(B.dtype),
        dC.to(C.dtype),
        None if D is None else dD.to(D.dtype),
        None if z is None else dz.to(z.dtype),
        None if delta_bias is None else dbias.to(delta_bias.dtype),
    )
