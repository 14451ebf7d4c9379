"""Triton selective scan, forward: kernel, launcher, and `fwd` for the custom op.

One program per (batch, group, block of BLOCK_D channels). It walks the sequence in chunks of
CHUNK steps; inside a chunk the recurrence h_l = a_l h_{l-1} + b_l is one `tl.associative_scan`
over (a, b) pairs on a (CHUNK, BLOCK_D, BLOCK_N) tile, and the chunk's last state is carried into
the next chunk in float32. The states at every chunk start (plus the final state) are written
out: the backward restarts each chunk from them instead of storing (batch, D, L, N) tensors.

`reverse=True` loads each chunk in scan order (t = L - 1 - s), so no flipped copies are made.
Softplus, delta_bias, the D skip and the SiLU(z) gate are fused; optional tensors are constexpr
flags, so their branches compile away.

On CPU tensors the kernels run under the Triton interpreter (TRITON_INTERPRET=1 must be set
before this module is imported).
"""

import os

import torch
import triton
import triton.language as tl

from kernels.selective_scan.ops import CHUNK


@triton.jit
def _combine(a_left, b_left, a_right, b_right):
    """(a, b) pairs compose as h -> a_right * (a_left * h + b_left) + b_right."""
    return a_left * a_right, b_left * a_right + b_right


@triton.jit
def _softplus(x):
    return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))


@triton.jit
def _selective_scan_fwd_kernel(
    u, delta, A, B, C, D, z, bias, y, states,
    L, DIM: tl.constexpr, N: tl.constexpr, DG: tl.constexpr, G: tl.constexpr,
    NCHUNK, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, REVERSE: tl.constexpr,
):  # fmt: skip
    i_d, i_g = tl.program_id(0), tl.program_id(1)
    i_b = tl.program_id(2).to(tl.int64)  # offsets reach batch*D*L: past 2**31 at batch 64
    o_dg = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_d = o_dg < DG
    o_d = i_g * DG + o_dg  # channel index
    o_n = tl.arange(0, BLOCK_N)
    m_n = o_n < N
    m_dn = m_d[:, None] & m_n[None, :]
    b_A = tl.load(A + o_d[:, None] * N + o_n[None, :], mask=m_dn, other=0.0).to(tl.float32)
    if HAS_D:
        b_Dskip = tl.load(D + o_d, mask=m_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        b_bias = tl.load(bias + o_d, mask=m_d, other=0.0).to(tl.float32)
    p_seq = i_b * DIM * L + o_d[None, :] * L  # (1, BLOCK_D) offsets of each channel's row
    p_bc = (i_b * G + i_g) * N * L + o_n[None, :] * L  # (1, BLOCK_N) offsets into B and C
    p_states = (i_b * DIM + o_d[:, None]) * (NCHUNK + 1) * N + o_n[None, :]
    b_h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    for c in range(NCHUNK):
        tl.store(states + p_states + c * N, b_h, mask=m_dn)
        o_s = c * BLOCK_L + tl.arange(0, BLOCK_L)  # scan-order step
        m_l = o_s < L
        o_t = (L - 1 - o_s) if REVERSE else o_s  # token index
        m_ld = m_l[:, None] & m_d[None, :]
        m_ln = m_l[:, None] & m_n[None, :]
        b_u = tl.load(u + p_seq + o_t[:, None], mask=m_ld, other=0.0).to(tl.float32)
        b_dt = tl.load(delta + p_seq + o_t[:, None], mask=m_ld, other=0.0).to(tl.float32)
        if HAS_BIAS:
            b_dt += b_bias[None, :]
        if SOFTPLUS:
            b_dt = _softplus(b_dt)
        b_dt = tl.where(m_ld, b_dt, 0.0)  # padded steps: decay 1, input 0 (identity)
        b_B = tl.load(B + p_bc + o_t[:, None], mask=m_ln, other=0.0).to(tl.float32)
        b_C = tl.load(C + p_bc + o_t[:, None], mask=m_ln, other=0.0).to(tl.float32)
        b_a = tl.exp(b_dt[:, :, None] * b_A[None, :, :])  # (BLOCK_L, BLOCK_D, BLOCK_N)
        b_x = (b_dt * b_u)[:, :, None] * b_B[:, None, :]
        b_acum, b_hs = tl.associative_scan((b_a, b_x), 0, _combine)
        b_hs += b_acum * b_h[None, :, :]
        b_y = tl.sum(b_hs * b_C[:, None, :], axis=2)  # (BLOCK_L, BLOCK_D)
        if HAS_D:
            b_y += b_Dskip[None, :] * b_u
        if HAS_Z:
            b_z = tl.load(z + p_seq + o_t[:, None], mask=m_ld, other=0.0).to(tl.float32)
            b_y *= b_z * tl.sigmoid(b_z)
        tl.store(y + p_seq + o_t[:, None], b_y.to(y.dtype.element_ty), mask=m_ld)
        last = (tl.arange(0, BLOCK_L) == BLOCK_L - 1)[:, None, None]
        b_h = tl.sum(tl.where(last, b_hs, 0.0), axis=0)  # padded tail steps are identities
    tl.store(states + p_states + NCHUNK * N, b_h, mask=m_dn)


def check_device(u: torch.Tensor) -> None:
    """Triton needs CUDA tensors, or CPU tensors with the interpreter on."""
    if u.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            f"backend='triton' needs CUDA tensors (got {u.device.type}) or TRITON_INTERPRET=1 "
            "set before kernels.selective_scan.triton_fwd is imported"
        )


def block_sizes(dim_group: int, n: int) -> tuple[int, int]:
    """(BLOCK_D, BLOCK_N): the (CHUNK, BLOCK_D, BLOCK_N) tile holds at most 4096 elements."""
    block_n = max(triton.next_power_of_2(n), 2)
    block_d = max(1, min(32, 4096 // (CHUNK * block_n), triton.next_power_of_2(dim_group)))
    return block_d, block_n


def prepare(u, delta, A, B, C, D, z, delta_bias):
    """Contiguous inputs; B and C as (batch, G, N, L). Dtypes are kept (cast inside the kernel)."""

    def c(t):
        return None if t is None else t.contiguous()

    if B.dim() == 3:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    return [c(t) for t in (u, delta, A, B, C, D, z, delta_bias)]


def fwd(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, reverse=False):
    """(y, last_state, states): y (batch, D, L) in u's dtype; states (batch, D, nchunk + 1, N)."""
    check_device(u)
    u_, delta_, A_, B_, C_, D_, z_, bias_ = prepare(u, delta, A, B, C, D, z, delta_bias)
    batch, dim, length = u.shape
    n, groups = A.shape[1], B_.shape[1]
    dim_group = dim // groups
    nchunk = triton.cdiv(length, CHUNK)
    y = torch.empty_like(u_)
    states = torch.zeros(batch, dim, nchunk + 1, n, device=u.device, dtype=torch.float32)
    block_d, block_n = block_sizes(dim_group, n)
    if y.numel():
        grid = (triton.cdiv(dim_group, block_d), groups, batch)
        _selective_scan_fwd_kernel[grid](
            u_, delta_, A_, B_, C_, D_, z_, bias_, y, states,
            length, dim, n, dim_group, groups, nchunk, CHUNK, block_d, block_n,
            D is not None, z is not None, delta_bias is not None, delta_softplus, reverse,
        )  # fmt: skip
    last = states[:, :, -1].clone()
    if u.dtype == torch.float64:
        last, states = last.double(), states.double()
    return y, last, states
