"""Triton selective scan, backward: kernel, launcher, and `bwd` for the custom op.

Same programs as the forward (batch, segment, group, block of channels), walking the tiles last
to first. Per tile: restart from the chunk-start state the forward saved (running on through the
chunk's earlier tiles when BLOCK_L < CHUNK) and redo the forward scan, then run the adjoint
recurrence g_l = gy_l C_l + a_{l+1} g_{l+1} as a reverse `tl.associative_scan`, with the
gradient flowing in from the later tiles carried in float32.
Nothing of size (batch, D, L, N) is stored. The gradients, with x_l = dt_l u_l B_l:

    dA  += sum_l g_l dt_l a_l h_{l-1}
    ddt  = sum_n g_l (A a_l h_{l-1} + B_l u_l)   du = sum_n g_l dt_l B_l + D gy
    dB_l = sum_d g_l dt_l u_l                    dC_l = sum_d gy_l h_l

The redone forward scan runs over the pairs of the previous step, so it yields h_{l-1} itself and
a_l h_{l-1} is one product: never h_l - x_l, which cancels when x_l dominates (the CPU path keeps
the product too).

Reductions: dA, dD and ddelta_bias are written per (batch, segment) program and summed after
(no atomics). dB and dC are shared by a group's channel blocks: float32 atomics by default, or
with `deterministic=True` one partial per channel block, summed after in a fixed order (costs
ceil(DG / BLOCK_D) times the size of dB and dC in float32).

Small batches split the sequence as the forward does: a `SUMMARY` pass gives each segment's
adjoint at its start from a zero carry, the carries are passed from the last segment to the first,
then the full pass runs every segment in parallel.
"""

import torch
import triton
import triton.language as tl

from kernels.ops.selective_scan import triton_configs
from kernels.ops.selective_scan.ops import CHUNK
from kernels.ops.selective_scan.triton_fwd import (
    _bc_base,
    _combine,
    _dt,
    _program_ids,
    _seq_base,
    check_device,
    grouped,
    scan_args,
    scan_flags,
    segment_count,
    strides,
    vector,
)


@triton.jit
def _advance(b_h, p_u, p_dt, p_B, su_l, sdt_l, sB_l, b_A, b_bias, m_d, m_n, s0, L,
             BLOCK_L: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
             REVERSE: tl.constexpr):  # fmt: skip
    """The state after the BLOCK_L scan steps from s0, starting from b_h."""
    o_s = s0 + tl.arange(0, BLOCK_L)
    m_l = o_s < L
    o_t = (L - 1 - o_s) if REVERSE else o_s
    m_ld = m_l[:, None] & m_d[None, :]
    b_u = tl.load(p_u + o_t[:, None] * su_l, mask=m_ld, other=0.0).to(tl.float32)
    b_raw = tl.load(p_dt + o_t[:, None] * sdt_l, mask=m_ld, other=0.0).to(tl.float32)
    _, b_dt = _dt(b_raw, b_bias, m_ld, HAS_BIAS, SOFTPLUS)
    m_ln = m_l[:, None] & m_n[None, :]
    b_B = tl.load(p_B + o_t[:, None] * sB_l, mask=m_ln, other=0.0).to(tl.float32)
    b_a = tl.exp(b_dt[:, :, None] * b_A[None, :, :])
    b_x = (b_dt * b_u)[:, :, None] * b_B[:, None, :]
    b_acum, b_hs = tl.associative_scan((b_a, b_x), 0, _combine)
    last = (tl.arange(0, BLOCK_L) == BLOCK_L - 1)[:, None, None]
    return tl.sum(tl.where(last, b_hs + b_acum * b_h[None, :, :], 0.0), axis=0)


