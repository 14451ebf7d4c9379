"""Sequential selective scan: the specification every faster backend is tested against.

Recurrence (mamba_ssm's `selective_scan_ref`, one step per token):

    delta = softplus(delta + delta_bias)            if delta_softplus
    h_t   = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t      h: (batch, D, N)
    y_t   = <h_t, C_t> + D * u_t
    y_t   = y_t * silu(z_t)                          if z is given

With `reverse=True` the same recurrence runs from the last token to the first.
"""

import torch
import torch.nn.functional as F


def as_groups(BC: torch.Tensor) -> torch.Tensor:
    """(batch, N, L) -> (batch, 1, N, L); grouped (batch, G, N, L) stays as it is."""
    return BC.unsqueeze(1) if BC.dim() == 3 else BC


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    reverse: bool = False,
    return_last_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Shapes as in `kernels.selective_scan`; computes in float32 (float64 if given float64)."""
    dtype_in = u.dtype
    acc = torch.float64 if u.dtype == torch.float64 else torch.float32
    batch, dim, length = u.shape
    u, delta, A = u.to(acc), delta.to(acc), A.to(acc)
    if delta_bias is not None:
        delta = delta + delta_bias.to(acc)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    # Channels viewed as (G, D // G) so each group's B_t and C_t broadcast without copies.
    B, C = as_groups(B.to(acc)), as_groups(C.to(acc))  # (batch, G, N, L)
    if B.shape[1] != C.shape[1]:  # different groupings: give every channel its own group
        B = B.repeat_interleave(dim // B.shape[1], dim=1)
        C = C.repeat_interleave(dim // C.shape[1], dim=1)
    groups = B.shape[1]
    u_g = u.reshape(batch, groups, dim // groups, length)
    delta_g = delta.reshape(batch, groups, dim // groups, length)
    A_g = A.reshape(groups, dim // groups, -1)

    h = u.new_zeros(batch, groups, dim // groups, A.shape[1])
    ys = [None] * length
    steps = range(length - 1, -1, -1) if reverse else range(length)
    for t in steps:
        dt = delta_g[..., t, None]  # (batch, G, D // G, 1)
        h = torch.exp(dt * A_g) * h + dt * B[:, :, None, :, t] * u_g[..., t, None]
        ys[t] = (h * C[:, :, None, :, t]).sum(-1).reshape(batch, dim)
    y = torch.stack(ys, dim=-1) if length else u.new_zeros(batch, dim, 0)
    h = h.reshape(batch, dim, -1)
    if D is not None:
        y = y + u * D.to(acc)[:, None]
    if z is not None:
        y = y * F.silu(z.to(acc))
    y = y.to(dtype_in)
    return (y, h) if return_last_state else y
