"""Triton selective scan, forward: kernel, launcher, and `fwd` for the custom op.

One program per (batch, segment, group, block of BLOCK_D channels). It walks its segment in tiles
of BLOCK_L steps (CHUNK = 64, or 32 / 16 when a 64-step tile would not fit in registers); inside
a tile the recurrence h_l = a_l h_{l-1} + b_l is one `tl.associative_scan` over (a, b) pairs on a
(BLOCK_L, BLOCK_D, BLOCK_N) tile, and the tile's last state is carried into the next in float32.
The states at every CHUNK-step chunk start (plus the final state) are written out: the backward
restarts each chunk from them instead of storing (batch, D, L, N) tensors.

Segments: with enough programs there is one segment (the whole sequence, one pass, each input
read once). When batch·G·ceil(DG / BLOCK_D) programs cannot fill the GPU (VMamba stage 0 at
batch 1), the sequence is split into segments, as Mamba-2's SSD kernels split it into chunks:
1. `SUMMARY` pass, segments in parallel: each segment's end state from a zero start, and its
   summed dt (the segment's decay is exp(A · sum dt), exact since a_l = exp(dt_l A));
2. state passing, segments in order (a few (batch, D, N) multiply-adds on the host side);
3. the full pass, segments in parallel, each from its true start state.

Inputs are read through their strides (no contiguous copies); per-program base offsets are
int64, so batch·D·L past 2**31 elements is safe. `reverse=True` loads each chunk in scan order
(t = L - 1 - s), so no flipped copies are made. Softplus, delta_bias, the D skip and the SiLU(z)
gate are fused; optional tensors are constexpr flags, so their branches compile away.

On CPU tensors the kernels run under the Triton interpreter (TRITON_INTERPRET=1 must be set
before this module is imported).
"""

import os

import torch
import triton
import triton.language as tl

from kernels.ops.selective_scan import triton_configs
from kernels.ops.selective_scan.ops import CHUNK

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _combine(a_left, b_left, a_right, b_right):
    """(a, b) pairs compose as h -> a_right * (a_left * h + b_left) + b_right."""
    return a_left * a_right, b_left * a_right + b_right


@triton.jit
def _softplus(x):
    return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))


@triton.jit
def _program_ids(NSEG):
    """(i_d, i_g, i_b, i_s): channel block, group, batch (int64) and segment of this program."""
    i_d, i_g = tl.program_id(0), tl.program_id(1)
    i_bs = tl.program_id(2).to(tl.int64)  # int64: every offset built on i_b is 64-bit
    return i_d, i_g, i_bs // NSEG, (i_bs % NSEG).to(tl.int32)


@triton.jit
def _seq_base(i_b, sb, o_d, sd):
    """(1, BLOCK_D) int64 offsets of each channel's row in a (batch, D, L) tensor."""
    return i_b * sb + o_d[None, :].to(tl.int64) * sd


@triton.jit
def _bc_base(i_b, i_g, sb, sg, o_n, sn):
    """(1, BLOCK_N) int64 offsets of each state's row in a (batch, G, N, L) tensor."""
    return i_b * sb + i_g.to(tl.int64) * sg + o_n[None, :].to(tl.int64) * sn


