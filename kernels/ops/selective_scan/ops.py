"""`torch.ops.kernels.selective_scan`: the custom op every backend runs behind.

Registered with a fake implementation (FakeTensorMode, meta tensors, torch.compile), an autograd
formula (the backward is a second op, so it too runs under FakeTensorMode) and a FLOP formula for
`torch.utils.flop_counter.FlopCounterMode`.

The op returns (y, last_state, saved): `saved` is what the backend keeps for its backward (the CPU
and Triton backends: the state at the start of every CHUNK-step chunk plus the final state,
(batch, D, ceil(L / CHUNK) + 1, N); the reference: nothing, (batch, D, 0, N); the naive
backend: exp(delta A) and delta B u, (batch, D, 2L, N), the peak it holds).
"""

import importlib

import torch
from torch.utils.flop_counter import register_flop_formula

from kernels.ops.selective_scan.reference import selective_scan_ref
from kernels.workspace import register_workspace_formula

CHUNK = 64  # steps per chunk in the saved states; the CPU and Triton backends both use it
Tensor = torch.Tensor

# backend name -> modules with `fwd(...)` and `bwd(...)` (imported on first use: Triton is heavy)
_FWD = {"cpu": "kernels.ops.selective_scan.cpu", "triton": "kernels.ops.selective_scan.triton_fwd"}
_BWD = {"cpu": "kernels.ops.selective_scan.cpu", "triton": "kernels.ops.selective_scan.triton_bwd"}
_FWD["naive"] = _BWD["naive"] = "kernels.ops.selective_scan.naive"  # materialising (naive.py)


