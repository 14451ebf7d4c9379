"""Materialising selective scan: mamba_ssm's `selective_scan_ref` memory behaviour, on purpose.

mamba_ssm (state-spaces/mamba, `mamba_ssm/ops/selective_scan_interface.py`, `selective_scan_ref`)
computes

    deltaA   = exp(einsum('bdl,dn->bdln', delta, A))            (batch, D, L, N)
    deltaB_u = einsum('bdl,bnl,bdl->bdln', delta, B, u)         (batch, D, L, N)

and then loops over L reading them: x = deltaA[:, :, i] * x + deltaB_u[:, :, i]. Both
(batch, D, L, N) tensors live in memory ("HBM") at once, which is what the hardware-aware kernels
avoid (they keep the state in registers / SRAM). This backend reproduces that peak so the study
can measure the claim: the two tensors are one buffer, `saved` (batch, D, 2L, N) in float32 (first
L steps exp(delta A), last L steps delta B u), returned as the op's third output, so the dispatcher
tracker and the fake implementation see exactly what the real forward holds at its peak.

Not reproduced: with grouped B, C (batch, G, N, L) mamba_ssm's reference also repeats B and C per
channel, two more (batch, D, N, L) tensors; here they broadcast per group (only the two tensors of
the claim are materialised). The backward (written out, `bwd`) keeps every step's state and
adjoint as two more (batch, D, L, N) tensors, as autograd through mamba_ssm's reference would.
"""

import torch
import torch.nn.functional as F

from kernels.ops.selective_scan.reference import as_groups

Tensor = torch.Tensor


def _acc(u: Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _step_size(delta: Tensor, delta_bias: Tensor | None, softplus: bool, acc) -> Tensor:
    delta = delta.to(acc)
    if delta_bias is not None:
        delta = delta + delta_bias.to(acc)[:, None]
    return F.softplus(delta) if softplus else delta


def _finish(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, dtype_in) -> Tensor:
    if D is not None:
        y = y + u * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(dtype_in)


def fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
    """(y, last_state, saved) with saved = [exp(delta A) | delta B u], (batch, D, 2L, N)."""
    acc = _acc(u)
    batch, dim, length = u.shape
    n = A.shape[1]
    B, C = as_groups(B.to(acc)), as_groups(C.to(acc))  # (batch, G, N, L), G the same for both
    groups = B.shape[1]
    dt = _step_size(delta, delta_bias, delta_softplus, acc)  # (batch, D, L)
    u_acc = u.to(acc)
    saved = u.new_empty(batch, dim, 2 * length, n, dtype=acc)
    deltaA, deltaB_u = saved[:, :, :length], saved[:, :, length:]
    # Written in place into the one buffer: the peak is the two tensors, no temporary of their size.
    torch.mul(dt[..., None], A.to(acc)[:, None, :], out=deltaA)
    deltaA.exp_()
    per_group = (batch, groups, dim // groups, length, 1)
    torch.mul((dt * u_acc).view(per_group), B.transpose(-1, -2)[:, :, None], out=deltaB_u.view(
        batch, groups, dim // groups, length, n))  # fmt: skip
    x = u.new_zeros(batch, dim, n, dtype=acc)
    y = u.new_empty(batch, dim, length, dtype=acc)
    x_g = x.view(batch, groups, dim // groups, n)
    for t in range(length - 1, -1, -1) if reverse else range(length):
        x.mul_(deltaA[:, :, t]).add_(deltaB_u[:, :, t])
        y[:, :, t] = (x_g * C[:, :, None, :, t]).sum(-1).view(batch, dim)
    return _finish(y, u_acc, D, z, u.dtype), x, saved


def bwd(grad_y, grad_last, saved, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
    """Gradients [du, ddelta, dA, dB, dC, dD, dz, ddelta_bias] (the recurrences in README.md).

    Naive too: it keeps every step's state h_{t-1} and adjoint g_t, two more (batch, D, L, N).
    """
    acc = _acc(u)
    batch, dim, length = u.shape
    n = A.shape[1]
    Bg, Cg = as_groups(B.to(acc)), as_groups(C.to(acc))
    groups = Bg.shape[1]
    per_group = (batch, groups, dim // groups, length, n)
    Bt, Ct = Bg.transpose(-1, -2)[:, :, None], Cg.transpose(-1, -2)[:, :, None]  # (b, G, 1, L, N)
    pre = delta.to(acc) + (0 if delta_bias is None else delta_bias.to(acc)[:, None])
    dt = F.softplus(pre) if delta_softplus else pre
    u_acc, A_acc = u.to(acc), A.to(acc)
    deltaA, deltaB_u = saved[:, :, :length], saved[:, :, length:]
    steps = list(range(length - 1, -1, -1) if reverse else range(length))

    h_prev = torch.empty_like(deltaA)  # h_{t-1}, the state before step t
    h = u.new_zeros(batch, dim, n, dtype=acc)
    for t in steps:
        h_prev[:, :, t] = h
        h = deltaA[:, :, t] * h + deltaB_u[:, :, t]
    ah = deltaA * h_prev  # a_t h_{t-1}
    h_all = (ah + deltaB_u).view(per_group)  # h_t

    gate = None if z is None else F.silu(z.to(acc))
    gy = grad_y.to(acc) if gate is None else grad_y.to(acc) * gate  # d loss / d y before the gate
    g_all = torch.empty_like(deltaA)  # g_t = d loss / d h_t
    carry = u.new_zeros(batch, dim, n, dtype=acc) if grad_last is None else grad_last.to(acc)
    gy_c = gy.view(batch, groups, dim // groups, length, 1) * Ct  # gy_t C_t, (b, G, D/G, L, N)
    gy_c = gy_c.view(batch, dim, length, n)
    for t in reversed(steps):
        g = gy_c[:, :, t] + carry
        g_all[:, :, t] = g
        carry = deltaA[:, :, t] * g

    g_grp = g_all.view(per_group)
    u_grp = u_acc.view(batch, groups, dim // groups, length, 1)
    dt_grp = dt.view(batch, groups, dim // groups, length, 1)
    ddt = (g_all * A_acc[:, None, :] * ah).sum(-1) + (g_grp * Bt * u_grp).sum(-1).view_as(dt)
    dA = (g_all * ah * dt[..., None]).sum((0, 2))
    du = (g_grp * Bt * dt_grp).sum(-1).view_as(u_acc)
    dB = (g_grp * (dt_grp * u_grp)).sum(2).transpose(-1, -2)  # (b, G, N, L)
    dC = (h_all * gy.view(batch, groups, dim // groups, length, 1)).sum(2).transpose(-1, -2)
    dD = dz = None
    if D is not None:
        du = du + gy * D.to(acc)[:, None]
        dD = (gy * u_acc).sum((0, 2))
    if z is not None:
        y_pre = (h_all * Ct).sum(-1).view_as(u_acc)
        if D is not None:
            y_pre = y_pre + u_acc * D.to(acc)[:, None]
        sig = torch.sigmoid(z.to(acc))
        dz = grad_y.to(acc) * y_pre * sig * (1 + z.to(acc) * (1 - sig))
    ddelta = ddt * torch.sigmoid(pre) if delta_softplus else ddt
    dbias = None if delta_bias is None else ddelta.sum((0, 2))
    if B.dim() == 3:
        dB = dB[:, 0]
    if C.dim() == 3:
        dC = dC[:, 0]
    grads = (du, ddelta, dA, dB, dC, dD, dz, dbias)
    like = (u, delta, A, B, C, D, z, delta_bias)
    return [None if g is None else g.to(t.dtype) for g, t in zip(grads, like, strict=True)]
