"""`torch.ops.kernels.selective_scan`: the custom op every backend runs behind.

Registered with a fake implementation (FakeTensorMode, meta tensors, torch.compile), an autograd
formula (the backward is a second op, so it too runs under FakeTensorMode) and a FLOP formula for
`torch.utils.flop_counter.FlopCounterMode`.

The op returns (y, last_state, saved): `saved` is what the backend keeps for its backward (the CPU
and Triton backends: the state at the start of every CHUNK-step chunk plus the final state,
(batch, D, ceil(L / CHUNK) + 1, N); the reference: nothing, (batch, D, 0, N)).
"""

import importlib

import torch
from torch.utils.flop_counter import register_flop_formula

from kernels.selective_scan.reference import selective_scan_ref

CHUNK = 64  # steps per chunk in the saved states; the CPU and Triton backends both use it
Tensor = torch.Tensor

# backend name -> modules with `fwd(...)` and `bwd(...)` (imported on first use: Triton is heavy)
_FWD = {"cpu": "kernels.selective_scan.cpu", "triton": "kernels.selective_scan.triton_fwd"}
_BWD = {"cpu": "kernels.selective_scan.cpu", "triton": "kernels.selective_scan.triton_bwd"}


def _state_dtype(u: Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _saved_len(length: int, backend: str) -> int:
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