@triton.jit
def _dt(b_raw, b_bias, m, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """(raw, dt): delta + bias and its softplus; dt is zero where masked (identity steps)."""
    if HAS_BIAS:
        b_raw += b_bias[None, :]
    b_dt = _softplus(b_raw) if SOFTPLUS else b_raw
    return b_raw, tl.where(m, b_dt, 0.0)


@triton.jit
def _selective_scan_fwd_kernel(
    u, delta, A, B, C, D, z, bias, y, states, seg_end, seg_dtsum,
    su_b, su_d, su_l, sdt_b, sdt_d, sdt_l, sz_b, sz_d, sz_l, sA_d, sA_n,
    sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
    L, N, DIM, DG, NCHUNK, NSEG, CPS,
    CHUNK: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, REVERSE: tl.constexpr, SUMMARY: tl.constexpr,
):  # fmt: skip
    SUB: tl.constexpr = CHUNK // BLOCK_L  # tiles per saved chunk
    i_d, i_g, i_b, i_s = _program_ids(NSEG)
    o_dg = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_d = o_dg < DG
    o_d = i_g * DG + o_dg  # channel index
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
    p_y = y + _seq_base(i_b, DIM * L, o_d, L)  # y is ours: contiguous
    p_B = B + _bc_base(i_b, i_g, sB_b, sB_g, o_n, sB_n)
    p_C = C + _bc_base(i_b, i_g, sC_b, sC_g, o_n, sC_n)
    p_states = states + (i_b * DIM + o_d[:, None]) * (NCHUNK + 1) * N + o_n[None, :]
    c0 = i_s * CPS
    c1 = tl.minimum(c0 + CPS, NCHUNK)
    b_h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    if not SUMMARY:  # the segment's start state (zero for the first; passed in for the others)
        b_h = tl.load(p_states + c0 * N, mask=m_dn, other=0.0)
    b_dtsum = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for c in range(c0 * SUB, c1 * SUB):  # tiles of BLOCK_L steps
        if not SUMMARY:  # the state at each CHUNK-step chunk start
            tl.store(p_states + (c // SUB) * N, b_h, mask=m_dn & (c % SUB == 0))
        o_s = c * BLOCK_L + tl.arange(0, BLOCK_L)  # scan-order step
        m_l = o_s < L
        o_t = (L - 1 - o_s) if REVERSE else o_s  # token index
        m_ld = m_l[:, None] & m_d[None, :]
        m_ln = m_l[:, None] & m_n[None, :]
        b_u = tl.load(p_u + o_t[:, None] * su_l, mask=m_ld, other=0.0).to(tl.float32)
        b_raw = tl.load(p_dt + o_t[:, None] * sdt_l, mask=m_ld, other=0.0).to(tl.float32)
        _, b_dt = _dt(b_raw, b_bias, m_ld, HAS_BIAS, SOFTPLUS)
        b_B = tl.load(p_B + o_t[:, None] * sB_l, mask=m_ln, other=0.0).to(tl.float32)
        b_a = tl.exp(b_dt[:, :, None] * b_A[None, :, :])  # (BLOCK_L, BLOCK_D, BLOCK_N)
        b_x = (b_dt * b_u)[:, :, None] * b_B[:, None, :]
        b_acum, b_hs = tl.associative_scan((b_a, b_x), 0, _combine)
        b_hs += b_acum * b_h[None, :, :]
        if SUMMARY:
            b_dtsum += tl.sum(b_dt, axis=0)
        else:
            b_C = tl.load(p_C + o_t[:, None] * sC_l, mask=m_ln, other=0.0).to(tl.float32)
            b_y = tl.sum(b_hs * b_C[:, None, :], axis=2)  # (BLOCK_L, BLOCK_D)
            if HAS_D:
                b_y += b_Dskip[None, :] * b_u
            if HAS_Z:
                b_z = tl.load(
                    z + _seq_base(i_b, sz_b, o_d, sz_d) + o_t[:, None] * sz_l, mask=m_ld, other=0.0
                ).to(tl.float32)
                b_y *= b_z * tl.sigmoid(b_z)
            tl.store(p_y + o_t[:, None], b_y.to(y.dtype.element_ty), mask=m_ld)
        last = (tl.arange(0, BLOCK_L) == BLOCK_L - 1)[:, None, None]
        b_h = tl.sum(tl.where(last, b_hs, 0.0), axis=0)  # padded tail steps are identities
    if SUMMARY:
        p_seg = (i_b * NSEG + i_s) * DIM + o_d
        tl.store(seg_end + p_seg[:, None] * N + o_n[None, :], b_h, mask=m_dn)
        tl.store(seg_dtsum + p_seg, b_dtsum, mask=m_d)
    else:  # the final state; a middle segment's end is the next one's start, already written
        tl.store(p_states + c1 * N, b_h, mask=m_dn & (i_s == NSEG - 1))


def check_device(u: torch.Tensor) -> None:
    """Triton needs CUDA tensors, or CPU tensors with the interpreter on.

    Meta tensors pass: kernels.compile_check runs the launchers on them with recorded kernels."""
    if u.device.type not in ("cuda", "meta") and not INTERPRET:
        raise ValueError(
            f"backend='triton' needs CUDA tensors (got {u.device.type}) or TRITON_INTERPRET=1 "
            "set before kernels.ops.selective_scan.triton_fwd is imported"
        )


def grouped(B: torch.Tensor) -> torch.Tensor:
    """B or C as (batch, G, N, L): a view, never a copy."""
    return B.unsqueeze(1) if B.dim() == 3 else B


def strides(t: torch.Tensor | None, ndim: int) -> tuple[int, ...]:
    """t's strides, or zeros for an absent tensor (its branch is compiled away)."""
    return (0,) * ndim if t is None else tuple(t.stride())


def vector(t: torch.Tensor | None) -> torch.Tensor | None:
    """A (D,) parameter with unit stride (D elements: the only copy the launchers may make)."""
    return None if t is None else t.contiguous()


def segment_count(programs: int, nchunk: int, target: int) -> int:
    """Segments to split the sequence into so that about `target` programs run: 1 when full."""
    if programs >= target or nchunk < 2:
        return 1
    return min(nchunk, triton.cdiv(target, programs))


def scan_flags(n, D, z, delta_bias, delta_softplus, reverse) -> dict:
    """The constexpr arguments both kernels share (block shape and what is present)."""
    return dict(
        CHUNK=CHUNK, BLOCK_N=triton_configs.block_n(n), HAS_D=D is not None,
        HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
        REVERSE=reverse,
    )  # fmt: skip


def scan_args(u, delta, A, B, C, D, z, delta_bias):
    """Strides of every input, in kernel order (u, delta, z, A, B, C)."""
    return (
        *strides(u, 3), *strides(delta, 3), *strides(z, 3), *strides(A, 2),
        *strides(B, 4), *strides(C, 4),
    )  # fmt: skip


def fwd(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, reverse=False,
        segments: int | None = None):  # fmt: skip
    """(y, last_state, states): y (batch, D, L) in u's dtype; states (batch, D, nchunk + 1, N).

    `segments` forces the number of sequence segments (tests); None chooses it (module doc).
    """
    check_device(u)
    B, C = grouped(B), grouped(C)
    D, delta_bias = vector(D), vector(delta_bias)
    batch, dim, length = u.shape
    n, groups = A.shape[1], B.shape[1]
    dim_group = dim // groups
    nchunk = triton.cdiv(length, CHUNK)
    y = torch.empty(batch, dim, length, device=u.device, dtype=u.dtype)
    states = torch.zeros(batch, dim, nchunk + 1, n, device=u.device, dtype=torch.float32)
    if y.numel():
        meta = triton_configs.launch_meta("fwd", dim_group, n, u.dtype)
        block_d = triton_configs.split_block_d("fwd", n, u.dtype, meta)
        programs = triton.cdiv(dim_group, block_d) * groups * batch
        target = triton_configs.programs_to_fill(u.device)
        nseg = segments or segment_count(programs, nchunk, target)
        cps = triton.cdiv(nchunk, nseg)
        nseg = triton.cdiv(nchunk, cps)
        if nseg > 1:  # the split passes run the untimed default config
            meta = triton_configs.launch_meta("fwd_split", dim_group, n, u.dtype, fixed=True)
        flags = scan_flags(n, D, z, delta_bias, delta_softplus, reverse)
        sizes = (length, n, dim, dim_group, nchunk, nseg, cps)
        ins = (u, delta, A, B, C, D, z, delta_bias)
        ins_strides = scan_args(u, delta, A, B, C, D, z, delta_bias)

        def grid(m):
            return (triton.cdiv(dim_group, m["BLOCK_D"]), groups, batch * nseg)

        kernel = triton_configs.kernel(_selective_scan_fwd_kernel, "fwd", meta)
        if nseg > 1:
            seg_end = torch.empty(batch, nseg, dim, n, device=u.device, dtype=torch.float32)
            seg_dtsum = torch.empty(batch, nseg, dim, device=u.device, dtype=torch.float32)
            kernel[grid](*ins, y, states, seg_end, seg_dtsum, *ins_strides, *sizes,
                         **flags, SUMMARY=True, **meta)  # fmt: skip
            pass_states(states, seg_end, seg_dtsum, A, cps)
        kernel[grid](*ins, y, states, None, None, *ins_strides, *sizes,
                     **flags, SUMMARY=False, **meta)  # fmt: skip
    last = states[:, :, -1].clone()
    if u.dtype == torch.float64:
        last, states = last.double(), states.double()
    return y, last, states


def pass_states(states, seg_end, seg_dtsum, A, cps: int) -> None:
    """Write each segment's true start state into `states`, segments in order.

    A segment maps its start state h to exp(A · sum dt) h + seg_end (its end state from zero).
    """
    nseg = seg_end.shape[1]
    decay = torch.exp(A.float()[None, None] * seg_dtsum[..., None])  # (batch, nseg, D, N)
    h = torch.zeros_like(seg_end[:, 0])
    for s in range(nseg - 1):
        h = decay[:, s] * h + seg_end[:, s]
        states[:, :, (s + 1) * cps] = h