@triton.jit
def _selective_scan_bwd_kernel(
    u, delta, A, B, C, D, z, bias, states, gout, gstart,
    du, ddelta, dz, dA, dB, dC, dD, dbias, seg_g, seg_dtsum,
    su_b, su_d, su_l, sdt_b, sdt_d, sdt_l, sz_b, sz_d, sz_l, sA_d, sA_n,
    sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l, sg_b, sg_d, sg_l,
    L, N, DIM, DG, NCHUNK, NSEG, CPS, BATCH,
    CHUNK: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_GSTART: tl.constexpr,
    SOFTPLUS: tl.constexpr, REVERSE: tl.constexpr, SUMMARY: tl.constexpr,
    DETERMINISTIC: tl.constexpr,
):  # fmt: skip
    SUB: tl.constexpr = CHUNK // BLOCK_L  # tiles per saved chunk
    i_d, i_g, i_b, i_s = _program_ids(NSEG)
    G = DIM // DG
    o_dg = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_d = o_dg < DG
    o_d = i_g * DG + o_dg
    o_n = tl.arange(0, BLOCK_N)
    m_n = o_n < N
    m_dn = m_d[:, None] & m_n[None, :]
    b_A = tl.load(A + o_d[:, None] * sA_d + o_n[None, :] * sA_n, mask=m_dn, other=0.0)
    b_A = b_A.to(tl.float32)
    b_Dskip = tl.zeros((BLOCK_D,), dtype=tl.float32)
    b_bias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_D:
        b_Dskip = tl.load(D + o_d, mask=m_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        b_bias = tl.load(bias + o_d, mask=m_d, other=0.0).to(tl.float32)
    p_u = u + _seq_base(i_b, su_b, o_d, su_d)
    p_dt = delta + _seq_base(i_b, sdt_b, o_d, sdt_d)
    p_go = gout + _seq_base(i_b, sg_b, o_d, sg_d)
    o_out = _seq_base(i_b, DIM * L, o_d, L)  # du, ddelta, dz are ours: contiguous
    p_B = B + _bc_base(i_b, i_g, sB_b, sB_g, o_n, sB_n)
    p_C = C + _bc_base(i_b, i_g, sC_b, sC_g, o_n, sC_n)
    o_dbc = _bc_base(i_b, i_g, G * N * L, N * L, o_n, L)  # dB, dC: contiguous (batch, G, N, L)
    if DETERMINISTIC:  # this channel block's own partial
        o_dbc += i_d.to(tl.int64) * BATCH * G * N * L
    p_states = states + (i_b * DIM + o_d[:, None]) * (NCHUNK + 1) * N + o_n[None, :]
    o_prog = (i_b * NSEG + i_s) * DIM + o_d  # this (batch, segment) program's row of partials
    b_g = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)  # dLoss/dh at the end of the chunk
    if HAS_GSTART:
        b_g = tl.load(gstart + o_prog[:, None] * N + o_n[None, :], mask=m_dn, other=0.0)
    b_dA = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    b_dD = tl.zeros((BLOCK_D,), dtype=tl.float32)
    b_dbias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    b_dtsum = tl.zeros((BLOCK_D,), dtype=tl.float32)
    c0 = i_s * CPS
    c1 = tl.minimum(c0 + CPS, NCHUNK)
    for i in range((c1 - c0) * SUB):  # tiles of BLOCK_L steps, last to first
        c = c1 * SUB - 1 - i
        o_l = tl.arange(0, BLOCK_L)
        o_s = c * BLOCK_L + o_l
        m_l = o_s < L
        o_t = (L - 1 - o_s) if REVERSE else o_s
        m_ld = m_l[:, None] & m_d[None, :]
        m_ln = m_l[:, None] & m_n[None, :]
        # the next step in scan order, inside this chunk (its decay feeds the adjoint)
        m_next = (o_l < BLOCK_L - 1)[:, None] & (o_s + 1 < L)[:, None] & m_d[None, :]
        o_tn = (o_t - 1) if REVERSE else (o_t + 1)
        b_raw = tl.load(p_dt + o_t[:, None] * sdt_l, mask=m_ld, other=0.0).to(tl.float32)
        b_raw, b_dt = _dt(b_raw, b_bias, m_ld, HAS_BIAS, SOFTPLUS)
        b_rawn = tl.load(p_dt + o_tn[:, None] * sdt_l, mask=m_next, other=0.0).to(tl.float32)
        _, b_dtn = _dt(b_rawn, b_bias, m_next, HAS_BIAS, SOFTPLUS)
        b_C = tl.load(p_C + o_t[:, None] * sC_l, mask=m_ln, other=0.0).to(tl.float32)
        b_go = tl.load(p_go + o_t[:, None] * sg_l, mask=m_ld, other=0.0).to(tl.float32)
        b_gy = b_go  # gradient of the scan output (before the D skip and the gate)
        if HAS_Z:
            b_z = tl.load(
                z + _seq_base(i_b, sz_b, o_d, sz_d) + o_t[:, None] * sz_l, mask=m_ld, other=0.0
            ).to(tl.float32)
            b_sig = tl.sigmoid(b_z)
            b_gy = b_go * b_z * b_sig
        # adjoint: g_l = gy_l C_l + a_{l+1} g_{l+1}, plus the carry from later chunks
        b_a = tl.exp(b_dt[:, :, None] * b_A[None, :, :])
        b_an = tl.exp(b_dtn[:, :, None] * b_A[None, :, :])
        b_gc = b_gy[:, :, None] * b_C[:, None, :]
        b_aprod, b_gl = tl.associative_scan((b_an, b_gc), 0, _combine, reverse=True)
        b_gl += b_aprod * b_g[None, :, :]
        if SUMMARY:
            b_dtsum += tl.sum(b_dt, axis=0)
        else:
            # forward again from the saved chunk-start state, over the previous step's pairs:
            # the scan gives h_{l-1} (row 0: the chunk-start state)
            m_prev = (o_l > 0)[:, None] & m_ld
            o_tp = (o_t + 1) if REVERSE else (o_t - 1)
            b_u = tl.load(p_u + o_t[:, None] * su_l, mask=m_ld, other=0.0).to(tl.float32)
            b_B = tl.load(p_B + o_t[:, None] * sB_l, mask=m_ln, other=0.0).to(tl.float32)
            b_up = tl.load(p_u + o_tp[:, None] * su_l, mask=m_prev, other=0.0).to(tl.float32)
            b_rawp = tl.load(p_dt + o_tp[:, None] * sdt_l, mask=m_prev, other=0.0)
            _, b_dtp = _dt(b_rawp.to(tl.float32), b_bias, m_prev, HAS_BIAS, SOFTPLUS)
            m_prevn = (o_l > 0)[:, None] & m_ln
            b_Bp = tl.load(p_B + o_tp[:, None] * sB_l, mask=m_prevn, other=0.0).to(tl.float32)
            b_h0 = tl.load(p_states + (c // SUB) * N, mask=m_dn, other=0.0)
            for k in range(c % SUB):  # a tile inside a chunk: run on from the chunk start
                b_h0 = _advance(b_h0, p_u, p_dt, p_B, su_l, sdt_l, sB_l, b_A, b_bias, m_d, m_n,
                                (c - c % SUB + k) * BLOCK_L, L, BLOCK_L, HAS_BIAS, SOFTPLUS,
                                REVERSE)  # fmt: skip
            b_ap = tl.exp(b_dtp[:, :, None] * b_A[None, :, :])
            b_xp = (b_dtp * b_up)[:, :, None] * b_Bp[:, None, :]
            b_acum, b_hp = tl.associative_scan((b_ap, b_xp), 0, _combine)
            b_ah = b_a * (b_hp + b_acum * b_h0[None, :, :])  # a_l h_{l-1}
            b_h = b_ah + (b_dt * b_u)[:, :, None] * b_B[:, None, :]
            if HAS_Z:
                b_y = tl.sum(b_h * b_C[:, None, :], axis=2) + b_Dskip[None, :] * b_u
                b_dz = b_go * b_y * b_sig * (1.0 + b_z * (1.0 - b_sig))
                tl.store(dz + o_out + o_t[:, None], b_dz.to(dz.dtype.element_ty), mask=m_ld)
            b_gdt = b_gl * b_dt[:, :, None]
            b_du = tl.sum(b_gdt * b_B[:, None, :], axis=2)
            b_ddt = tl.sum(b_gl * (b_A[None, :, :] * b_ah + b_B[:, None, :] * b_u[:, :, None]), 2)
            b_dA += tl.sum(b_gdt * b_ah, axis=0)
            b_dBl = tl.sum(b_gdt * b_u[:, :, None], axis=1)  # (BLOCK_L, BLOCK_N)
            b_dCl = tl.sum(b_gy[:, :, None] * b_h, axis=1)
            p_dBl = dB + o_dbc + o_t[:, None]
            p_dCl = dC + o_dbc + o_t[:, None]
            if DETERMINISTIC:
                tl.store(p_dBl, b_dBl, mask=m_ln)
                tl.store(p_dCl, b_dCl, mask=m_ln)
            else:
                tl.atomic_add(p_dBl, b_dBl, mask=m_ln)
                tl.atomic_add(p_dCl, b_dCl, mask=m_ln)
            if HAS_D:
                b_du += b_Dskip[None, :] * b_gy
                b_dD += tl.sum(b_gy * b_u, axis=0)
            if SOFTPLUS:
                b_ddt *= tl.sigmoid(b_raw)
            b_ddt = tl.where(m_ld, b_ddt, 0.0)
            b_dbias += tl.sum(b_ddt, axis=0)
            tl.store(du + o_out + o_t[:, None], b_du.to(du.dtype.element_ty), mask=m_ld)
            tl.store(ddelta + o_out + o_t[:, None], b_ddt.to(ddelta.dtype.element_ty), mask=m_ld)
        # dLoss/dh before this chunk = a_0 g_0
        first = (o_l == 0)[:, None, None]
        b_g = tl.sum(tl.where(first, b_a * b_gl, 0.0), axis=0)
    if SUMMARY:
        tl.store(seg_g + o_prog[:, None] * N + o_n[None, :], b_g, mask=m_dn)
        tl.store(seg_dtsum + o_prog, b_dtsum, mask=m_d)
    else:
        tl.store(dA + o_prog[:, None] * N + o_n[None, :], b_dA, mask=m_dn)
        if HAS_D:
            tl.store(dD + o_prog, b_dD, mask=m_d)
        if HAS_BIAS:
            tl.store(dbias + o_prog, b_dbias, mask=m_d)


def pass_gradients(seg_g, seg_dtsum, A, grad_last) -> torch.Tensor:
    """Each segment's incoming dLoss/dh (at its end), last segment to first: (batch, nseg, D, N).

    Going back through segment s maps g to exp(A · sum dt) g + seg_g[s] (its carry from zero).
    """
    nseg = seg_g.shape[1]
    decay = torch.exp(A.float()[None, None] * seg_dtsum[..., None])
    gstart = torch.empty_like(seg_g)
    g = torch.zeros_like(seg_g[:, 0]) if grad_last is None else grad_last.float()
    gstart[:, nseg - 1] = g
    for s in range(nseg - 1, 0, -1):
        g = decay[:, s] * g + seg_g[:, s]
        gstart[:, s - 1] = g
    return gstart


def bwd(grad_y, grad_last, states, u, delta, A, B, C, D=None, z=None, delta_bias=None,
        delta_softplus=False, reverse=False, deterministic: bool = False,
        segments: int | None = None):  # fmt: skip
    """Gradients (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias); absent inputs get None.

    `deterministic` sums dB and dC without atomics (bit-identical runs); `segments` forces the
    sequence split (tests), None chooses it as the forward does.
    """
    check_device(u)
    B_, C_ = grouped(B), grouped(C)
    D_, bias_ = vector(D), vector(delta_bias)
    batch, dim, length = u.shape
    n, groups = A.shape[1], B_.shape[1]
    dim_group = dim // groups
    nchunk = triton.cdiv(length, CHUNK)
    dev = u.device

    def zeros(*shape):
        return torch.zeros(*shape, device=dev, dtype=torch.float32)

    def seq_like(t):
        return torch.empty(batch, dim, length, device=dev, dtype=t.dtype)

    du, ddelta = seq_like(u), seq_like(delta)
    dz = seq_like(z) if z is not None else None
    dA, dB, dC = zeros(dim, n), zeros(*B_.shape), zeros(*C_.shape)
    dD, dbias = zeros(dim), zeros(dim)
    if du.numel():
        det = "_deterministic" if deterministic else ""
        meta = triton_configs.launch_meta("bwd" + det, dim_group, n, u.dtype, deterministic)
        block_d = triton_configs.split_block_d("bwd", n, u.dtype, meta)
        nblocks = triton.cdiv(dim_group, block_d)
        target = triton_configs.programs_to_fill(dev)
        nseg = segments or segment_count(nblocks * groups * batch, nchunk, target)
        cps = triton.cdiv(nchunk, nseg)
        nseg = triton.cdiv(nchunk, cps)
        if nseg > 1:  # the split passes run the untimed default config
            meta = triton_configs.launch_meta("bwd_split" + det, dim_group, n, u.dtype, fixed=True)
            nblocks = triton.cdiv(dim_group, meta["BLOCK_D"])
        flags = scan_flags(n, D, z, delta_bias, delta_softplus, reverse)
        sizes = (length, n, dim, dim_group, nchunk, nseg, cps, batch)
        ins = (u, delta, A, B_, C_, D_, z, bias_)
        ins_strides = (*scan_args(u, delta, A, B_, C_, D_, z, bias_), *strides(grad_y, 3))
        dA_p, dD_p, dbias_p = zeros(batch * nseg, dim, n), zeros(batch * nseg, dim), zeros(0)
        if delta_bias is not None:
            dbias_p = zeros(batch * nseg, dim)
        if deterministic:
            dB_p, dC_p = zeros(nblocks, *B_.shape), zeros(nblocks, *C_.shape)
        else:
            dB_p, dC_p = dB, dC
        states = states.float().contiguous()  # ours: already float32 and contiguous on GPU

        def grid(m):
            return (triton.cdiv(dim_group, m["BLOCK_D"]), groups, batch * nseg)

        kernel = triton_configs.kernel(_selective_scan_bwd_kernel, "bwd", meta)
        gstart = None if grad_last is None else grad_last.float().contiguous()
        if nseg > 1:
            seg_g, seg_dtsum = zeros(batch, nseg, dim, n), zeros(batch, nseg, dim)
            kernel[grid](
                *ins, states, grad_y, None, du, ddelta, dz, dA_p, dB_p, dC_p, dD_p, dbias_p,
                seg_g, seg_dtsum, *ins_strides, *sizes, **flags,
                HAS_GSTART=False, SUMMARY=True, DETERMINISTIC=deterministic, **meta,
            )  # fmt: skip
            gstart = pass_gradients(seg_g, seg_dtsum, A, grad_last)
        kernel[grid](
            *ins, states, grad_y, gstart, du, ddelta, dz, dA_p, dB_p, dC_p, dD_p, dbias_p,
            None, None, *ins_strides, *sizes, **flags,
            HAS_GSTART=gstart is not None, SUMMARY=False, DETERMINISTIC=deterministic, **meta,
        )  # fmt: skip
        dA, dD, dbias = dA_p.sum(0), dD_p.sum(0), dbias_p.sum(0)
        if deterministic:
            dB, dC = dB_p.sum(0), dC_p.sum(0)
    if B.dim() == 3:
        dB, dC = dB.squeeze(1), dC.squeeze(1)
    return (
        du,
        ddelta,
        dA.to(A.dtype),
        dB.to(B.dtype),
        dC.to(C.dtype),
        None if D is None else dD.to(D.dtype),
        dz,
        None if delta_bias is None else dbias.to(delta_bias.dtype),
    )