def _state_dtype(u: Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _saved_len(length: int, backend: str) -> int:
    if backend == "naive":  # exp(delta A) and delta B u, L steps each (naive.py)
        return 2 * length
    return 0 if backend == "reference" else -(-length // CHUNK) + 1


@torch.library.custom_op("kernels::selective_scan", mutates_args=())
def selective_scan_op(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    reverse: bool,
    backend: str,
    deterministic: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Shapes as in `kernels.selective_scan`; returns (y, last_state, saved), see the module doc."""
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
    if backend == "reference":
        y, last = selective_scan_ref(*args, return_last_state=True)
        saved = last.new_empty(u.shape[0], u.shape[1], 0, A.shape[1])
        return y, last.to(_state_dtype(u)), saved
    return importlib.import_module(_FWD[backend]).fwd(*args)


@selective_scan_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend, deterministic=False):
    batch, dim, length = u.shape
    acc = _state_dtype(u)
    last = u.new_empty(batch, dim, A.shape[1], dtype=acc)
    saved = u.new_empty(batch, dim, _saved_len(length, backend), A.shape[1], dtype=acc)
    return torch.empty_like(u, memory_format=torch.contiguous_format), last, saved


@torch.library.custom_op("kernels::selective_scan_bwd", mutates_args=())
def selective_scan_bwd_op(
    grad_y: Tensor,
    grad_last: Tensor | None,
    saved: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    reverse: bool,
    backend: str,
    deterministic: bool = False,
) -> list[Tensor]:
    """Gradients [du, ddelta, dA, dB, dC, dD, dz, ddelta_bias]; absent inputs get empty ones.

    `deterministic`: the Triton backward sums without atomics (the CPU one always does)."""
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
    extra = {"deterministic": True} if deterministic and backend == "triton" else {}
    grads = importlib.import_module(_BWD[backend]).bwd(grad_y, grad_last, saved, *args, **extra)
    return [u.new_empty(0) if g is None else g.contiguous() for g in grads]


@selective_scan_bwd_op.register_fake
def _(grad_y, grad_last, saved, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse,
      backend, deterministic=False):  # fmt: skip
    like = (u, delta, A, B, C, D, z, delta_bias)
    dense = torch.contiguous_format
    return [u.new_empty(0) if t is None else torch.empty_like(t, memory_format=dense) for t in like]


def _reference_bwd(grad_y, grad_last, u, delta, A, B, C, D, z, delta_bias, softplus, reverse):
    """Gradients of the reference by autograd through it (the reference is the specification)."""
    inputs = [t.detach().requires_grad_() if t is not None else None
              for t in (u, delta, A, B, C, D, z, delta_bias)]  # fmt: skip
    with torch.enable_grad():
        y, last = selective_scan_ref(*inputs, softplus, reverse, return_last_state=True)
        outs, grads = [y], [grad_y]
        if grad_last is not None:
            outs.append(last)
            grads.append(grad_last.to(last.dtype))
        live = [t for t in inputs if t is not None]
        found = iter(torch.autograd.grad(outs, live, grads, allow_unused=True))
    result = []
    for t in inputs:
        g = None if t is None else next(found)
        result.append(torch.zeros_like(t) if t is not None and g is None else g)
    return result


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend, deterministic = inputs
    ctx.flags = (delta_softplus, reverse, backend, deterministic)
    ctx.optional = (D is not None, z is not None, delta_bias is not None)
    ctx.save_for_backward(output[2], u, delta, A, B, C, D, z, delta_bias)


def _backward(ctx, grad_y, grad_last, _grad_saved):
    saved, u, delta, A, B, C, D, z, delta_bias = ctx.saved_tensors
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    if ctx.flags[2] == "reference":  # autograd through the specification itself
        grads = _reference_bwd(grad_y, grad_last, *inputs, *ctx.flags[:2])
    else:
        grads = selective_scan_bwd_op(grad_y.contiguous(), grad_last, saved, *inputs, *ctx.flags)
    has_d, has_z, has_bias = ctx.optional
    du, ddelta, dA, dB, dC, dD, dz, dbias = grads
    return (du, ddelta, dA, dB, dC, dD if has_d else None, dz if has_z else None,
            dbias if has_bias else None, None, None, None, None)  # fmt: skip


selective_scan_op.register_autograd(_backward, setup_context=_setup_context)


@register_flop_formula(torch.ops.kernels.selective_scan)
def _selective_scan_flops(u_shape, delta_shape, A_shape, B_shape, C_shape, D_shape, z_shape,
                          *args, out_shape=None, **kwargs) -> int:  # fmt: skip
    """9·B·L·D·N multiply-adds, plus B·D·L for the D skip and for the gate; two FLOPs each."""
    batch, dim, length = u_shape
    macs = 9 * batch * length * dim * A_shape[1]
    macs += batch * dim * length * ((D_shape is not None) + (z_shape is not None))
    return 2 * macs


@register_workspace_formula(torch.ops.kernels.selective_scan)
def _selective_scan_workspace(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse,
                              backend) -> int:  # fmt: skip
    """Bytes the forward allocates and frees inside the op, by backend (kernels/workspace.py)."""
    if backend == "reference":
        # selective_scan_ref: delta after bias/softplus, the per-step outputs it stacks, and the
        # y before and after the D skip and the gate (each batch·D·L in float32/float64).
        plane = u.numel() * _state_dtype(u).itemsize
        shifted = delta_softplus or delta_bias is not None
        return plane * (int(shifted) + 1 + 2 * int(D is not None or z is not None))
    formula = getattr(importlib.import_module(_FWD[backend]), "fwd_workspace_bytes", None)
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
    return 0 if formula is None else formula(*args)


@register_workspace_formula(torch.ops.kernels.selective_scan_bwd)
def _selective_scan_bwd_workspace(grad_y, grad_last, saved, u, delta, A, B, C, D, z, delta_bias,
                                  delta_softplus, reverse, backend) -> int:  # fmt: skip
    formula = getattr(importlib.import_module(_BWD[backend]), "bwd_workspace_bytes", None)
    if formula is None:
        return 0
    return formula(grad_y, grad_last, saved, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                   reverse)  # fmt: skip


@register_flop_formula(torch.ops.kernels.selective_scan_bwd)
def _selective_scan_bwd_flops(grad_y_shape, grad_last_shape, saved_shape, u_shape, delta_shape,
                              A_shape, B_shape, C_shape, D_shape, z_shape, delta_bias_shape,
                              delta_softplus, *args, out_shape=None, **kwargs) -> int:  # fmt: skip
    """The multiplications (multiply-adds count one) of the backward both fast backends run; exp,
    sigmoid and plain additions uncounted, as the forward's formula leaves out softplus and SiLU.

    Per step t, channel d and state n (a_t = exp(dt_t A), x_t = dt_t u_t B_t, gy_t the gradient
    at the scan's output, after the gate): redo the forward from the chunk-start states, dt A and
    a_t h_{t-1} + x_t (3); then the adjoint g_t = gy_t C_t + a_{t+1} g_{t+1} (2), dC_t += gy_t h_t,
    dB_t += g_t dt_t u_t, s_t = sum_n g_t B_t (for du and ddelta), q_t = g_t a_t h_{t-1} (2),
    ddelta_t += A q_t, dA += dt_t q_t (6); with a gate, also y_t = sum_n h_t C_t (1): 12 (+1).
    Per step and channel: dt u, du = dt s, ddelta += u s (3); through softplus (1); the D skip:
    dD, du (2); the gate: gy = g z sigmoid(z), dz = g (y + D u) SiLU'(z) (6, +1 with D).
    Unlike the forward's 9 per state (the published convention of mamba_ssm and VMamba, kept for
    comparable GMACs) this is the count of the algorithm itself.
    """
    batch, dim, length = u_shape
    has_d, has_z = D_shape is not None, z_shape is not None
    per_state = 12 + has_z
    per_channel = 3 + bool(delta_softplus) + 2 * has_d + has_z * (6 + has_d)
    return 2 * batch * dim * length * (A_shape[1] * per_state + per_channel)
