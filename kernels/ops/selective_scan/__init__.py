"""Selective scan (Mamba-1 S6): one public function, several backends behind it."""

import contextvars
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch

from kernels.ops.selective_scan import cpu
from kernels.ops.selective_scan.ops import selective_scan_op
from kernels.ops.selective_scan.reference import selective_scan_ref  # noqa: F401 (tests patch it)

Backend = Literal["auto", "reference", "cpu", "triton", "naive"]


def _same_groups(B: torch.Tensor, C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """B and C grouped alike (the fast kernels share one group index); autograd sums back."""
    if B.shape == C.shape:
        return B, C
    gb = 1 if B.dim() == 3 else B.shape[1]
    gc = 1 if C.dim() == 3 else C.shape[1]
    groups = math.lcm(gb, gc)

    def refine(t: torch.Tensor, g: int) -> torch.Tensor:
        t = t.unsqueeze(1) if t.dim() == 3 else t
        return t.repeat_interleave(groups // g, dim=1)

    return refine(B, gb), refine(C, gc)


def _through_op(backend: str) -> Callable:
    """An implementation with the signature of `selective_scan_ref` that runs the custom op."""

    def impl(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
             reverse=False, return_last_state=False, deterministic=False):  # fmt: skip
        if backend != "reference":
            B, C = _same_groups(B, C)
        y, last, _ = selective_scan_op(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend, deterministic
        )
        return (y, last) if return_last_state else y

    impl.__name__ = f"selective_scan_{backend}"
    return impl


# name -> implementation with the signature of `selective_scan_ref`. Every built-in backend runs
# behind `torch.ops.kernels.selective_scan`, so FLOP counters and FakeTensorMode see one op.
BACKENDS = {name: _through_op(name) for name in ("reference", "cpu", "triton", "naive")}

# What "auto" means inside `use_backend(...)`: a sweep picks the scan without the models knowing.
# A context variable, so each thread (and asyncio task) has its own; kernels.cross_scan reads it.
auto_override: contextvars.ContextVar[str] = contextvars.ContextVar(
    "selective_scan_auto_override", default="auto"
)


@contextmanager
def use_backend(backend: Backend) -> Iterator[None]:
    """Within this block, calls with backend="auto" use `backend` (e.g. "reference" for a sweep)."""
    resolve_backend(backend, torch.device("cpu"))  # validate the name now, not at first call
    token = auto_override.set(backend)
    try:
        yield
    finally:
        auto_override.reset(token)


def resolve_backend(backend: str, device: torch.device) -> str:
    """Map "auto" to the fastest registered backend for `device`; check explicit names."""
    if backend == "auto":
        backend = auto_override.get()
    if backend == "auto":
        if device.type == "cuda":
            return "triton"
        return "cpu" if device.type == "cpu" and cpu.available() else "reference"
    if backend not in BACKENDS:
        allowed = ", ".join(["auto", *BACKENDS])
        raise ValueError(f"unknown selective_scan backend {backend!r}; available: {allowed}")
    return backend


def check_shapes(u, delta, A, B, C, D, z, delta_bias) -> None:
    """Raise ValueError naming the first argument whose shape breaks the contract."""
    if u.dim() != 3:
        raise ValueError(f"u must be (batch, D, L), got shape {tuple(u.shape)}")
    batch, dim, length = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"delta must match u {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"A must be (D={dim}, N), got {tuple(A.shape)}")
    n = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.dim() == 3 and t.shape == (batch, n, length):
            continue
        if t.dim() == 4 and t.shape[0] == batch and t.shape[2:] == (n, length):
            if dim % t.shape[1] == 0:
                continue
            raise ValueError(f"{name} has {t.shape[1]} groups, which must divide D={dim}")
        raise ValueError(
            f"{name} must be (batch, N, L)={(batch, n, length)} or (batch, G, N, L), "
            f"got {tuple(t.shape)}"
        )
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and t.shape != (dim,):
            raise ValueError(f"{name} must be (D={dim},), got {tuple(t.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z must match u {tuple(u.shape)}, got {tuple(z.shape)}")


def selective_scan(
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
    backend: Backend = "auto",
    deterministic: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Selective scan with mamba_ssm's `selective_scan_fn` semantics.

    Args:
        u, delta: (batch, D, L) input and step size.
        A: (D, N) state matrix (negative for a stable scan).
        B, C: (batch, N, L), or (batch, G, N, L) with G dividing D; channel d uses group
            d // (D // G).
        D: (D,) skip; z: (batch, D, L) gate, output multiplied by silu(z); delta_bias: (D,).
        delta_softplus: apply softplus to delta + delta_bias.
        reverse: scan from the last token to the first (no flipped copies needed by the caller).
        return_last_state: also return the final state (batch, D, N) in float32/float64.
        backend: "auto" (fastest for the device), "reference", or a registered fast backend.
        deterministic: gradients bit-identical from run to run (the Triton backward then sums
            dB and dC in two stages instead of with atomics; other backends always are).

    Returns:
        y (batch, D, L) in u's dtype, and the last state when asked.
    """
    check_shapes(u, delta, A, B, C, D, z, delta_bias)
    impl = BACKENDS[resolve_backend(backend, u.device)]
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, return_last_state)
    return impl(*args, deterministic=deterministic) if deterministic else impl(*args)
