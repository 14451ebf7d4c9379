"""Inputs and comparisons shared by the kernel tests, the GPU check and the benchmark."""

import torch

import kernels
from kernels.ops.selective_scan.reference import selective_scan_ref

GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_scan_inputs(
    batch: int = 2,
    dim: int = 4,
    n_state: int = 3,
    length: int = 7,
    groups: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    extras: bool = True,
) -> dict[str, torch.Tensor | None]:
    """Random inputs in the models' ranges: A = -(1..N) (S4D-real), delta pre-softplus ~ N(-2, 1).

    B, C are (batch, N, L), or (batch, groups, N, L); D, z, delta_bias are None unless `extras`.
    """
    bc_shape = (batch, n_state, length) if groups is None else (batch, groups, n_state, length)

    def randn(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, dtype=torch.float32) * scale + shift).to(device, dtype)

    A = -torch.arange(1, n_state + 1, dtype=torch.float32).repeat(dim, 1)
    A = (A * (0.5 + torch.rand(dim, n_state))).to(device, dtype)
    x = dict(
        u=randn(batch, dim, length),
        delta=randn(batch, dim, length, shift=-2.0),
        A=A,
        B=randn(*bc_shape),
        C=randn(*bc_shape),
        D=randn(dim) if extras else None,
        z=randn(batch, dim, length) if extras else None,
        delta_bias=randn(dim, scale=0.5) if extras else None,
    )
    return x


def scan_with_grads(
    x: dict, backend: str, delta_softplus: bool = True, reverse: bool = False,
    grad_y: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:  # fmt: skip
    """(y, last, grads, grad_y) of `kernels.selective_scan` with `backend` on copies of x.

    grads maps every input given (not None) to the gradient of <y, grad_y>; grad_y is random
    unless given (then moved to y's device).
    """
    leaves = {k: v.detach().clone().requires_grad_() for k, v in x.items() if v is not None}
    args = {k: leaves.get(k) for k in x}
    y, last = kernels.selective_scan(**args, delta_softplus=delta_softplus, reverse=reverse,
                                     return_last_state=True, backend=backend)  # fmt: skip
    if grad_y is None:
        grad_y = torch.randn_like(y)
    grads = torch.autograd.grad(y, list(leaves.values()), grad_y.to(y.device))
    return y, last, dict(zip(leaves, grads, strict=True)), grad_y


def reference_with_grads(
    x: dict, grad_y: torch.Tensor, delta_softplus: bool = True, reverse: bool = False
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(y, last_state, grads) of the float64 sequential reference for loss = <y, grad_y>."""
    leaves = {k: v.detach().double().requires_grad_() for k, v in x.items() if v is not None}
    args = {k: leaves.get(k) for k in x}
    y, last = selective_scan_ref(
        **args, delta_softplus=delta_softplus, reverse=reverse, return_last_state=True
    )
    grads = torch.autograd.grad(y, list(leaves.values()), grad_y.double())
    return y, last, dict(zip(leaves, grads, strict=True))


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max(|want|, tiny): one number per tensor, scale-free."""
    got, want = got.double(), want.double()
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()


class ScanCall(torch.nn.Module):
    """One selective-scan call with the layouts a Vim layer passes, as a module whose forward
    ignores its input: memory measurements of models (tracker, OS) apply to the call alone.

    u is a contiguous (batch, D, L) copy; delta and z are transposed views of (batch, L, D)
    projections, as `dt_proj` and the `in_proj` chunk give them.
    """

    def __init__(self, batch: int, dim: int, n_state: int, length: int) -> None:
        super().__init__()
        self.register_buffer("xz", torch.randn(batch, length, 2 * dim))
        self.register_buffer("dt", torch.randn(batch, length, dim) - 2)
        self.register_buffer("A", -torch.arange(1, n_state + 1.0).repeat(dim, 1))
        self.register_buffer("BC", torch.randn(batch, 2, n_state, length))
        self.register_buffer("D", torch.ones(dim))
        self.register_buffer("bias", torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, z = self.xz.chunk(2, dim=-1)
        B, C = self.BC.unbind(1)
        return kernels.selective_scan(
            u.transpose(1, 2).contiguous(), self.dt.transpose(1, 2), self.A, B, C, D=self.D,
            z=z.transpose(1, 2), delta_bias=self.bias, delta_softplus=True,
        )  # fmt: skip
